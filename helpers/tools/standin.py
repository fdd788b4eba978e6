"""A stand-in for full COCO, small enough for a 2-core CPU, and a local server for it: the whole
`COURSE_DATA=karpathy` path (download, resume, checksums, extraction, verify, loading) runs offline.

    table = build_standin(tmp / "www", n_train=20, n_val=5, n_test=5)   # from the course subset
    with serve(tmp / "www") as url:
        download.prepare_karpathy(tmp / "coco", base_url=url, checksums=table)

`build_standin` writes the published files' layout under `out_dir`, at the same paths as their URLs
(`people/karpathy/deepimagesent/caption_datasets.zip`, `zips/train2014.zip`, `zips/val2014.zip`), each
with the real one's structure: dataset_coco.json as Karpathy's (images with filepath, filename, cocoid,
split train/restval/val/test, sentids, sentences with raw, tokens, sentid, imgid), beside small
dataset_flickr8k.json and dataset_flickr30k.json; `train2014/` and `val2014/` members named
COCO_<folder>_<id:012d>.jpg. The images are the subset's (downscaled) JPEGs, the captions its real ones.
`checksums.json` beside them is the stand-in's table for `prepare_karpathy(..., checksums=...)` (`--checksums`).
"""
from __future__ import annotations

import functools
import json
import re
import threading
import zipfile
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from ..atomic import atomic_path, md5sum, write_json
from ..data import CocoSubset, load_subset
from ..download import KARPATHY_FILES, KARPATHY_FOLDERS, SPLIT_FILE, coco2014_name

ZIP_DATE = (2014, 8, 1, 0, 0, 0)      # fixed member times: the same subset gives byte-identical archives


def standin_path(out_dir: Path, name: str) -> Path:
    """Where `name` (a key of download.KARPATHY_FILES) lies under `out_dir`: its URL's path."""
    return Path(out_dir) / urlsplit(KARPATHY_FILES[name]).path.lstrip("/")


def standin_split(subset: CocoSubset, n_train: int, n_val: int, n_test: int) -> list[dict]:
    """Karpathy-format image entries for n_train + n_val + n_test subset images: those with 6 captions
    first, then by id; the first half of train is 'train' (in train2014), the rest 'restval' (val2014)."""
    n_caps = subset.captions.groupby("image_id").size()
    ids = sorted(subset.image_ids, key=lambda i: (-int(n_caps.get(i, 0)), i))[:n_train + n_val + n_test]
    if len(ids) < n_train + n_val + n_test:
        raise ValueError(f"the subset has {len(ids)} images; ask for at most that many (n_train + n_val + n_test)")
    splits = ["train"] * ((n_train + 1) // 2) + ["restval"] * (n_train // 2) + ["val"] * n_val + ["test"] * n_test
    entries = []
    for imgid, (cocoid, split) in enumerate(zip(ids, splits)):
        folder = "train2014" if split == "train" else "val2014"
        caps = subset.captions[subset.captions.image_id == cocoid]
        sentences = [{"tokens": re.findall(r"[a-z0-9]+", raw.lower()), "raw": raw, "imgid": imgid, "sentid": int(sid)}
                     for sid, raw in zip(caps.caption_id, caps.caption)]
        entries.append({"filepath": folder, "sentids": [s["sentid"] for s in sentences],
                        "filename": coco2014_name(folder, cocoid), "imgid": imgid, "split": split,
                        "sentences": sentences, "cocoid": int(cocoid)})
    return entries


def _member(name: str, is_dir: bool = False) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.external_attr = (0o40755 if is_dir else 0o100644) << 16
    return info


def write_zip(path: Path, members: list[tuple[str, bytes | None]]) -> None:
    """A zip at `path` (atomically) of (name, bytes) members, in order; bytes None is a folder entry."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for name, data in members:
            zf.writestr(_member(name, data is None), data or b"", compress_type=zipfile.ZIP_DEFLATED)


def build_standin(out_dir: Path, n_train: int = 20, n_val: int = 5, n_test: int = 5,
                  subset: CocoSubset | None = None) -> dict:
    """Write the stand-in's three files and checksums.json under `out_dir` -> the checksum table
    ({file: {'md5', 'bytes'}}) that `download.prepare_karpathy(checksums=...)` takes."""
    subset = subset if subset is not None else load_subset()
    entries = standin_split(subset, n_train, n_val, n_test)
    split = {"images": entries, "dataset": "coco"}
    flickr = {n: {"images": [], "dataset": n} for n in ("flickr8k", "flickr30k")}
    write_zip(standin_path(out_dir, "caption_datasets.zip"),
              [(SPLIT_FILE, json.dumps(split).encode())] +
              [(f"dataset_{n}.json", json.dumps(d).encode()) for n, d in flickr.items()])
    for folder in KARPATHY_FOLDERS:
        members = [(f"{folder}/", None)] + [
            (f"{folder}/{e['filename']}", subset.image_path(e["cocoid"]).read_bytes())
            for e in entries if e["filepath"] == folder]
        write_zip(standin_path(out_dir, f"{folder}.zip"), members)
    table = {name: {"md5": md5sum(standin_path(out_dir, name)), "bytes": standin_path(out_dir, name).stat().st_size}
             for name in KARPATHY_FILES}
    write_json(Path(out_dir) / "checksums.json", table, indent=1)
    return table


# ------------------------------------------------------------------------------------------ the server

class _RangeHandler(SimpleHTTPRequestHandler):
    """Files of a folder with `Range: bytes=N-` answered 206 (resume), a request log, and per-path cuts:
    the first GET of a path in `cuts` sends only that many bytes, then drops the connection."""

    def __init__(self, *args, log: list, cuts: dict, lock: threading.Lock, **kwargs):
        self.log, self.cuts, self.lock = log, cuts, lock
        super().__init__(*args, **kwargs)

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        size, start = path.stat().st_size, 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if m:
            start = int(m.group(1))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                self.log.append((self.path, 416, 0))
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        with self.lock:
            limit = self.cuts.pop(self.path, None)
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read() if limit is None else f.read(limit)
        self.wfile.write(body)
        self.wfile.flush()
        if limit is not None:
            self.close_connection = True
        self.log.append((self.path, 206 if m else 200, len(body)))


@contextmanager
def serve(folder: Path, log: list | None = None, cuts: dict[str, int] | None = None) -> Iterator[str]:
    """Serve `folder` over HTTP on 127.0.0.1 (an ephemeral port, in a thread) -> yields its base URL.

    Range requests resume; each GET is appended to `log` as (path, status, bytes sent); `cuts` maps a
    URL path ('/zips/train2014.zip') to the bytes its first GET sends before the connection drops."""
    handler = functools.partial(_RangeHandler, directory=str(folder), log=log if log is not None else [],
                                cuts=dict(cuts or {}), lock=threading.Lock())
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
