"""Download the course's COCO subset from the official COCO servers (resumable, md5-checked), and full
COCO 2014 with Karpathy's split (`prepare_karpathy`, for COURSE_DATA=karpathy).

`COURSE_DATA=karpathy python -m helpers.data prepare` fills `data/coco-karpathy/` (PATHS.karpathy):

    downloads/caption_datasets.zip      Karpathy's split file, as published (md5-pinned: KARPATHY_PINS)
    downloads/train2014.zip, val2014.zip COCO's image archives, as published (md5 and size pinned)
    dataset_coco.json                   the split: every image's cocoid, folder, file, split and captions
    train2014/COCO_train2014_*.jpg      the images the split lists, extracted from the archives
    val2014/COCO_val2014_*.jpg
    manifest.csv                        image_id, file_name, karpathy_split, split, file_bytes, file_md5
    PREPARED.json                       written last: the pins it was built from, the split file's md5

Downloads resume (`fetch`); a file whose size or md5 is not the pinned one is deleted and named. Members
are extracted one by one, atomically, after every name in the archive was checked; zip's CRC32 vouches
for each file's bytes, whose md5 goes into manifest.csv. `verify_karpathy` checks every image against it;
`data.KarpathyCoco` reads the result the way the feature extraction reads a `data.CocoSubset`.
"""
from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from .atomic import atomic_path, md5sum, write_json, write_text
from .config import PATHS

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


# ======================================================================== full COCO, Karpathy's split

# The published files (sources of each pin: data/README.md). `bytes` None: no public record of the size.
KARPATHY_FILES = {
    "caption_datasets.zip": "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip",
    "train2014.zip": "http://images.cocodataset.org/zips/train2014.zip",
    "val2014.zip": "http://images.cocodataset.org/zips/val2014.zip"}
KARPATHY_PINS = {"caption_datasets.zip": {"md5": "4fa8c08369d22fe16e41dc124bd1adc2", "bytes": None},
                 "train2014.zip": {"md5": "0da8c0bd3d6becc4dcb32757491aca88", "bytes": 13_510_573_713},
                 "val2014.zip": {"md5": "a3d79f5ed8d289b7a7554ce06a5782b3", "bytes": 6_645_013_297}}
SPLIT_FILE = "dataset_coco.json"                 # the member of caption_datasets.zip the course reads
KARPATHY_FOLDERS = ("train2014", "val2014")               # one per image archive: `<folder>.zip` holds `<folder>/*.jpg`
SPLIT_OF = {"train": "train", "restval": "train", "val": "val", "test": "test"}   # Karpathy's -> the course's
KARPATHY_RECORD = "PREPARED.json"
KARPATHY_FIX = "run `COURSE_DATA=karpathy python -m helpers.data prepare` (it re-extracts damaged or missing images " \
      "from the archives in downloads/, and downloads an archive that is missing)"


class KarpathyError(RuntimeError):
    """Full COCO is missing, damaged, or a download is not the published file; the message says what to do."""


class UnsafeMember(KarpathyError, ValueError):
    """A name in an archive or in the split file could leave its folder."""


# --------------------------------------------------------------------------------------- the split file

def karpathy_url(name: str, base_url: str | None = None) -> str:
    """Where `name` (a key of KARPATHY_FILES) is downloaded from: its published URL, or the same path on `base_url`."""
    return KARPATHY_FILES[name] if not base_url else base_url.rstrip("/") + urlsplit(KARPATHY_FILES[name]).path


def coco2014_name(folder: str, image_id: int) -> str:
    """COCO 2014's file name of an image: ('val2014', 42) -> 'COCO_val2014_000000000042.jpg'."""
    return f"COCO_{folder}_{image_id:012d}.jpg"


