"""The data layer: prepare/verify, loading, bad input, split, mined labels."""
import json

import pandas as pd
import pytest
from PIL import Image

from helpers import data
from helpers.download import md5sum

CAPTIONS = {1: ["A dog on a sofa.", "A puppy sleeps on the couch."], 2: ["Two men ride bikes.", "People cycling."],
            3: ["A red stop sign.", "A stop sign by a road."]}


def make_subset(root, modes=("RGB", "L", "CMYK")):
    """A 3-image subset in the mirror's layout: an RGB, a grayscale and a CMYK JPEG."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns, rows = [], [], []
    for (i, caps), mode in zip(CAPTIONS.items(), modes):
        name = f"{i:012d}.jpg"
        Image.new(mode, (64, 48), {"RGB": (200, 10, 10), "L": 128, "CMYK": (0, 200, 200, 0)}[mode]).save(root / "images" / name)
        images.append({"id": i, "file_name": name, "license": 1, "width": 64, "height": 48,
                       "flickr_url": f"http://flickr/{i}", "coco_url": f"http://images.cocodataset.org/val2017/{name}"})
        anns += [{"id": 100 * i + k, "image_id": i, "caption": c} for k, c in enumerate(caps)]
        p = root / "images" / name
        rows.append({"image_id": i, "file_name": name, "file_bytes": p.stat().st_size, "file_md5": md5sum(p)})
    lic = [{"id": 1, "name": "Attribution License", "url": "http://creativecommons.org/licenses/by/2.0/"}]
    (root / "annotations" / "captions.json").write_text(json.dumps({"info": {}, "licenses": lic, "images": images, "annotations": anns}))
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def commit(monkeypatch, root, ids_csv):
    """Make `root`'s files the committed reference: an ids CSV of its images, MIRROR_MD5 of its other files;
    no local mirror beside the checkout."""
    manifest = pd.read_csv(root / "manifest.csv")
    manifest[["image_id", "file_name", "file_md5"]].assign(split="train").to_csv(ids_csv, index=False)
    monkeypatch.setattr(data, "IDS_CSV", ids_csv)
    other = ["manifest.csv", "annotations/captions.json"]
    monkeypatch.setattr(data, "MIRROR_MD5", {rel: md5sum(root / rel) for rel in other})
    monkeypatch.setattr(data.PATHS.__class__, "shared_mirror", property(lambda self: root.parent / "no-mirror"))


@pytest.fixture
def subset_dir(tmp_path, monkeypatch):
    root = make_subset(tmp_path / "subset")
    commit(monkeypatch, root, tmp_path / "ids.csv")
    return root


def test_missing_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(data.SubsetError, match=r"not found at .*python -m helpers.data prepare"):
        data.load_subset(tmp_path / "nowhere")


def test_grayscale_and_cmyk_are_converted_to_rgb(subset_dir):
    s = data.load_subset(subset_dir)
    assert [s.load_image(i).mode for i in (1, 2, 3)] == ["RGB"] * 3
    assert s.load_image(1).size == (64, 48)


def test_corrupt_image_gets_a_clear_error(subset_dir):
    (subset_dir / "images" / "000000000002.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    s = data.load_subset(subset_dir)
    with pytest.raises(data.SubsetError, match=r"image 2 .* is corrupt.*prepare"):
        s.load_image(2)


def test_missing_image_file_is_named(subset_dir):
    (subset_dir / "images" / "000000000003.jpg").unlink()
    with pytest.raises(data.SubsetError, match=r"1 image file\(s\).*missing.*000000000003.jpg.*prepare"):
        data.load_subset(subset_dir)


def test_annotation_pointing_at_missing_image_is_rejected(subset_dir):
    path = subset_dir / "annotations" / "captions.json"
    d = json.loads(path.read_text())
    d["annotations"].append({"id": 999, "image_id": 42, "caption": "orphan"})
    path.write_text(json.dumps(d))
    with pytest.raises(data.SubsetError, match=r"caption 999 -> image 42"):
        data.load_subset(subset_dir)


def test_file_name_leaving_the_image_folder_is_rejected(subset_dir):
    path = subset_dir / "annotations" / "captions.json"
    d = json.loads(path.read_text())
    d["images"][0]["file_name"] = "../../etc/passwd"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="unsafe image file name"):
        data.load_subset(subset_dir)


def test_verify_names_bad_files_and_the_fix(subset_dir):
    assert data.verify(subset_dir).bad == []
    with open(subset_dir / "images" / "000000000001.jpg", "r+b") as f:
        f.seek(20); f.write(b"\x00\x01\x02")
    report = data.verify(subset_dir)
    assert report.bad == ["000000000001.jpg"]
    assert "FAILED: 1 of 3" in str(report) and "python -m helpers.data prepare" in str(report)
    assert data.main(["verify", "--dest", str(subset_dir)]) == 1


def test_prepare_repairs_only_damaged_files_and_loses_nothing(subset_dir, tmp_path, monkeypatch):
    dest = tmp_path / "dest"
    monkeypatch.setenv("COCO_SUBSET_DIR", str(subset_dir))
    assert "copied 3 images" in data.prepare(dest)
    assert data.prepare(dest).startswith("existing copy")
    (dest / "images" / "000000000002.jpg").write_bytes(b"broken")
    extra = dest / "images" / "my_notes.txt"
    extra.write_text("keep me")
    before = (dest / "images" / "000000000001.jpg").stat().st_mtime_ns
    assert "copied 1 images" in data.prepare(dest)
    assert data.verify(dest).bad == [] and extra.read_text() == "keep me"
    assert (dest / "images" / "000000000001.jpg").stat().st_mtime_ns == before


def test_split_matches_the_committed_list():
    ids = pd.read_csv(data.IDS_CSV)
    split = data.make_split(ids.image_id.tolist(), ids.image_id[ids.has_instances == 1].tolist())
    for name in ["train", "val", "test"]:
        assert split[name] == sorted(ids.image_id[ids.split == name])
    assert (len(split["test"]), len(split["val"]), len(split["train"])) == (1000, 250, 1714)


def test_split_is_deterministic_and_keeps_labelled_images_in_test():
    ids = list(range(1, 101))
    a = data.make_split(ids, [5, 7], n_test=10, n_val=5)
    b = data.make_split(list(reversed(ids)), [7, 5], n_test=10, n_val=5)
    assert a == b and {5, 7} <= set(a["test"]) and len(a["test"]) == 10 and len(a["val"]) == 5
    assert set(a["train"]) | set(a["val"]) | set(a["test"]) == set(ids)


def test_mined_labels_use_synonyms_and_plurals():
    caps = pd.DataFrame({"image_id": [1, 1, 2, 3], "caption": ["A puppy on a sofa", "Dogs everywhere",
                                                              "Two men riding bicycles", "A hot dog and a stop sign"]})
    m = data.mine_labels(caps)
    assert m.loc[1, ["dog", "couch", "person"]].tolist() == [1, 1, 0]
    assert m.loc[2, ["person", "bicycle"]].tolist() == [1, 1]
    assert m.loc[3, ["hot dog", "stop sign"]].tolist() == [1, 1]
    assert m.loc[3, "dog"] == 0  # a hot dog is food, not a dog


def test_label_quality_hand_computed():
    cols = list(data.SYNONYMS)
    truth = pd.DataFrame(0, index=[1, 2], columns=cols)
    mined = truth.copy()
    truth.loc[1, "dog"] = truth.loc[2, "dog"] = truth.loc[2, "cat"] = 1
    mined.loc[1, "dog"] = mined.loc[1, "cat"] = 1
    q = data.label_quality(mined, truth)
    assert q.loc["dog", "precision"] == 1.0 and q.loc["dog", "recall"] == 0.5
    assert q.loc["ALL (micro)", "precision"] == 0.5 and q.loc["ALL (micro)", "recall"] == pytest.approx(1 / 3)


def test_real_subset_loads_with_expected_counts():
    if not (data.PATHS.subset / "manifest.csv").exists():
        pytest.skip("run `python -m helpers.data prepare` first (make test does)")
    s = data.load_subset()
    assert len(s.image_ids) == 2964 and len(s.captions) == 14827 and len(s.instance_image_ids()) == 258
    assert s.credit(s.image_ids[0]).startswith(f"COCO {s.image_ids[0]} · ")


def test_without_people_keeps_the_order_and_drops_images_whose_captions_name_a_person(subset_dir):
    subset = data.load_subset(subset_dir)
    assert data.without_people(subset) == [1, 3]                      # image 2: "Two men ride bikes."
    assert data.without_people(subset, [3, 2, 1]) == [3, 1]


def test_rows_without_people_are_positions(subset_dir):
    subset = data.load_subset(subset_dir)
    assert data.rows_without_people(subset, [2, 3, 1]) == [1, 2]


def test_command_line_prepare_names_a_mistyped_coco_subset_dir_without_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COCO_SUBSET_DIR", str(tmp_path / "typo"))
    assert data.main(["prepare", "--dest", str(tmp_path / "dest")]) == 1
    assert f"COCO_SUBSET_DIR={tmp_path / 'typo'} is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "dest").exists()
