"""Full COCO with Karpathy's split (COURSE_DATA=karpathy: download.prepare_karpathy, verify_karpathy,
data.KarpathyCoco) end to end, offline: a stand-in built
from 30 subset images (helpers.tools.standin) is served on 127.0.0.1, prepared, verified and loaded; then one
fault at a time: a cut download, a partial file, a damaged or mis-pinned archive, an unsafe name, a missing image."""
import json
import shutil
import zipfile

import pytest
import torch
from torchvision import transforms

from helpers import config, data, download
from helpers.atomic import md5sum
from helpers.fast.extraction import ImageDataset, extract_image_features
from helpers.pipeline.feature_cache import image_md5s
from helpers.tools.standin import build_standin, serve, standin_path, write_zip

OFFLINE = "http://127.0.0.1:9"      # nothing listens there: a download would fail at once
N = 30


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    """(folder the stand-in lies in, its checksum table): 20 train (10 'train', 10 'restval'), 5 val, 5 test."""
    out = tmp_path_factory.mktemp("www")
    return out, build_standin(out, n_train=20, n_val=5, n_test=5)


@pytest.fixture(scope="module")
def prepared(www, tmp_path_factory):
    out, table = www
    dest = tmp_path_factory.mktemp("prepared") / "coco"
    log = []
    with serve(out, log=log) as url:
        message = download.prepare_karpathy(dest, base_url=url, checksums=table, progress=False)
    return dest, message, log


def snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def copy_of(www, tmp_path):
    """A copy of the stand-in's folder to damage, and a copy of its table."""
    out, table = www
    shutil.copytree(out, tmp_path / "www")
    return tmp_path / "www", json.loads(json.dumps(table))


def repin(folder, table, name):
    table[name] = {"md5": md5sum(standin_path(folder, name)), "bytes": standin_path(folder, name).stat().st_size}
    return table


# ------------------------------------------------------------------------------------------ the good path

def test_the_standin_is_prepared_verified_and_loaded_with_every_caption(prepared):
    dest, message, log = prepared
    assert message == f"downloaded and checked 3 files, extracted {N} images to {dest}"
    assert [status for _, status, _ in log] == [200, 200, 200]
    assert str(download.verify_karpathy(dest)) == f"OK: {N} images present, md5 as in the manifest"
    assert str(download.verify_karpathy(dest, decode=True)) == f"OK: {N} images present, md5 as in the manifest, all decode"
    k = data.load_karpathy(dest)
    assert len(k.image_ids) == N and k.image_ids == sorted(k.image_ids)
    assert {s: len(k.split_ids(s)) for s in ("train", "val", "test")} == {"train": 20, "val": 5, "test": 5}
    assert k.images.karpathy_split.value_counts().to_dict() == {"train": 10, "restval": 10, "val": 5, "test": 5}
    restval = k.images.index[k.images.karpathy_split == "restval"][0]
    assert k.image_path(restval) == dest / "val2014" / f"COCO_val2014_{restval:012d}.jpg"
    assert restval in k.split_ids("train")
    per_image = k.captions.groupby("image_id").size()
    assert set(per_image) == {5, 6} and (per_image == 6).sum() == 7     # the subset's 7 six-caption images kept
    split = json.loads((dest / "dataset_coco.json").read_text())
    sentences = {s["sentid"]: s["raw"] for im in split["images"] for s in im["sentences"]}
    assert dict(zip(k.captions.caption_id, k.captions.caption)) == sentences
    assert k.captions_of(restval) == [s["raw"] for im in split["images"] if im["cocoid"] == restval
                                      for s in im["sentences"]]
    assert k.load_image(k.image_ids[0]).mode == "RGB"
    with pytest.raises(ValueError, match="unknown split 'restval'; choose 'train', 'val' or 'test'"):
        k.split_ids("restval")