def read_karpathy_split(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Karpathy's dataset_coco.json -> images (N, indexed by cocoid: file_name 'train2014/COCO_...jpg',
    karpathy_split, split, file_order: the entry's place in the file) and captions (M: caption_id = sentid, image_id, caption = raw), both by id."""
    path = Path(path)
    try:
        d = json.loads(path.read_bytes())
        entries = d["images"]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise KarpathyError(f"{path} is not a readable Karpathy split file ({type(e).__name__}: {e}): it is "
                            f"damaged or truncated; {KARPATHY_FIX}") from None
    images, captions = [], []
    for k, im in enumerate(entries):
        try:
            folder, name, split, cocoid = im["filepath"], im["filename"], im["split"], int(im["cocoid"])
            sentences = [(int(s["sentid"]), s["raw"]) for s in im["sentences"]]
        except (KeyError, TypeError, ValueError) as e:
            raise KarpathyError(f"{path}: image entry {k} lacks {e} (each needs filepath, filename, split, "
                                "cocoid and sentences with sentid and raw); the file is damaged; "
                                f"{KARPATHY_FIX}") from None
        try:
            check_file_name(name)
        except ValueError as e:
            raise UnsafeMember(f"{path}: {e}") from None
        if folder not in KARPATHY_FOLDERS or split not in SPLIT_OF or not sentences:
            raise KarpathyError(f"{path}: image {cocoid} has filepath {folder!r}, split {split!r} and "
                                f"{len(sentences)} sentences; expected one of {list(KARPATHY_FOLDERS)}, one of "
                                f"{list(SPLIT_OF)} and at least one; the file is not Karpathy's COCO split")
        images.append({"id": cocoid, "file_name": f"{folder}/{name}", "karpathy_split": split,
                       "split": SPLIT_OF[split], "file_order": k})
        captions += [{"caption_id": sid, "image_id": cocoid, "caption": raw} for sid, raw in sentences]
    images = pd.DataFrame(images, columns=["id", "file_name", "karpathy_split", "split", "file_order"])
    captions = pd.DataFrame(captions, columns=["caption_id", "image_id", "caption"])
    for what, ids in (("cocoid", images.id), ("sentid", captions.caption_id)):
        if ids.duplicated().any():
            raise KarpathyError(f"{path}: {what} {ids[ids.duplicated()].iloc[0]} appears twice; the file is "
                                f"damaged; {KARPATHY_FIX}")
    return (images.set_index("id").sort_index(),
            captions.sort_values(["image_id", "caption_id"]).reset_index(drop=True))


# ------------------------------------------------------------------------------------------ archives

def member_name(info: zipfile.ZipInfo, folder: str | None, archive: Path) -> str | None:
    """The archive member's name if it is a plain file inside `folder/` (any plain name for folder None);
    None for the folder's own entry; UnsafeMember for anything else (.., absolute, backslash, links)."""
    name = info.filename
    parts = name.rstrip("/").split("/")
    link = (info.external_attr >> 16) & 0o170000 == 0o120000
    plain = not link and "\\" not in name and ":" not in name and not name.startswith("/") and \
        all(p not in ("", ".", "..") for p in parts)
    if folder is not None:                     # `folder/` itself, or `folder/<plain file name>`
        plain = plain and (parts == [folder] if info.is_dir() else len(parts) == 2 and parts[0] == folder)
    if not plain:
        raise UnsafeMember(f"{archive}: unsafe member name {name!r}{' (a symbolic link)' if link else ''}: members "
                           f"must be plain files in {folder + '/' if folder else 'the archive'}; the archive is not "
                           "the published one: delete it and rerun `COURSE_DATA=karpathy python -m helpers.data "
                           "prepare`")
    return None if info.is_dir() else name


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise KarpathyError(f"{path} is not a readable zip archive ({e}) although its md5 is the pinned one: "
                            "the checksum table does not describe a good archive; check --checksums") from None


def _hashes(path: Path) -> tuple[int, int, str]:
    """(bytes, crc32, md5) of a file, in one pass."""
    crc, md5 = 0, hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
            md5.update(chunk)
    return path.stat().st_size, crc, md5.hexdigest()


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, archive: Path) -> str:
    """Write one member to `target` atomically -> its md5; a KarpathyError if zip's CRC check fails."""
    md5 = hashlib.md5()
    try:
        with atomic_path(target) as tmp, zf.open(info) as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                md5.update(chunk)
                out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise KarpathyError(f"{archive}: member {info.filename} is damaged ({e}); delete {archive} and rerun "
                            "`COURSE_DATA=karpathy python -m helpers.data prepare` to download it again") from None
    return md5.hexdigest()


