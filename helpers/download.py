"""Download the course's COCO subset from the official COCO servers (resumable, md5-checked)."""
from __future__ import annotations

import datetime
import http.client
import json
import os
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from .atomic import atomic_path, md5sum

COCO_BASE_URL = "http://images.cocodataset.org"
ANNOTATIONS_ZIP = "annotations/annotations_trainval2017.zip"
MAX_SIDE = 320
JPEG_QUALITY = 85
MANIFEST_COLUMNS = ["image_id", "file_name", "coco_split", "width", "height", "file_bytes", "file_md5",
                    "orig_width", "orig_height", "orig_bytes", "orig_md5", "license_id", "flickr_url",
                    "n_captions"]


class DownloadError(RuntimeError):
    """A file could not be downloaded (or verified) after all retries."""


def _stream(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of `url` to `part` (HTTP Range resume); raise if the body ends early."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
        if resp.status != 206 or not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            offset = 0  # the server sent the whole file (Range ignored): start again from zero
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[:-5],
            leave=False, disable=not progress,
        ) as bar:
            while chunk := resp.read(1 << 16):
                f.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise ConnectionError(f"connection closed after {part.stat().st_size} of {total} bytes")


def fetch(url: str, dest: Path, md5: str | None = None, retries: int = 3, timeout: float = 30,
          progress: bool = True) -> Path:
    """Download `url` to `dest` via `dest`.part: resume with Range, retry, check md5, then rename."""
    dest, md5 = Path(dest), md5.lower() if md5 else None
    if dest.exists() and (md5 is None or md5sum(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    problem = ""
    for attempt in range(1, retries + 1):
        if attempt > 1:
            time.sleep(0.1 * (attempt - 1))
        try:
            _stream(url, part, timeout, progress)
        except urllib.error.HTTPError as e:
            problem = f"HTTP {e.code} {e.reason}"
            e.close()  # frees the socket the error response holds
            if e.code == 416:  # .part is already as long as the file (or longer): start again
                part.unlink(missing_ok=True)
            elif 400 <= e.code < 500 and e.code not in (408, 429):
                raise DownloadError(f"could not download {url}: the server answered {problem}; check "
                                    "the URL (base_url) or rerun `python -m helpers.data prepare` later") from e
            continue
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets, early close
            problem = f"network error: {getattr(e, 'reason', None) or e!r}"
            continue
        actual = md5sum(part) if md5 else None
        if actual != md5:
            problem = f"md5 mismatch: expected {md5}, got {actual} ({part.stat().st_size} bytes)"
            part.unlink()
            continue
        os.replace(part, dest)
        return dest
    kept = f"; the partial file {part} is kept, so the download resumes" if part.exists() else ""
    raise DownloadError(f"could not download {url} after {retries} tries: {problem}. Check your internet "
                        f"connection and rerun `python -m helpers.data prepare`{kept}.")


def scale_factor(width: int, height: int) -> float:
    """Factor that brings the longer side of a width x height image to at most 320 px (never enlarges)."""
    return min(1.0, MAX_SIDE / max(width, height))


def downscale(img: Image.Image) -> Image.Image:
    """RGB copy of `img` with its longer side at most 320 px (bicubic, aspect kept, sizes rounded)."""
    img = img.convert("RGB")
    scale = scale_factor(img.width, img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img if size == img.size else img.resize(size, Image.BICUBIC)


def _write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` (atomically: `atomic.atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def save_jpeg(img: Image.Image, path: Path) -> None:
    """Save `img` as JPEG quality 85 at `path`, atomically."""
    with atomic_path(path) as tmp:
        img.save(tmp, format="JPEG", quality=JPEG_QUALITY)


def check_file_name(name: str) -> str:
    """Return `name` if it is a plain file name; raise ValueError if it could escape its folder."""
    if not name or "/" in name or "\\" in name or ".." in name:
        raise ValueError(f"unsafe image file name {name!r}: it must be a plain name like "
                         "'000000000139.jpg'; check the ids CSV")
    return name


def decodes(path: Path) -> bool:
    """True if `path` exists and is a readable image."""
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except (OSError, ValueError):
        return False


def _scale_annotation(ann: dict, s: float) -> dict:
    """Instance annotation with bbox, area and polygons scaled by `s` (rounded to 0.01 px)."""
    return {**ann, "bbox": [round(v * s, 2) for v in ann["bbox"]], "area": round(ann["area"] * s * s, 2),
            "segmentation": [[round(v * s, 2) for v in poly] for poly in ann["segmentation"]]}


def _read_official(zip_path: Path, ids: pd.DataFrame) -> tuple[dict, dict]:
    """Official captions and instances (filtered to `ids`) from the annotations zip, per needed split."""
    captions = {"images": [], "annotations": []}
    instances = {"annotations": [], "categories": []}
    wanted, labelled = set(ids.image_id.tolist()), set(ids.image_id[ids.has_instances == 1].tolist())
    with zipfile.ZipFile(zip_path) as zf:
        for split in sorted(set(ids.coco_split)):
            d = json.loads(zf.read(f"annotations/captions_{split}.json"))
            captions["info"], captions["licenses"] = d["info"], d["licenses"]
            captions["images"] += [{**im, "coco_split": split} for im in d["images"] if im["id"] in wanted]
            captions["annotations"] += [a for a in d["annotations"] if a["image_id"] in wanted]
            if labelled & set(ids.image_id[ids.coco_split == split].tolist()):
                d = json.loads(zf.read(f"annotations/instances_{split}.json"))
                instances["categories"] = d["categories"]
                instances["annotations"] += [a for a in d["annotations"]
                                             if a["image_id"] in labelled and not a["iscrowd"]]
            del d  # the train2017 files are large: keep only the filtered entries
    return captions, instances


def download_subset(dest: Path, ids_csv: Path, base_url: str = COCO_BASE_URL, downloads: Path | None = None,
                    progress: bool = True) -> Path:
    """Download, verify and downscale the images in `ids_csv` and write the subset's files to `dest`."""
    dest, base_url = Path(dest), base_url.rstrip("/")
    downloads = Path(downloads) if downloads is not None else dest.parent / "downloads"
    ids = pd.read_csv(ids_csv, dtype={"orig_md5": str})
    ids.file_name.map(check_file_name)
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "annotations").mkdir(exist_ok=True)

    zip_path = fetch(f"{base_url}/{ANNOTATIONS_ZIP}", downloads / Path(ANNOTATIONS_ZIP).name, progress=progress)
    captions, instances = _read_official(zip_path, ids)
    official = {im["id"]: im for im in captions["images"]}
    if missing := set(ids.image_id.tolist()) - set(official):
        raise ValueError(f"{len(missing)} ids in {ids_csv} are not in the official COCO annotations, e.g. "
                         f"{sorted(missing)[:5]}; check that the ids CSV is the course's data/subset_images.csv")

    images, rows, scale = [], [], {}
    n_captions = pd.Series([a["image_id"] for a in captions["annotations"]]).value_counts()
    for r in tqdm(ids.sort_values("image_id").itertuples(), total=len(ids), desc="images", disable=not progress):
        im = official[r.image_id]
        if im["file_name"] != r.file_name:
            raise ValueError(f"image {r.image_id}: {ids_csv} says {r.file_name!r}, COCO says {im['file_name']!r}")
        out = dest / "images" / r.file_name
        if not decodes(out):
            url = base_url + urlsplit(im["coco_url"]).path
            original = fetch(url, downloads / "originals" / r.file_name, md5=r.orig_md5, progress=False)
            with Image.open(original) as img:
                save_jpeg(downscale(img), out)
        with Image.open(out) as small:
            width, height = small.size
        scale[r.image_id] = scale_factor(im["width"], im["height"])
        images.append({**im, "width": width, "height": height, "orig_width": im["width"],
                       "orig_height": im["height"]})
        rows.append({"image_id": r.image_id, "file_name": r.file_name, "coco_split": r.coco_split,
                     "width": width, "height": height, "file_bytes": out.stat().st_size, "file_md5": md5sum(out),
                     "orig_width": im["width"], "orig_height": im["height"], "orig_bytes": r.orig_bytes,
                     "orig_md5": r.orig_md5, "license_id": im["license"], "flickr_url": im["flickr_url"],
                     "n_captions": int(n_captions.get(r.image_id, 0))})

    info = {**captions["info"], "description": f"COCO subset downloaded from {base_url} | images downscaled to "
            "max side 320px (bicubic, JPEG q85); bbox/area/polygons scaled; RLE crowd masks dropped; "
            "orig_width/orig_height kept"}
    caption_anns = sorted(captions["annotations"], key=lambda a: (a["image_id"], a["id"]))
    labelled = set(ids.image_id[ids.has_instances == 1].tolist())
    _write_atomic(dest / "annotations" / "captions.json", json.dumps(
        {"info": info, "licenses": captions["licenses"], "images": images, "annotations": caption_anns}))
    _write_atomic(dest / "annotations" / "instances.json", json.dumps(
        {"info": info, "licenses": captions["licenses"], "images": [im for im in images if im["id"] in labelled],
         "annotations": [_scale_annotation(a, scale[a["image_id"]]) for a in instances["annotations"]],
         "categories": instances["categories"]}))
    _write_atomic(dest / "manifest.csv", pd.DataFrame(rows, columns=MANIFEST_COLUMNS).to_csv(index=False))
    _write_atomic(dest / "SOURCES.md", f"# COCO caption subset ({len(rows)} images, {len(caption_anns)} captions)\n\n"
                  f"Downloaded from {base_url} on {datetime.date.today().isoformat()} by `helpers.download`: "
                  f"the official `{ANNOTATIONS_ZIP}` and the original JPEGs (md5 checked against "
                  f"`{Path(ids_csv).name}`).\n"
                  "Images converted to RGB and downscaled to at most 320 px on the longer side (PIL bicubic, "
                  "JPEG quality 85); instance boxes, areas and polygons scaled by the same factor, crowd RLE "
                  "masks dropped. Annotations: COCO Consortium, CC BY 4.0; images keep their Flickr licences "
                  "(`license_id`, `flickr_url` in manifest.csv).\n")
    return dest