def test_the_standin_has_the_published_files_layout(www):
    out, table = www
    with zipfile.ZipFile(standin_path(out, "caption_datasets.zip")) as zf:
        assert zf.namelist() == ["dataset_coco.json", "dataset_flickr8k.json", "dataset_flickr30k.json"]
        split = json.loads(zf.read("dataset_coco.json"))
    assert split["dataset"] == "coco" and len(split["images"]) == N
    for k, im in enumerate(split["images"]):
        assert set(im) == {"filepath", "sentids", "filename", "imgid", "split", "sentences", "cocoid"}
        assert im["imgid"] == k and im["filename"] == f"COCO_{im['filepath']}_{im['cocoid']:012d}.jpg"
        assert im["filepath"] == ("train2014" if im["split"] == "train" else "val2014")
        assert im["sentids"] == [s["sentid"] for s in im["sentences"]]
        assert all(set(s) == {"tokens", "raw", "imgid", "sentid"} and s["imgid"] == k for s in im["sentences"])
    with zipfile.ZipFile(standin_path(out, "train2014.zip")) as zf:
        names = zf.namelist()
    assert names[0] == "train2014/" and len(names) == 11
    assert all(n.startswith("train2014/COCO_train2014_") and n.endswith(".jpg") for n in names[1:])
    assert json.loads((out / "checksums.json").read_text()) == table
    assert table["val2014.zip"] == {"md5": md5sum(out / "zips" / "val2014.zip"),
                                    "bytes": (out / "zips" / "val2014.zip").stat().st_size}


def test_a_second_prepare_changes_nothing_and_asks_the_server_nothing(prepared, www):
    dest = prepared[0]
    before, log = snapshot(dest), []
    with serve(www[0], log=log) as url:
        assert download.prepare_karpathy(dest, base_url=url, checksums=www[1], progress=False) == f"existing copy at {dest}"
    assert snapshot(dest) == before and log == []


def test_the_feature_extraction_reads_it_like_a_subset(prepared):
    k = data.load_karpathy(prepared[0])
    ids = k.split_ids("test")
    manifest = download.read_karpathy_manifest(prepared[0]).set_index("image_id")
    assert image_md5s(k, ids) == [manifest.file_md5[i] for i in ids]     # the cache key, without rehashing
    transform = transforms.Compose([transforms.Resize((8, 8)), transforms.ToTensor()])
    assert ImageDataset(k, ids, transform)[0].shape == (3, 8, 8)

    class Regions(torch.nn.Module):                                      # (B, 3, 8, 8) -> (B, 64, 3), (B, 3)
        def forward(self, x):
            r = x.flatten(2).transpose(1, 2)
            return r, r.mean(1)

    regions, pooled = extract_image_features(k, ids, Regions(), transform, device="cpu", graph=False,
                                             progress=False)
    assert regions.shape == (5, 64, 3) and pooled.shape == (5, 3)


def test_course_data_karpathy_makes_the_data_commands_use_it(www, tmp_path, monkeypatch, capsys):
    out, _ = www
    dest = tmp_path / "coco"
    assert config.data_source() == "subset"
    monkeypatch.setenv("COURSE_DATA", "karpathy")
    assert config.data_source() == "karpathy"
    with serve(out) as url:
        assert data.main(["prepare", "--dest", str(dest), "--download-url", url,
                          "--checksums", str(out / "checksums.json")]) == 0
    assert f"full COCO (Karpathy split) ready at {dest}: downloaded and checked 3 files" in capsys.readouterr().out
    assert data.main(["verify", "--dest", str(dest)]) == 0
    assert capsys.readouterr().out == f"OK: {N} images present, md5 as in the manifest\n"
    (dest / download.read_karpathy_manifest(dest).file_name.iloc[-1]).unlink()
    assert data.main(["verify", "--dest", str(dest)]) == 1
    assert "FAILED: 1 of 30" in capsys.readouterr().out
    monkeypatch.setenv("COURSE_DATA", "karpaty")
    assert data.main(["verify", "--dest", str(dest)]) == 2
    assert "COURSE_DATA='karpaty' is not a data source; choose one of ['subset', 'karpathy']" in capsys.readouterr().err
    monkeypatch.delenv("COURSE_DATA")
    assert data.main(["prepare", "--checksums", str(out / "checksums.json")]) == 2
    assert "--checksums and --decode are for full COCO: set COURSE_DATA=karpathy" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ resume

def test_a_download_cut_off_midway_resumes_where_it_stopped(www, tmp_path):
    out, table = www
    log, path = [], "/zips/train2014.zip"
    with serve(out, log=log, cuts={path: 1000}) as url:
        download.prepare_karpathy(tmp_path / "coco", base_url=url, checksums=table, progress=False)
    assert [(s, n) for p, s, n in log if p == path] == [(200, 1000), (206, table["train2014.zip"]["bytes"] - 1000)]
    assert download.verify_karpathy(tmp_path / "coco").bad == []