def extract_images(archive: Path, folder: str, wanted: set[str], dest: Path, redo: set[str] = frozenset(),
                   progress: bool = True) -> dict[str, str]:
    """Extract the members of `archive` named in `wanted` ('train2014/COCO_...jpg') into `dest` -> {name: md5}.

    Every member name is checked before a byte is written. A file already there is kept when its size and
    CRC32 are the member's (an interrupted extraction resumes), unless it is in `redo`."""
    with _open_zip(archive) as zf:
        members = [(m, name) for m in zf.infolist() if (name := member_name(m, folder, archive)) in wanted]
        done = {}
        for info, name in tqdm(members, desc=f"extract {folder}", unit="img", disable=not progress, leave=False):
            target = dest / name
            if name not in redo and target.is_file():
                size, crc, md5 = _hashes(target)
                if (size, crc) == (info.file_size, info.CRC):
                    done[name] = md5
                    continue
            done[name] = _extract_member(zf, info, target, archive)
    return done


def extract_split(archive: Path, dest: Path) -> str:
    """Write caption_datasets.zip's dataset_coco.json to `dest` (atomically, once it parses) -> its md5."""
    with _open_zip(archive) as zf:
        names = [n for m in zf.infolist() if (n := member_name(m, None, archive)) and
                 PurePosixPath(n).name == SPLIT_FILE]
        if len(names) != 1:
            raise KarpathyError(f"{archive} holds {len(names)} files named {SPLIT_FILE}; expected one: the "
                                "archive is not Karpathy's caption_datasets.zip; check --download-url")
        target = dest / SPLIT_FILE
        md5 = _extract_member(zf, zf.getinfo(names[0]), target, archive)
    try:
        read_karpathy_split(target)
    except KarpathyError:
        target.unlink()
        raise
    return md5


# ------------------------------------------------------------------------------------- prepare / verify

def check_karpathy_pins(pins: dict) -> dict:
    """`pins` ({file: {'md5', 'bytes'}} for every key of KARPATHY_FILES) if well formed; else a ValueError."""
    for name in KARPATHY_FILES:
        pin = pins.get(name) if isinstance(pins, dict) else None
        if not isinstance(pin, dict) or not re.fullmatch(r"[0-9a-f]{32}", str(pin.get("md5", ""))) or \
                not (pin.get("bytes") is None or isinstance(pin.get("bytes"), int)):
            raise ValueError(f"the checksum table has no valid entry for {name} ({pin!r}); each of "
                             f"{list(KARPATHY_FILES)} "
                             "needs {'md5': 32 hex digits, 'bytes': an integer or null}")
    return {name: {"md5": pins[name]["md5"], "bytes": pins[name].get("bytes")} for name in KARPATHY_FILES}


def read_karpathy_checksums(path: Path) -> dict:
    """A checksum table from a JSON file ({file: {'md5', 'bytes'}}), checked (`check_karpathy_pins`)."""
    try:
        return check_karpathy_pins(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read the checksum table {path} ({e}); pass a JSON file like the one "
                         "`helpers.tools.standin.build_standin` writes") from None


def download_pinned(name: str, url: str, downloads: Path, pin: dict, progress: bool = True) -> Path:
    """`downloads/name` from `url` (resumed, retried: `download.fetch`), then its size and md5 checked
    against `pin`; a file that is not the pinned one is deleted and the error names both md5s."""
    path = downloads / name
    try:
        fetch(url, path, progress=progress)
    except DownloadError as e:
        raise KarpathyError(str(e).replace("python -m helpers.data prepare",
                                           "COURSE_DATA=karpathy python -m helpers.data prepare")) from None
    size = path.stat().st_size
    problem = f"{size} bytes, the published file has {pin['bytes']}" if pin["bytes"] not in (None, size) else None
    if problem is None and (actual := md5sum(path)) != pin["md5"]:
        problem = f"md5 {actual}, expected {pin['md5']}; {size} bytes"
    if problem:
        path.unlink()
        raise KarpathyError(f"{url} gave a file that is not the pinned one ({problem}): damaged on the way or "
                            f"not the published file. It is deleted; rerun `COURSE_DATA=karpathy python -m "
                            f"helpers.data prepare` to download it again. If the same md5 comes back, the "
                            f"publisher's file changed: check it against another source (data/README.md) and "
                            f"pass a table with its md5 via --checksums")
    return path


