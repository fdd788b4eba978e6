"""Tests for helpers.download against a local HTTP server with injected faults (offline, fast)."""
from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import data
from helpers.download import DownloadError, check_file_name, download_subset, downscale, fetch, save_jpeg


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class FakeServer:
    """In-memory files (path -> bytes) with Range support, per-path faults and a request log."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, set[str]] = {}  # "truncate_once", "corrupt_once", "always_corrupt", "ignore_range"
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def _take_fault(self, path: str, name: str) -> bool:
        with self.lock:
            faults = self.faults.get(path, set())
            if name in faults and name.endswith("_once"):
                faults.discard(name)
                return True
            return name in faults

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                with server.lock:
                    server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                if server._take_fault(self.path, "corrupt_once") or server._take_fault(self.path, "always_corrupt"):
                    body = body[:10] + bytes([body[10] ^ 0xFF]) + body[11:]
                start = 0
                if rng and not server._take_fault(self.path, "ignore_range"):
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if server._take_fault(self.path, "truncate_once"):
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        return Handler

    def add(self, path: str, data: bytes, *faults: str) -> str:
        self.files[path] = data
        self.faults[path] = set(faults)
        return self.url + path


@pytest.fixture
def server():
    srv = FakeServer()
    thread = threading.Thread(target=srv.httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


DATA = bytes(range(256)) * 400  # 102,400 bytes


def test_fetch_plain_with_md5(server, tmp_path):
    url = server.add("/a.bin", DATA)
    out = fetch(url, tmp_path / "a.bin", md5=md5(DATA), progress=False)
    assert out.read_bytes() == DATA
    assert not (tmp_path / "a.bin.part").exists()
    assert server.requests == [("/a.bin", None)]


def test_fetch_resumes_a_truncated_download_with_range(server, tmp_path):
    url = server.add("/a.bin", DATA, "truncate_once")
    out = fetch(url, tmp_path / "a.bin", md5=md5(DATA), progress=False)
    assert out.read_bytes() == DATA
    assert server.requests == [("/a.bin", None), ("/a.bin", f"bytes={len(DATA) // 2}-")]


def test_fetch_resumes_an_existing_part_file(server, tmp_path):
    url = server.add("/a.bin", DATA)
    (tmp_path / "a.bin.part").write_bytes(DATA[:1000])
    assert fetch(url, tmp_path / "a.bin", md5=md5(DATA), progress=False).read_bytes() == DATA
    assert server.requests == [("/a.bin", "bytes=1000-")]


def test_fetch_restarts_when_server_ignores_range(server, tmp_path):
    url = server.add("/a.bin", DATA, "truncate_once", "ignore_range")
    out = fetch(url, tmp_path / "a.bin", md5=md5(DATA), progress=False)
    assert out.read_bytes() == DATA
    assert [r for _, r in server.requests] == [None, f"bytes={len(DATA) // 2}-"]


def test_fetch_retries_after_a_corrupt_download(server, tmp_path):
    url = server.add("/a.bin", DATA, "corrupt_once")
    assert fetch(url, tmp_path / "a.bin", md5=md5(DATA), progress=False).read_bytes() == DATA
    assert server.requests == [("/a.bin", None), ("/a.bin", None)]  # the bad .part was restarted from zero


def test_fetch_always_corrupt_raises_and_leaves_no_file(server, tmp_path):
    url = server.add("/a.bin", DATA, "always_corrupt")
    with pytest.raises(DownloadError) as err:
        fetch(url, tmp_path / "a.bin", md5=md5(DATA), retries=3, progress=False)
    msg = str(err.value)
    assert url in msg and "md5" in msg and md5(DATA) in msg and "python -m helpers.data prepare" in msg
    assert len(server.requests) == 3
    assert list(tmp_path.iterdir()) == []


def test_fetch_404_raises_a_clear_error(server, tmp_path):
    with pytest.raises(DownloadError, match=r"HTTP 404.*base_url") as err:
        fetch(server.url + "/missing.bin", tmp_path / "m.bin", progress=False)
    assert server.url + "/missing.bin" in str(err.value)
    assert len(server.requests) == 1  # a missing file is not retried
    assert not (tmp_path / "m.bin").exists()


def test_fetch_unreachable_server_raises_after_retries(tmp_path):
    with pytest.raises(DownloadError, match="network error.*Check your internet connection"):
        fetch("http://127.0.0.1:9/x.bin", tmp_path / "x.bin", retries=2, timeout=2, progress=False)


def test_downscale_sizes_and_mode():
    assert downscale(Image.new("RGB", (640, 426))).size == (320, 213)
    assert downscale(Image.new("RGB", (586, 640))).size == (293, 320)
    small = downscale(Image.new("L", (200, 145)))
    assert (small.size, small.mode) == ((200, 145), "RGB")  # never enlarged


def test_file_names_cannot_escape_the_images_folder(tmp_path):
    assert check_file_name("000000000139.jpg") == "000000000139.jpg"
    for bad in ["../evil.jpg", "a/b.jpg", "a\\b.jpg", ".."]:
        with pytest.raises(ValueError, match="unsafe"):
            check_file_name(bad)
    ids = tmp_path / "ids.csv"
    pd.DataFrame([dict(image_id=1, file_name="../evil.jpg", coco_split="val2017", orig_md5="0", orig_bytes=1,
                       file_md5="0", has_instances=0, split="train")]).to_csv(ids, index=False)
    with pytest.raises(ValueError, match="evil"):
        download_subset(tmp_path / "subset", ids, base_url="http://127.0.0.1:9", progress=False)
    assert not (tmp_path / "subset").exists()


# --- end to end: a tiny fake COCO --------------------------------------------------------------

def jpeg_bytes(size: tuple[int, int], mode: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def make_fake_coco(server: FakeServer, tmp_path: Path) -> Path:
    """Three images (two val2017, one train2017), an annotations zip, and an ids CSV; returns the CSV."""
    specs = [(1, "val2017", (640, 480), "RGB", 1, "truncate_once"),
             (2, "val2017", (480, 640), "RGB", 0, "corrupt_once"),
             (3, "train2017", (500, 375), "L", 1, None)]
    images, ids = {"val2017": [], "train2017": []}, []
    for image_id, split, size, mode, has_inst, fault in specs:
        name, data = f"{image_id:012d}.jpg", jpeg_bytes(size, mode, image_id)
        server.add(f"/{split}/{name}", data, *([fault] if fault else []))
        images[split].append({"license": 1, "file_name": name,
                              "coco_url": f"http://images.cocodataset.org/{split}/{name}",
                              "height": size[1], "width": size[0], "date_captured": "2013-11-14 11:18:45",
                              "flickr_url": f"http://farm.example/{image_id}.jpg", "id": image_id})
        ids.append(dict(image_id=image_id, file_name=name, coco_split=split, orig_md5=md5(data), orig_bytes=len(data),
                        file_md5="unused", has_instances=has_inst, split="train"))
    images["val2017"].append({**images["val2017"][0], "id": 99, "file_name": "000000000099.jpg"})  # not in our subset
    info = {"description": "COCO 2017 Dataset", "url": "http://cocodataset.org", "version": "1.0", "year": 2017}
    licenses = [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1, "name": "BY-NC-SA"}]
    categories = [{"supercategory": "person", "id": 1, "name": "person"}]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for split, ims in images.items():
            caps = [{"image_id": im["id"], "id": 100 * im["id"] + k, "caption": f"caption {k} of {im['id']}"}
                    for im in ims for k in range(5)]
            inst = [{"segmentation": [[100.0, 50.0, 300.0, 50.0, 300.0, 150.0]], "area": 10000.0, "iscrowd": 0,
                     "image_id": im["id"], "bbox": [100.0, 50.0, 200.0, 100.0], "category_id": 1, "id": 10 * im["id"]}
                    for im in ims]
            inst.append({"segmentation": {"counts": [0, 5], "size": [480, 640]}, "area": 5.0, "iscrowd": 1,
                         "image_id": 1, "bbox": [0, 0, 5, 1], "category_id": 1, "id": 7})  # crowd: dropped
            base = {"info": info, "licenses": licenses, "images": ims}
            zf.writestr(f"annotations/captions_{split}.json", json.dumps({**base, "annotations": caps}))
            zf.writestr(f"annotations/instances_{split}.json",
                        json.dumps({**base, "annotations": inst, "categories": categories}))
    server.add("/annotations/annotations_trainval2017.zip", buf.getvalue())
    ids_csv = tmp_path / "subset_images.csv"
    pd.DataFrame(ids).to_csv(ids_csv, index=False)
    return ids_csv


def test_download_subset_end_to_end_and_resumable(server, tmp_path):
    ids_csv = make_fake_coco(server, tmp_path)
    dest = download_subset(tmp_path / "coco-subset", ids_csv, base_url=server.url, progress=False)

    files = sorted((dest / "images").iterdir())
    assert [f.name for f in files] == ["000000000001.jpg", "000000000002.jpg", "000000000003.jpg"]
    sizes = {}
    for f in files:
        with Image.open(f) as im:
            assert max(im.size) == 320 and im.mode == "RGB"
            sizes[f.name] = im.size
    assert sizes == {"000000000001.jpg": (320, 240), "000000000002.jpg": (240, 320), "000000000003.jpg": (320, 240)}
    assert [p for p, _ in server.requests].count("/val2017/000000000001.jpg") == 2  # truncated, then resumed
    assert [p for p, _ in server.requests].count("/val2017/000000000002.jpg") == 2  # corrupt, then retried

    caps = json.loads((dest / "annotations" / "captions.json").read_text())
    assert [im["id"] for im in caps["images"]] == [1, 2, 3]
    im3 = caps["images"][2]
    assert (im3["width"], im3["height"], im3["orig_width"], im3["orig_height"], im3["coco_split"]) == \
        (320, 240, 500, 375, "train2017")
    assert len(caps["annotations"]) == 15 and {a["image_id"] for a in caps["annotations"]} == {1, 2, 3}

    inst = json.loads((dest / "annotations" / "instances.json").read_text())
    assert [im["id"] for im in inst["images"]] == [1, 3]
    by_image = {a["image_id"]: a for a in inst["annotations"]}
    assert len(inst["annotations"]) == 2 and inst["categories"][0]["name"] == "person"  # crowd RLE dropped
    assert by_image[1]["bbox"] == [50.0, 25.0, 100.0, 50.0] and by_image[1]["area"] == 2500.0
    assert by_image[1]["segmentation"] == [[50.0, 25.0, 150.0, 25.0, 150.0, 75.0]]
    assert by_image[3]["bbox"] == [64.0, 32.0, 128.0, 64.0]  # 500 -> 320 px: factor 0.64

    manifest = pd.read_csv(dest / "manifest.csv")
    assert list(manifest.columns) == ["image_id", "file_name", "coco_split", "width", "height", "file_bytes",
                                      "file_md5", "orig_width", "orig_height", "orig_bytes", "orig_md5",
                                      "license_id", "flickr_url", "n_captions"]
    for row in manifest.itertuples():
        data = (dest / "images" / row.file_name).read_bytes()
        assert (row.file_md5, row.file_bytes, row.n_captions) == (md5(data), len(data), 5)
    assert "Downloaded from " + server.url in (dest / "SOURCES.md").read_text()
    assert not list(dest.rglob("*.tmp")) and not list(tmp_path.rglob("*.part"))

    server.requests.clear()
    download_subset(dest, ids_csv, base_url=server.url, progress=False)
    assert server.requests == []  # images and the zip are already there: nothing is downloaded again
    assert pd.read_csv(dest / "manifest.csv").equals(manifest)


def test_save_jpeg_is_atomic_and_quality_85(tmp_path):
    path = tmp_path / "x.jpg"
    save_jpeg(Image.new("RGB", (32, 16), (200, 10, 10)), path)
    with Image.open(path) as im:
        assert (im.format, im.size) == ("JPEG", (32, 16))
    assert [p.name for p in tmp_path.iterdir()] == ["x.jpg"]


def test_prepare_falls_back_to_the_download_and_checks_the_copy_against_what_it_recorded(server, tmp_path,
                                                                                          monkeypatch):
    ids_csv = make_fake_coco(server, tmp_path)
    monkeypatch.setattr(data, "IDS_CSV", ids_csv)
    monkeypatch.delenv("COCO_SUBSET_DIR", raising=False)
    monkeypatch.setattr(data.PATHS.__class__, "shared_mirror", property(lambda _: tmp_path / "no-mirror"))
    dest = tmp_path / "data" / "coco-subset"
    assert data.prepare(dest, download_url=server.url, progress=False) == f"downloaded 6 files from {server.url}"
    assert str(data.verify(dest)) == "OK: 3 images present, md5 as in the manifest, all decode"
    assert data.prepare(dest, download_url=server.url, progress=False) == f"existing copy at {dest}"
    captions = dest / "annotations" / "captions.json"
    captions.write_bytes(captions.read_bytes()[:50])
    assert data.verify(dest).bad == ["annotations/captions.json (changed or truncated)"]
    server.requests.clear()
    assert data.prepare(dest, download_url=server.url, progress=False) == f"downloaded 1 files from {server.url}"
    assert server.requests == [] and data.verify(dest).bad == []   # the zip was kept: no image downloaded again
