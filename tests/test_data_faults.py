"""Fault injection for the data layer: a tiny mirror with one fault at a time, then prepare, verify and
load_subset. Each fault ends in a message naming the file and the fix, nothing is written outside the data
folder, good files are left as they were, and a second run repairs what it can."""
import json

import pandas as pd
import pytest
from PIL import Image

from helpers import data
from helpers.atomic import md5sum

NAMES = [f"{i:012d}.jpg" for i in (1, 2, 3)]
OFFLINE = "http://127.0.0.1:9"      # the download fallback fails at once (nothing listens on port 9)


def make_mirror(root):
    """A 3-image mirror (4x3-pixel JPEGs) with captions.json, instances.json and manifest.csv."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, rows = [], []
    for i, name in enumerate(NAMES, 1):
        Image.new("RGB", (4, 3), (60 * i, 10, 200 - 50 * i)).save(root / "images" / name, quality=95)
        p = root / "images" / name
        images.append({"id": i, "file_name": name, "license": 1, "width": 4, "height": 3, "flickr_url": f"f{i}"})
        rows.append({"image_id": i, "file_name": name, "file_bytes": p.stat().st_size, "file_md5": md5sum(p)})
    lic = [{"id": 1, "name": "Attribution License"}]
    caps = [{"id": 10 * i, "image_id": i, "caption": f"picture {i}"} for i in (1, 2, 3)]
    (root / "annotations" / "captions.json").write_text(
        json.dumps({"info": {}, "licenses": lic, "images": images, "annotations": caps}))
    (root / "annotations" / "instances.json").write_text(json.dumps(
        {"info": {}, "licenses": lic, "images": images[:1], "categories": [{"id": 1, "name": "person"}],
         "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4.0,
                          "iscrowd": 0, "segmentation": [[0, 0, 2, 0, 2, 2]]}]}))
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def commit_reference(monkeypatch, mirror, ids_csv):
    """Make `mirror` the committed reference: an ids CSV (columns in another order, one extra) and MIRROR_MD5."""
    m = pd.read_csv(mirror / "manifest.csv")
    pd.DataFrame({"split": "train", "file_md5": m.file_md5, "license_id": 1, "file_name": m.file_name,
                  "image_id": m.image_id, "has_instances": 0}).to_csv(ids_csv, index=False)
    monkeypatch.setattr(data, "IDS_CSV", ids_csv)
    other = ["manifest.csv", "annotations/captions.json", "annotations/instances.json"]
    monkeypatch.setattr(data, "MIRROR_MD5", {rel: md5sum(mirror / rel) for rel in other})


class Setup:
    def __init__(self, tmp_path, monkeypatch):
        self.tmp = tmp_path
        self.mirror = make_mirror(tmp_path / "src" / "a" / "mirror")   # its ../../../evil.jpg: src/evil.jpg
        self.second = tmp_path / "shared" / "coco-subset"          # the local mirror beside the checkout
        self.data = tmp_path / "data"                             # the data folder
        self.dest = self.data / "coco-subset"
        commit_reference(monkeypatch, self.mirror, tmp_path / "ids.csv")
        monkeypatch.setenv("COCO_SUBSET_DIR", str(self.mirror))
        monkeypatch.setattr(data.PATHS.__class__, "shared_mirror", property(lambda _: self.second))
        self.before = self.outside()

    def prepare(self):
        return data.prepare(self.dest, download_url=OFFLINE, progress=False)

    def outside(self):
        """(path, mtime, bytes) of every file outside the data folder."""
        return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in self.tmp.rglob("*")
                if p.is_file() and self.data not in p.parents}

    def snapshot(self):
        return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in self.dest.rglob("*") if p.is_file()}

    def assert_nothing_outside(self, changed=()):
        after = self.outside()
        assert {p for p in after if after[p] != self.before.get(p)} == set(changed)
        assert not (self.tmp / "evil.jpg").exists()               # where dest/images/../../../evil.jpg lands


@pytest.fixture
def s(tmp_path, monkeypatch):
    return Setup(tmp_path, monkeypatch)


def damage_same_size(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2:] = bytes(len(raw) - len(raw) // 2)
    path.write_bytes(bytes(raw))


def kept_except(before, after, repaired):
    """Every file of `before` but `repaired` is unchanged (mtime and bytes) in `after`."""
    return all(after.get(p) == v for p, v in before.items() if p.name not in repaired)


# ---------------------------------------------------------------------------- faults in the prepared copy

@pytest.mark.parametrize("fault", ["same_size", "truncated", "zero_bytes"])
def test_damaged_image_in_the_copy_is_replaced(s, fault):
    assert "copied 3 images and 3 other files from the COCO_SUBSET_DIR" in s.prepare()
    path = s.dest / "images" / NAMES[1]
    {"same_size": damage_same_size, "truncated": lambda p: p.write_bytes(p.read_bytes()[:40]),
     "zero_bytes": lambda p: p.write_bytes(b"")}[fault](path)
    assert data.verify(s.dest).bad == [NAMES[1]]
    before = s.snapshot()
    assert s.prepare().startswith("copied 1 images and 0 other files")
    assert str(data.verify(s.dest)) == "OK: 3 images present, md5 as in the manifest, all decode"
    assert kept_except(before, s.snapshot(), {NAMES[1]})
    assert s.prepare().startswith("existing copy")
    s.assert_nothing_outside()


@pytest.mark.parametrize("rel", ["annotations/captions.json", "annotations/instances.json"])
@pytest.mark.parametrize("cut", [0, 30])
def test_truncated_annotation_file_in_the_copy_is_named_and_replaced(s, rel, cut):
    s.prepare()
    path = s.dest / rel
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(data.SubsetError, match=rf"{path} is not valid JSON.*damaged or truncated.*prepare"):
        data.load_subset(s.dest)
    report = data.verify(s.dest)
    assert report.bad == [f"{rel} (changed or truncated)"] and "FAILED: 1 of 6 files" in str(report)
    before = s.snapshot()
    assert s.prepare().startswith("copied 0 images and 1 other files")
    assert data.verify(s.dest).bad == [] and len(data.load_subset(s.dest).image_ids) == 3
    assert kept_except(before, s.snapshot(), {path.name})


def test_cut_manifest_in_the_copy_is_counted_and_replaced(s):
    s.prepare()
    manifest = s.dest / "manifest.csv"
    manifest.write_text("\n".join(manifest.read_text().splitlines()[:2]) + "\n")   # 1 of 3 rows
    report = data.verify(s.dest)
    assert report.bad == ["manifest.csv (1 rows; the committed id list ids.csv has 3)"]
    assert str(report).startswith("FAILED: 1 of 6 files") and "python -m helpers.data prepare" in str(report)
    assert s.prepare().startswith("copied 0 images and 1 other files")
    assert data.verify(s.dest).bad == []


def test_temporary_file_of_a_killed_write_is_removed_on_start(s):
    s.prepare()
    before = s.snapshot()
    leftovers = [s.dest / "images" / f".{NAMES[0]}.k1ll3d.tmp.jpg", s.dest / ".manifest.csv.x9.tmp.csv"]
    for p in leftovers:
        p.write_bytes(b"half a file")
    assert s.prepare().startswith("existing copy")
    assert not any(p.exists() for p in leftovers) and s.snapshot() == before
    assert data.verify(s.dest).bad == []


# --------------------------------------------------------------------------------- faults in a source

@pytest.mark.parametrize("fault", ["missing", "corrupt"])
def test_bad_source_image_is_named_then_taken_from_the_next_source(s, fault):
    src = s.mirror / "images" / NAMES[2]
    src.unlink() if fault == "missing" else damage_same_size(src)
    with pytest.raises(data.SubsetError) as err:
        s.prepare()
    msg = str(err.value)
    word = "is missing" if fault == "missing" else "is damaged or truncated"
    assert f"could not repair 1 file(s) of {s.dest}: images/{NAMES[2]} (COCO_SUBSET_DIR: {src} {word}" in msg
    assert "download failed too" in msg and "set COCO_SUBSET_DIR to a good copy" in msg
    assert "rerun `python -m helpers.data prepare`; the 5 good files are kept" in msg
    assert not (s.dest / "images" / NAMES[2]).exists()           # a corrupt source file is not copied
    assert data.verify(s.dest).bad == [NAMES[2]]
    before = s.snapshot()
    make_mirror(s.second)                                          # a good local mirror appears
    s.before = s.outside()
    assert s.prepare() == f"copied 1 images and 0 other files from the local mirror {s.second}"
    assert data.verify(s.dest).bad == [] and kept_except(before, s.snapshot(), {NAMES[2]})
    s.assert_nothing_outside()


def test_corrupt_source_image_is_not_copied_again_and_again(s):
    damage_same_size(s.mirror / "images" / NAMES[0])
    for _ in range(2):
        with pytest.raises(data.SubsetError, match=rf"images/{NAMES[0]} \(COCO_SUBSET_DIR: .* is damaged"):
            s.prepare()
        assert data.verify(s.dest).bad == [NAMES[0]]


@pytest.mark.parametrize("rel", ["annotations/captions.json", "manifest.csv"])
def test_truncated_source_annotation_or_manifest_is_named(s, rel):
    src = s.mirror / rel
    good = src.read_bytes()
    src.write_bytes(good[:len(good) // 2])
    with pytest.raises(data.SubsetError, match=rf"{rel} \(COCO_SUBSET_DIR: {src} is damaged or truncated"):
        s.prepare()
    src.write_bytes(good)                                          # the source is mended: a second run repairs
    before = s.snapshot()
    assert s.prepare().startswith("copied 0 images and 1 other files")
    assert data.verify(s.dest).bad == [] and kept_except(before, s.snapshot(), {src.name})


def test_mistyped_coco_subset_dir_is_rejected(s, monkeypatch):
    monkeypatch.setenv("COCO_SUBSET_DIR", str(s.tmp / "mirorr"))
    with pytest.raises(data.SubsetError, match=r"COCO_SUBSET_DIR=.*mirorr is not a folder; set it to a copy"):
        s.prepare()
    assert not s.data.exists()


# ------------------------------------------------------------------------------- names that leave the folder

def test_unsafe_name_in_the_committed_id_list_is_rejected_before_anything_is_written(s):
    ids = pd.read_csv(data.IDS_CSV)
    ids.loc[1, "file_name"] = "../../../evil.jpg"
    ids.to_csv(data.IDS_CSV, index=False)
    (s.tmp / "src" / "evil.jpg").write_bytes((s.mirror / "images" / NAMES[0]).read_bytes())
    s.before = s.outside()
    with pytest.raises(data.UnsafeFileName, match=rf"{data.IDS_CSV}: unsafe image file name '../../../evil.jpg'"):
        s.prepare()
    with pytest.raises(data.UnsafeFileName):
        data.verify(s.mirror)
    assert not s.data.exists()
    s.assert_nothing_outside()


@pytest.mark.parametrize("rel", ["manifest.csv", "annotations/captions.json", "annotations/instances.json"])
def test_unsafe_name_in_a_source_file_is_rejected(s, monkeypatch, rel):
    """Even when its md5 is the committed one, a file listing `../../../evil.jpg` is not copied."""
    src = s.mirror / rel
    (s.tmp / "src" / "evil.jpg").write_bytes((s.mirror / "images" / NAMES[0]).read_bytes())
    if rel == "manifest.csv":
        m = pd.read_csv(src)
        m.loc[0, "file_name"] = "../../../evil.jpg"
        m.to_csv(src, index=False)
    else:
        d = json.loads(src.read_text())
        d["images"][0]["file_name"] = "../../../evil.jpg"
        src.write_text(json.dumps(d))
    monkeypatch.setitem(data.MIRROR_MD5, rel, md5sum(src))
    s.before = s.outside()
    with pytest.raises(data.SubsetError, match=rf"{rel} \(COCO_SUBSET_DIR: {src}: unsafe image file name"):
        s.prepare()
    assert not (s.dest / rel).exists()
    s.assert_nothing_outside()


def test_prepare_on_a_good_copy_changes_nothing_and_verify_prints_ok(s):
    s.prepare()
    before = s.snapshot()
    assert s.prepare() == f"existing copy at {s.dest}"
    assert s.snapshot() == before
    assert str(data.verify(s.dest)) == "OK: 3 images present, md5 as in the manifest, all decode"