def test_a_partial_file_left_by_a_killed_run_is_resumed(www, tmp_path):
    out, table = www
    body = (out / "zips" / "val2014.zip").read_bytes()
    (tmp_path / "coco" / "downloads").mkdir(parents=True)
    (tmp_path / "coco" / "downloads" / "val2014.zip.part").write_bytes(body[:len(body) // 2])
    log = []
    with serve(out, log=log) as url:
        download.prepare_karpathy(tmp_path / "coco", base_url=url, checksums=table, progress=False)
    assert [(s, n) for p, s, n in log if p == "/zips/val2014.zip"] == [(206, len(body) - len(body) // 2)]
    assert download.verify_karpathy(tmp_path / "coco").bad == []


# --------------------------------------------------------------------------------- damaged or mis-pinned

@pytest.mark.parametrize("fault", ["same_size", "truncated", "wrong_pin"])
def test_an_archive_that_is_not_the_pinned_one_is_deleted_and_named(www, tmp_path, fault):
    folder, table = copy_of(www, tmp_path)
    archive = standin_path(folder, "train2014.zip")
    raw = bytearray(archive.read_bytes())
    if fault == "same_size":
        raw[len(raw) // 2:len(raw) // 2 + 64] = bytes(64)
    elif fault == "truncated":
        raw = raw[:len(raw) // 3]
    else:
        table["train2014.zip"]["md5"] = "0" * 32
    archive.write_bytes(bytes(raw))
    dest = tmp_path / "coco"
    problem = r"\d+ bytes, the published file has \d+" if fault == "truncated" else r"md5 [0-9a-f]{32}, expected"
    with serve(folder) as url, pytest.raises(download.KarpathyError, match=(
            rf"{url}/zips/train2014.zip gave a file that is not the pinned one \({problem}.*It is deleted; rerun "
            r"`COURSE_DATA=karpathy python -m helpers.data prepare`.*pass a table with its md5 via --checksums")):
        download.prepare_karpathy(dest, base_url=url, checksums=table, progress=False)
    assert not (dest / "downloads" / "train2014.zip").exists()
    assert not (dest / "train2014").exists() and not (dest / "manifest.csv").exists()
    with serve(www[0]) as url:                                       # the good file is served again: repaired
        assert download.prepare_karpathy(dest, base_url=url, checksums=www[1], progress=False).startswith("downloaded")
    assert download.verify_karpathy(dest).bad == []


def test_a_damaged_member_in_an_archive_with_a_matching_pin_is_named(www, tmp_path):
    folder, table = copy_of(www, tmp_path)
    archive = standin_path(folder, "val2014.zip")
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 64] = bytes(64)
    archive.write_bytes(bytes(raw))
    with serve(folder) as url, pytest.raises(download.KarpathyError, match=(
            rf"{tmp_path}/coco/downloads/val2014.zip: member val2014/COCO_val2014_\d{{12}}.jpg is damaged .*delete "
            r".*val2014.zip and rerun")):
        download.prepare_karpathy(tmp_path / "coco", base_url=url, checksums=repin(folder, table, "val2014.zip"), progress=False)
    assert not list((tmp_path / "coco").rglob(".*.tmp*"))              # the half-written member is gone


def test_a_disk_without_room_is_named_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setattr(download.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**12, 10**12 - 10**9, 10**9))
    with pytest.raises(download.KarpathyError, match=r"needs about 40.3 GB more disk .* has 1.0 GB free.*"
                                                      r"COURSE_KARPATHY_DIR"):
        download.prepare_karpathy(tmp_path / "coco", base_url=OFFLINE, progress=False)    # the published pins and sizes
    assert not (tmp_path / "coco").exists()


@pytest.mark.parametrize("table", [{}, {"caption_datasets.zip": {"md5": "abc"}},
                                   {n: {"md5": "0" * 32, "bytes": "13 GB"} for n in download.KARPATHY_FILES}])
def test_a_malformed_checksum_table_is_rejected(table):
    with pytest.raises(ValueError, match="the checksum table has no valid entry for .*needs"):
        download.check_karpathy_pins(table)


# ------------------------------------------------------------------------------------ names that leave

@pytest.mark.parametrize("name", ["train2014/../../evil.jpg", "../evil.jpg", "/tmp/evil.jpg", "train2014\\evil.jpg",
                                  "val2014/COCO_val2014_000000000001.jpg", "train2014/sub/evil.jpg", "link"])
def test_an_unsafe_member_is_rejected_before_anything_is_extracted(www, tmp_path, name):
    folder, table = copy_of(www, tmp_path)
    archive = standin_path(folder, "train2014.zip")
    with zipfile.ZipFile(archive) as zf:
        members = [(m.filename, None if m.is_dir() else zf.read(m)) for m in zf.infolist()]
    write_zip(archive, members + [("train2014/evil.jpg" if name == "link" else name, b"evil")])
    if name == "link":                                              # mark the member as a symbolic link
        with zipfile.ZipFile(archive, "a") as zf:
            info = zipfile.ZipInfo("train2014/COCO_train2014_link.jpg")
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "../../evil.jpg")
    with serve(folder) as url, pytest.raises(download.UnsafeMember, match=r"train2014.zip: unsafe member name .*"
                                                                           r"must be plain files in train2014/"):
        download.prepare_karpathy(tmp_path / "coco", base_url=url, checksums=repin(folder, table, "train2014.zip"),
                         progress=False)
    assert not [p for p in tmp_path.rglob("*evil*") if folder not in p.parents]
    assert not list((tmp_path / "coco" / "train2014").glob("*"))


def test_an_unsafe_file_name_in_the_split_file_is_rejected(www, tmp_path):
    folder, table = copy_of(www, tmp_path)
    archive = standin_path(folder, "caption_datasets.zip")
    with zipfile.ZipFile(archive) as zf:
        members = [(n, zf.read(n)) for n in zf.namelist()]
    split = json.loads(members[0][1])
    split["images"][3]["filename"] = "../../evil.jpg"
    write_zip(archive, [("dataset_coco.json", json.dumps(split).encode())] + members[1:])
    with serve(folder) as url, pytest.raises(download.UnsafeMember, match=r"dataset_coco.json: unsafe image file "
                                                                           r"name '../../evil.jpg'"):
        download.prepare_karpathy(tmp_path / "coco", base_url=url, checksums=repin(folder, table, "caption_datasets.zip"),
                         progress=False)
    assert not (tmp_path / "coco" / "dataset_coco.json").exists()
    assert not list((tmp_path / "coco").glob("*2014"))


# ------------------------------------------------------------------------------- damage in the prepared copy

def test_a_missing_or_damaged_image_is_reported_with_the_fix_and_prepare_puts_it_back(prepared, tmp_path):
    dest = tmp_path / "coco"
    shutil.copytree(prepared[0], dest)
    names = download.read_karpathy_manifest(dest).file_name.tolist()
    gone = next(n for n in names if n.startswith("train2014/"))
    damaged = next(n for n in reversed(names) if n.startswith("val2014/"))
    (dest / gone).unlink()
    raw = bytearray((dest / damaged).read_bytes())
    raw[len(raw) // 2:] = bytes(len(raw) - len(raw) // 2)
    (dest / damaged).write_bytes(bytes(raw))
    report = download.verify_karpathy(dest)
    assert sorted(report.bad) == sorted([gone, damaged])
    assert str(report).startswith(f"FAILED: 2 of {N} images or files missing, changed or unreadable (first: "
                                  f"{', '.join(report.bad)}); run `COURSE_DATA=karpathy python -m helpers.data prepare`")
    with pytest.raises(download.KarpathyError, match=rf"1 image file\(s\) .* missing .*\(first: {gone}\); run "
                                                      r"`COURSE_DATA=karpathy python -m helpers.data prepare`"):
        data.load_karpathy(dest)
    before = snapshot(dest)
    message = download.prepare_karpathy(dest, base_url=OFFLINE, checksums=json.loads((prepared[0] / "PREPARED.json")
                                                                            .read_text())["checksums"], progress=False)
    assert message == "re-extracted 2 damaged or missing images from train2014.zip, val2014.zip"
    assert download.verify_karpathy(dest).bad == []
    after = snapshot(dest)
    changed = {p.relative_to(dest).as_posix() for p in after if after[p] != before.get(p)}
    assert {gone, damaged} <= changed <= {gone, damaged, "manifest.csv", "PREPARED.json", "SOURCES.md"}
    assert (dest / "manifest.csv").read_bytes() == (prepared[0] / "manifest.csv").read_bytes()


def test_a_changed_split_file_and_a_missing_copy_are_named(prepared, tmp_path):
    with pytest.raises(download.KarpathyError, match=rf"not found at {tmp_path}; run `COURSE_DATA=karpathy"):
        download.verify_karpathy(tmp_path)
    dest = tmp_path / "coco"
    shutil.copytree(prepared[0], dest)
    split = dest / "dataset_coco.json"
    split.write_bytes(split.read_bytes()[:100])
    assert download.verify_karpathy(dest).bad == ["dataset_coco.json (missing, changed or truncated)"]
    with pytest.raises(download.KarpathyError, match=r"dataset_coco.json is not a readable Karpathy split file .*"
                                                      r"damaged or truncated; run `COURSE_DATA=karpathy"):
        data.load_karpathy(dest)