def _karpathy_record(dest: Path) -> dict:
    try:
        return json.loads((dest / KARPATHY_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def read_karpathy_manifest(dest: Path) -> pd.DataFrame:
    """dest/manifest.csv (image_id, file_name, split, karpathy_split, file_bytes, file_md5); a KarpathyError
    naming the fix if it is missing or unreadable."""
    try:
        m = pd.read_csv(dest / "manifest.csv", dtype={"file_md5": str})
        return m[["image_id", "file_name", "split", "karpathy_split", "file_bytes", "file_md5"]]
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as e:
        raise KarpathyError(f"{dest / 'manifest.csv'} is missing or unreadable ({e}); {KARPATHY_FIX}") from None


def _bad_karpathy_images(dest: Path, manifest: pd.DataFrame, progress: bool = False, decode: bool = False) -> list[str]:
    """file_name of every manifest row whose file is missing, of another md5 (or, with decode, unreadable)."""
    bad = []
    for name, md5 in tqdm(zip(manifest.file_name, manifest.file_md5), total=len(manifest), desc="check images",
                          unit="img", disable=not progress, leave=False):
        path = dest / name
        if not path.is_file() or md5sum(path) != md5 or decode and not decodes(path):
            bad.append(name)
    return bad


def remove_karpathy_temporary_files(dest: Path) -> list[Path]:
    """Delete what a killed atomic write left in `dest` (atomic_path's `.<name>.*.tmp*`)."""
    leftovers = [p for sub in ("", *KARPATHY_FOLDERS) for p in (dest / sub).glob(".*.tmp*") if p.is_file()]
    for p in leftovers:
        p.unlink()
    return leftovers


def _check_karpathy_disk(dest: Path, pins: dict, names: list[str]) -> None:
    """Refuse to start when the disk under `dest` lacks room for what is still to download and extract."""
    downloads = dest / "downloads"
    need = 0
    for name in names:
        size = pins[name]["bytes"] or 0
        have = max((p.stat().st_size for p in (downloads / name, downloads / f"{name}.part") if p.is_file()),
                   default=0)
        need += size - have
        if name.removesuffix(".zip") in KARPATHY_FOLDERS:        # the extracted JPEGs take about what the archive does
            folder = dest / name.removesuffix(".zip")
            need += max(0, size - sum(p.stat().st_size for p in folder.glob("*.jpg")) if folder.is_dir() else size)
    root = next(p for p in [dest, *dest.parents] if p.exists())
    free = shutil.disk_usage(root).free
    if need > free:
        raise KarpathyError(f"{dest} needs about {need / 1e9:.1f} GB more disk for the download and extraction; "
                            f"{root} has {free / 1e9:.1f} GB free. Free some, or set COURSE_KARPATHY_DIR to a "
                            "folder on a bigger disk (or `--dest`), then rerun")


def prepare_karpathy(dest: Path | None = None, base_url: str | None = None, checksums: dict | None = None,
            progress: bool = True) -> str:
    """Make `dest` (default data/coco-karpathy) a full, checked copy: download what is missing (from the
    published URLs, or the same paths on `base_url`), check every file against `checksums` (default KARPATHY_PINS),
    extract the images the split lists; a good copy is left as it is. Returns what it did."""
    dest = Path(dest or PATHS.karpathy)
    pins = check_karpathy_pins(checksums if checksums is not None else KARPATHY_PINS)
    remove_karpathy_temporary_files(dest)
    record, redo = _karpathy_record(dest), None
    if record.get("checksums") == pins and (dest / "manifest.csv").is_file():
        manifest = read_karpathy_manifest(dest)
        split_ok = (dest / SPLIT_FILE).is_file() and md5sum(dest / SPLIT_FILE) == record.get(SPLIT_FILE)
        redo = set(_bad_karpathy_images(dest, manifest, progress)) if split_ok else None
        if redo == set():
            return f"existing copy at {dest}"
    needed = list(KARPATHY_FILES) if redo is None else [f"{n.split('/')[0]}.zip" for n in sorted(redo)]
    needed = list(dict.fromkeys(needed))
    _check_karpathy_disk(dest, pins, needed)
    zips = {name: download_pinned(name, karpathy_url(name, base_url), dest / "downloads", pins[name], progress)
            for name in needed}
    split_md5 = extract_split(zips["caption_datasets.zip"], dest) if redo is None else record[SPLIT_FILE]
    images, _ = read_karpathy_split(dest / SPLIT_FILE)
    md5s = {} if redo is None else dict(zip(manifest.file_name, manifest.file_md5))
    for folder in KARPATHY_FOLDERS:
        if f"{folder}.zip" in zips:
            wanted = {n for n in images.file_name if n.startswith(folder + "/")} if redo is None else \
                {n for n in redo if n.startswith(folder + "/")}
            md5s |= extract_images(zips[f"{folder}.zip"], folder, wanted, dest, redo or set(), progress)
    missing = [n for n in images.file_name if n not in md5s]
    if missing:
        raise KarpathyError(f"{SPLIT_FILE} lists {len(missing)} images that the archives do not hold (first: "
                            f"{missing[0]}): the split file and the image archives do not belong together; "
                            "check --download-url and --checksums")
    manifest = images.reset_index().rename(columns={"id": "image_id"}).assign(
        file_bytes=[(dest / n).stat().st_size for n in images.file_name], file_md5=[md5s[n] for n in images.file_name])
    with atomic_path(dest / "manifest.csv") as tmp:
        manifest.to_csv(tmp, index=False)
    write_json(dest / KARPATHY_RECORD, {"checksums": pins, SPLIT_FILE: split_md5, "n_images": len(manifest),
                               "source": base_url or "the published URLs (download.KARPATHY_FILES)",
                               "prepared": datetime.date.today().isoformat()}, indent=1)
    write_text(dest / "SOURCES.md", "# Full COCO 2014 with Karpathy's split\n\nBuilt by "
               f"`helpers.download.prepare_karpathy` from {', '.join(karpathy_url(n, base_url) for n in KARPATHY_FILES)}, "
               "each checked against its pinned md5 "
               "(`PREPARED.json`). Annotations and split: COCO Consortium (CC BY 4.0) and A. Karpathy; images "
               "keep their Flickr licences (see cocodataset.org).\n")
    if redo is None:
        return f"downloaded and checked {len(zips)} files, extracted {len(manifest)} images to {dest}"
    return f"re-extracted {len(redo)} damaged or missing images from {', '.join(zips)}"


@dataclass
class KarpathyReport:
    n_images: int
    bad: list[str]
    decoded: bool = False

    def __str__(self) -> str:
        if not self.bad:
            decoded = ", all decode" if self.decoded else ""
            return f"OK: {self.n_images} images present, md5 as in the manifest{decoded}"
        return f"FAILED: {len(self.bad)} of {self.n_images} images or files missing, changed or unreadable " \
               f"(first: {', '.join(self.bad[:5])}); {KARPATHY_FIX}"


def verify_karpathy(dest: Path | None = None, decode: bool = False, progress: bool = False) -> KarpathyReport:
    """Check the split file against the md5 prepare recorded, the manifest against the split, and every image
    against the manifest's md5 (with `decode`, also that it decodes: ~20 min more for 123k images)."""
    dest = Path(dest or PATHS.karpathy)
    record = _karpathy_record(dest)
    if not record or not (dest / "manifest.csv").is_file():
        raise KarpathyError(f"full COCO (Karpathy split) not found at {dest}; {KARPATHY_FIX}")
    manifest = read_karpathy_manifest(dest)
    bad = []
    if not (dest / SPLIT_FILE).is_file() or md5sum(dest / SPLIT_FILE) != record.get(SPLIT_FILE):
        bad.append(f"{SPLIT_FILE} (missing, changed or truncated)")
    elif len(images := read_karpathy_split(dest / SPLIT_FILE)[0]) != len(manifest) or \
            set(images.file_name) != set(manifest.file_name):
        bad.append(f"manifest.csv ({len(manifest)} rows; {SPLIT_FILE} lists {len(images)} images)")
    return KarpathyReport(len(manifest), bad + _bad_karpathy_images(dest, manifest, progress, decode), decode)
