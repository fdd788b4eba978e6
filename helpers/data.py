"""The course's COCO subset: prepare it, verify it, load it, split it, and mine category labels.

`python -m helpers.data prepare` puts the subset at `data/coco-subset/` from, in this order:
an existing valid copy, the folder named by COCO_SUBSET_DIR, the local mirror `../shared/coco-subset`,
or a download from the official COCO servers, each file from the first source that has it with its
committed md5 (`file_md5` in data/subset_images.csv, MIRROR_MD5 below). `python -m helpers.data verify`
checks every file's md5 and the image count against that list, and that every image decodes.
With COURSE_DATA=karpathy both commands work on full COCO 2014 with Karpathy's split instead
(`download.prepare_karpathy`, `verify_karpathy`, in data/coco-karpathy/; loaded by `KarpathyCoco`);
the subset stays the default.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from .config import PATHS, data_source
from .atomic import atomic_path, md5sum
from .download import (KARPATHY_FIX, SPLIT_FILE, DownloadError, KarpathyError, check_file_name, decodes,
                       download_subset, prepare_karpathy, read_karpathy_checksums, read_karpathy_split,
                       verify_karpathy)

IDS_CSV = PATHS.data / "subset_images.csv"   # committed: ids, checksums, has_instances, split
# md5 of the shared mirror's other files (computed from ../shared/coco-subset); images: `file_md5` in IDS_CSV
MIRROR_MD5 = {"manifest.csv": "b6f4c5e66c07687b6857f0a3b9dc97ec",
              "annotations/captions.json": "a711b170dfe56fcd2be971ded962e0a6",
              "annotations/instances.json": "43f40f564e5722ef0aa988e36409ffd2"}
DOWNLOAD_RECORD = "downloaded.md5"           # in a copy built by the download: the md5 of each file it wrote
N_TEST, N_VAL = 1000, 250                    # the 1K retrieval protocol; the rest trains
FIX = "run `python -m helpers.data prepare` (it copies the subset from ../shared/coco-subset, " \
      "the folder in COCO_SUBSET_DIR, or downloads it from the COCO servers)"


class SubsetError(RuntimeError):
    """The prepared subset is missing or damaged; the message says how to fix it."""


class UnsafeFileName(SubsetError, ValueError):
    """A file name in a list of files could leave its folder."""


# ---------------------------------------------------------------------------------- prepare / verify

def _safe(name: str, where: Path) -> str:
    """`name` if it is a plain file name; else UnsafeFileName naming `where`, the file that carries it."""
    try:
        return check_file_name(name)
    except ValueError as e:
        raise UnsafeFileName(f"{where}: {e}") from None


def _committed() -> dict[str, str]:
    """Relative path -> md5 of every file of the subset, from the committed id list and MIRROR_MD5."""
    ids = pd.read_csv(IDS_CSV, dtype=str)
    images = {"images/" + _safe(n, IDS_CSV): m for n, m in zip(ids["file_name"], ids["file_md5"])}
    return {**MIRROR_MD5, **images}


def _recorded(dest: Path, committed: dict[str, str]) -> dict[str, str] | None:
    """The md5s a download recorded in `dest` (None if none, or if they do not cover the committed images)."""
    try:
        lines = (dest / DOWNLOAD_RECORD).read_text().splitlines()
    except OSError:
        return None
    record = dict(reversed(line.split("  ", 1)) for line in lines if "  " in line)
    same_images = {r for r in record if r.startswith("images/")} == {r for r in committed if r.startswith("images/")}
    return record if same_images and set(MIRROR_MD5) <= set(record) else None


def _reference(dest: Path) -> dict[str, str]:
    """What every file of `dest` must hash to: the committed md5s, or those a download recorded there."""
    committed = _committed()
    return _recorded(dest, committed) or committed


def _names_in(path: Path) -> list[str]:
    """The file names a manifest (CSV) or an annotation file (COCO JSON) lists."""
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype=str).get("file_name", pd.Series(dtype=str)).tolist()
    return [im["file_name"] for im in _read_json(path).get("images", [])]


def _problem(path: Path, md5: str) -> str | None:
    """Why the file at `path` is not the one with `md5` (None if it is)."""
    if not path.is_file():
        return f"{path} is missing"
    actual = md5sum(path)
    if actual != md5:
        return f"{path} is damaged or truncated (md5 {actual}, expected {md5}; {path.stat().st_size} bytes)"
    return None


def _bad_files(dest: Path, reference: dict[str, str]) -> list[str]:
    """Relative paths in `reference` whose file in `dest` is missing or has another md5."""
    return [rel for rel, md5 in reference.items() if _problem(dest / rel, md5)]


def remove_temporary_files(dest: Path) -> list[Path]:
    """Delete the temporary files a killed write left in `dest` (atomic_path's `.<name>.*.tmp*`)."""
    leftovers = [p for sub in ["", "images", "annotations"] for p in (dest / sub).glob(".*.tmp*") if p.is_file()]
    for p in leftovers:
        p.unlink()
    return leftovers


def _sources(dest: Path) -> list[tuple[Path, str]]:
    """The mirrors prepare copies from, in order: COCO_SUBSET_DIR (rejected if it is not a folder), the local
    mirror beside the checkout (if there); never `dest` itself."""
    out = []
    env = os.environ.get("COCO_SUBSET_DIR")
    if env:
        if not Path(env).is_dir():
            raise SubsetError(f"COCO_SUBSET_DIR={env} is not a folder; set it to a copy of the subset (the folder "
                              "that holds manifest.csv, annotations/ and images/), or unset it to use "
                              "../shared/coco-subset or the download")
        out.append((Path(env), "COCO_SUBSET_DIR"))
    if PATHS.shared_mirror.is_dir():
        out.append((PATHS.shared_mirror, "local mirror"))
    return [(s, label) for s, label in out if s.resolve() != dest.resolve()]


def _copy_good(rel: str, md5: str, sources: list[tuple[Path, str]], dest: Path) -> tuple[str | None, list[str]]:
    """Copy `rel` from the first source whose file has `md5` (and, for a list of files, only safe names);
    returns the label of that source (None if none had it) and what was wrong with the others."""
    problems = []
    for source, label in sources:
        src = source / rel
        problem = _problem(src, md5)
        if problem is None and rel.endswith((".csv", ".json")):
            try:
                for name in _names_in(src):
                    _safe(name, src)
            except (SubsetError, ValueError) as e:     # an unsafe name, or a file that does not parse
                problem = str(e)
        if problem:
            problems.append(f"{label}: {problem}")
            continue
        with atomic_path(dest / rel) as tmp:
            shutil.copyfile(src, tmp)
        return label, problems
    return None, problems


def _download(dest: Path, bad: list[str], download_url: str | None, progress: bool) -> None:
    """Build `dest` by downloading (keeping the images that are right), then record the md5 of what it wrote."""
    for rel in bad:
        if rel.startswith("images/"):          # a damaged image could still decode: the download would keep it
            (dest / rel).unlink(missing_ok=True)
    download_subset(dest, IDS_CSV, **({"base_url": download_url} if download_url else {}), progress=progress)
    record = "".join(f"{md5sum(dest / rel)}  {rel}\n" for rel in _committed())
    with atomic_path(dest / DOWNLOAD_RECORD) as tmp:
        tmp.write_text(record)


def prepare(dest: Path | None = None, download_url: str | None = None, progress: bool = True) -> str:
    """Make `dest` (default data/coco-subset) a valid copy of the subset: every file whose md5 is not the
    committed one is taken from the next good source; returns where the files came from."""
    dest = Path(dest or PATHS.subset)
    reference = _reference(dest)               # checks every committed name before a byte is written
    sources = _sources(dest)
    remove_temporary_files(dest)
    bad = _bad_files(dest, reference)
    if not bad:
        return f"existing copy at {dest}"
    taken, problems, left = {}, {}, []
    for rel in bad:
        label, problems[rel] = _copy_good(rel, reference[rel], sources, dest)
        if label:
            taken.setdefault(label, []).append(rel)
        else:
            left.append(rel)
    for source, _ in sources:
        if not (dest / "SOURCES.md").is_file() and (source / "SOURCES.md").is_file():
            with atomic_path(dest / "SOURCES.md") as tmp:
                shutil.copyfile(source / "SOURCES.md", tmp)
    where = {label: source for source, label in sources}
    done = "; ".join(f"copied {sum(r.startswith('images/') for r in rels)} images and "
                     f"{sum(not r.startswith('images/') for r in rels)} other files from the {label} {where[label]}"
                     for label, rels in taken.items())
    if not left:
        return done
    try:
        _download(dest, left, download_url, progress)
    except (DownloadError, OSError, ValueError) as e:
        named = "; ".join(f"{rel} ({', '.join(problems[rel]) or 'no mirror found'})" for rel in left[:5])
        raise SubsetError(
            f"could not repair {len(left)} file(s) of {dest}: {named}{' ...' if len(left) > 5 else ''}; the "
            f"download failed too ({e}). Put good copies of those files in a mirror (or set COCO_SUBSET_DIR to "
            f"a good copy of the subset), or connect to the internet, then rerun `python -m helpers.data "
            f"prepare`; the {len(reference) - len(left)} good files are kept"
            + (f" ({done})" if done else "")) from None
    return (done + "; " if done else "") + \
        f"downloaded {len(left)} files from {download_url or 'the official COCO servers'}"


@dataclass
class VerifyReport:
    n_images: int
    bad: list[str]
    n_files: int = 0          # images + annotation files + manifest

    def __str__(self) -> str:
        if not self.bad:
            return f"OK: {self.n_images} images present, md5 as in the manifest, all decode"
        images = all(not b.startswith(("manifest", "annotations")) for b in self.bad)
        of = f"{self.n_images} images" if images else f"{self.n_files or self.n_images} files"
        return f"FAILED: {len(self.bad)} of {of} missing, changed or unreadable " \
               f"(first: {', '.join(self.bad[:5])}); {FIX}"


def verify(dest: Path | None = None) -> VerifyReport:
    """Check every file of the subset (images, annotation files, manifest) against the committed md5s and
    the image count against the committed id list; every image must decode."""
    dest = Path(dest or PATHS.subset)
    if not _is_subset(dest):
        raise SubsetError(f"COCO subset not found at {dest}; {FIX}")
    reference = _reference(dest)
    n_images = sum(rel.startswith("images/") for rel in reference)
    bad = []
    try:
        n_rows = len(pd.read_csv(dest / "manifest.csv", dtype=str)["file_name"])
    except (ValueError, KeyError, pd.errors.ParserError):
        n_rows = None
    for rel, md5 in reference.items():
        path = dest / rel
        name = rel.removeprefix("images/")
        if rel == "manifest.csv" and n_rows != n_images:
            bad.append(f"manifest.csv ({n_rows if n_rows is not None else 'no'} rows; the committed id list "
                       f"{IDS_CSV.name} has {n_images})")
        elif _problem(path, md5):
            bad.append(name if rel.startswith("images/") else f"{rel} (changed or truncated)")
        elif rel.startswith("images/") and not decodes(path):
            bad.append(name)
    return VerifyReport(n_images, bad, len(reference))


def _is_subset(folder: Path | None) -> bool:
    return folder is not None and (folder / "manifest.csv").is_file() and \
        (folder / "annotations" / "captions.json").is_file()


def _read_json(path: Path) -> dict:
    """A JSON file's content; a SubsetError naming the file and the fix if it does not parse."""
    try:
        return json.loads(Path(path).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SubsetError(f"{path} is not valid JSON ({e}): the file is damaged or truncated; {FIX}") from None


# ---------------------------------------------------------------------------------------- loading

def quiet_coco(annotation_file: Path):
    """pycocotools.COCO without its 'loading annotations... Done (t=...)' chatter; a SubsetError naming the
    file if it is not valid JSON."""
    from pycocotools.coco import COCO

    dataset = _read_json(annotation_file)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


class CocoSubset:
    """The prepared subset: pycocotools indexes over captions (and instances), images, splits, licences."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root or PATHS.subset)
        if not _is_subset(self.root):
            raise SubsetError(f"COCO subset not found at {self.root}; {FIX}")
        self.coco = quiet_coco(self.root / "annotations" / "captions.json")
        inst = self.root / "annotations" / "instances.json"
        self.instances = quiet_coco(inst) if inst.is_file() else None
        self.images = pd.DataFrame(self.coco.dataset["images"]).set_index("id").sort_index()
        for name in self.images.file_name:
            _safe(name, self.root / "annotations" / "captions.json")
        caps = pd.DataFrame(self.coco.dataset["annotations"]).rename(columns={"id": "caption_id"})
        orphans = caps[~caps.image_id.isin(self.images.index)]
        if len(orphans):
            raise SubsetError(f"captions.json has {len(orphans)} caption(s) for image ids that are not in its "
                              f"'images' list (first: caption {orphans.caption_id.iloc[0]} -> image "
                              f"{orphans.image_id.iloc[0]}); the annotation file is damaged: {FIX}")
        self.captions = caps[["caption_id", "image_id", "caption"]].sort_values(["image_id", "caption_id"]) \
            .reset_index(drop=True)
        missing = [n for n in self.images.file_name if not (self.root / "images" / n).is_file()]
        if missing:
            raise SubsetError(f"{len(missing)} image file(s) listed in captions.json are missing from "
                              f"{self.root / 'images'} (first: {missing[0]}); {FIX}")
        self.licenses = {lic["id"]: lic for lic in self.coco.dataset["licenses"]}
        self.image_ids = [int(i) for i in self.images.index]
        self._splits = {0: make_split(self.image_ids, self.instance_image_ids())}

    def instance_image_ids(self) -> list[int]:
        """Ids of the images that have official instance annotations (258 in this subset)."""
        return sorted(self.instances.getImgIds()) if self.instances is not None else []

    def image_path(self, image_id: int) -> Path:
        """Path of an image's file; file names that could leave the image folder are rejected."""
        return self.root / "images" / check_file_name(self.images.loc[image_id, "file_name"])

    def load_image(self, image_id: int) -> Image.Image:
        """The image as RGB (grayscale and CMYK JPEGs are converted); a clear error if unreadable."""
        path = self.image_path(image_id)
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except FileNotFoundError:
            raise SubsetError(f"image {image_id} is missing: {path}; {FIX}") from None
        except (OSError, UnidentifiedImageError) as e:
            raise SubsetError(f"image {image_id} at {path} is corrupt ({e}); {FIX}") from None

    def captions_of(self, image_id: int) -> list[str]:
        return self.captions.caption[self.captions.image_id == image_id].tolist()

    def split(self, order: int = 0) -> dict[str, list[int]]:
        """{'train', 'val', 'test'} -> sorted image ids of split `order` (0: the course's; `make_split_order`)."""
        if order not in self._splits:
            self._splits[order] = make_split_order(self.image_ids, self.instance_image_ids(), order)
        return self._splits[order]

    def split_ids(self, name: str, order: int = 0) -> list[int]:
        """Image ids of the 'train', 'val' or 'test' split (sorted); `order` > 0: of another split (`make_split_order`)."""
        split = self.split(order)
        if name not in split:
            raise ValueError(f"unknown split {name!r}; choose 'train', 'val' or 'test'")
        return split[name]

    def credit(self, image_id: int) -> str:
        """Attribution line for showing an image: Flickr source and licence."""
        row = self.images.loc[image_id]
        return f"COCO {image_id} · {self.licenses[row.license]['name']} · {row.flickr_url}"


def load_subset(root: Path | None = None) -> CocoSubset:
    """Load the prepared subset (data/coco-subset by default)."""
    return CocoSubset(root)


def make_split(image_ids: list[int], instance_ids: list[int], n_test: int = N_TEST, n_val: int = N_VAL) -> dict:
    """Deterministic split by image id: test = every instance-labelled image + the first others in
    sha1 order up to `n_test`; val = the next `n_val`; train = the rest. Independent of machine and order."""
    key = lambda i: hashlib.sha1(f"coco-subset-split:{i}".encode()).hexdigest()  # noqa: E731
    inst = set(instance_ids)
    rest = sorted((i for i in image_ids if i not in inst), key=key)
    n_fill = n_test - len(inst)
    test = set(inst) | set(rest[:n_fill])
    val = set(rest[n_fill:n_fill + n_val])
    train = set(image_ids) - test - val
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def make_split_order(image_ids: list[int], instance_ids: list[int], order: int = 0, n_test: int = N_TEST,
                     n_val: int = N_VAL) -> dict:
    """`make_split`'s rule in another sha1 order: the key of image i is salted, f"coco-subset-split-{order}:{i}",
    so test keeps every instance-labelled image and is filled from other images; val and train differ too.
    Order 0 is `make_split` itself (the course's split)."""
    if isinstance(order, bool) or not isinstance(order, int) or order < 0:
        raise ValueError(f"split order must be a whole number >= 0 (0: the course's split), got {order!r}")
    if order == 0:
        return make_split(image_ids, instance_ids, n_test, n_val)
    return _salted_split(image_ids, instance_ids, f"coco-subset-split-{order}", n_test, n_val)


def _salted_split(image_ids, instance_ids, salt: str, n_test: int, n_val: int) -> dict:
    """`make_split` with its key's salt "coco-subset-split" replaced by `salt` (notebook 01 shows `make_split`
    as it is, so the rule is written out again here; tests/test_splits.py holds the two equal)."""
    key = lambda i: hashlib.sha1(f"{salt}:{i}".encode()).hexdigest()  # noqa: E731
    inst = set(instance_ids)
    rest = sorted((i for i in image_ids if i not in inst), key=key)
    n_fill = n_test - len(inst)
    test = set(inst) | set(rest[:n_fill])
    val = set(rest[n_fill:n_fill + n_val])
    train = set(image_ids) - test - val
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


# --------------------------------------------------------------- full COCO with Karpathy's split

class KarpathyCoco:
    """Full COCO with Karpathy's split, read like a `data.CocoSubset` by the feature extraction
    (`fast.extraction.extract_image_features`, `pipeline.feature_cache`):

    - `image_ids`: (N,) cocoids, sorted; `images`: DataFrame by id (file_name, karpathy_split, split)
    - `image_path(id)`, `load_image(id)` -> RGB PIL image
    - `captions`: DataFrame (caption_id = Karpathy's sentid, image_id, caption = raw), by image then caption;
      every caption is kept (5 per image, a few images have 6 or 7); `captions_of(id)`
    - `split_ids('train' | 'val' | 'test')`: train = Karpathy's train + restval (113,287 images), val and
      test 5,000 each, in the file's order (so the 1K folds are the published ones)
    - `root/manifest.csv` holds each image's md5, which the feature cache keys on without rehashing.
    Full COCO carries no licence per image here: `credit` is not offered, so no figure shows these images.
    """

    def __init__(self, root: Path | None = None):
        self.root = Path(root or PATHS.karpathy)
        if not (self.root / SPLIT_FILE).is_file():
            raise KarpathyError(f"full COCO (Karpathy split) not found at {self.root}; {KARPATHY_FIX}")
        self.images, self.captions = read_karpathy_split(self.root / SPLIT_FILE)
        missing = [n for n in self.images.file_name if not (self.root / n).is_file()]
        if missing:
            raise KarpathyError(f"{len(missing)} image file(s) that {SPLIT_FILE} lists are missing from {self.root} "
                                f"(first: {missing[0]}); {KARPATHY_FIX}")
        self.image_ids = [int(i) for i in self.images.index]
        by_file = self.images.sort_values("file_order")     # Karpathy's order: the published 1K folds follow it
        self._split = {s: [int(i) for i in by_file.index[by_file.split == s]] for s in ("train", "val", "test")}

    def image_path(self, image_id: int) -> Path:
        """Path of an image's file: root/train2014/COCO_train2014_<id>.jpg (or val2014)."""
        folder, name = self.images.loc[image_id, "file_name"].split("/")
        return self.root / folder / check_file_name(name)

    def load_image(self, image_id: int) -> Image.Image:
        """The image as RGB (COCO has grayscale and CMYK JPEGs); a clear error if it is missing or unreadable."""
        path = self.image_path(image_id)
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except FileNotFoundError:
            raise KarpathyError(f"image {image_id} is missing: {path}; {KARPATHY_FIX}") from None
        except (OSError, UnidentifiedImageError) as e:
            raise KarpathyError(f"image {image_id} at {path} is corrupt ({e}); {KARPATHY_FIX}") from None

    def captions_of(self, image_id: int) -> list[str]:
        return self.captions.caption[self.captions.image_id == image_id].tolist()

    def split_ids(self, name: str) -> list[int]:
        """Image ids of the 'train' (Karpathy's train + restval), 'val' or 'test' split, in the order of Karpathy's
        file: the five 1K folds of the test split (`protocols.folds`: consecutive 1,000 images) are then the
        published ones."""
        if name not in self._split:
            raise ValueError(f"unknown split {name!r}; choose 'train', 'val' or 'test'")
        return self._split[name]


def load_karpathy(root: Path | None = None) -> KarpathyCoco:
    """Load the prepared full COCO (data/coco-karpathy by default)."""
    return KarpathyCoco(root)


def karpathy_command(args) -> int:
    """`COURSE_DATA=karpathy python -m helpers.data prepare | verify` (the arguments `data.main` parsed)."""
    try:
        if args.command == "prepare":
            pins = read_karpathy_checksums(args.checksums) if args.checksums else None
            done = prepare_karpathy(args.dest, args.download_url, pins)
            print(f"full COCO (Karpathy split) ready at {args.dest or PATHS.karpathy}: {done}")
            return 0
        report = verify_karpathy(args.dest, decode=args.decode, progress=True)
    except (KarpathyError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    print(report)
    return 0 if not report.bad else 1

# --------------------------------------------------------------------------- caption-mined labels

# Words (and two-word phrases) that name each COCO category in a caption. Plurals are added below.
SYNONYMS = {
    "person": "person people man men woman women boy girl child children kid guy lady player skier "
              "surfer skateboarder snowboarder rider baby toddler crowd someone pitcher batter catcher",
    "bicycle": "bicycle bike cyclist", "car": "car sedan taxi suv", "motorcycle": "motorcycle motorbike scooter",
    "airplane": "airplane plane jet aircraft airliner", "bus": "bus", "train": "train locomotive",
    "truck": "truck pickup", "boat": "boat ship sailboat kayak canoe yacht", "traffic light": "traffic light stoplight",
    "fire hydrant": "hydrant", "stop sign": "stop sign", "parking meter": "parking meter", "bench": "bench",
    "bird": "bird seagull pigeon duck goose parrot", "cat": "cat kitten kitty", "dog": "dog puppy",
    "horse": "horse pony", "sheep": "sheep lamb", "cow": "cow cattle calf bull", "elephant": "elephant",
    "bear": "bear", "zebra": "zebra", "giraffe": "giraffe", "backpack": "backpack",
    "umbrella": "umbrella parasol", "handbag": "handbag purse", "tie": "tie necktie", "suitcase": "suitcase luggage",
    "frisbee": "frisbee", "skis": "skis ski", "snowboard": "snowboard", "sports ball": "ball soccer football basketball",
    "kite": "kite", "baseball bat": "bat", "baseball glove": "glove mitt", "skateboard": "skateboard",
    "surfboard": "surfboard", "tennis racket": "racket racquet", "bottle": "bottle", "wine glass": "wine glass",
    "cup": "cup mug", "fork": "fork", "knife": "knife", "spoon": "spoon", "bowl": "bowl", "banana": "banana",
    "apple": "apple", "sandwich": "sandwich burger hamburger sub", "orange": "orange", "broccoli": "broccoli",
    "carrot": "carrot", "hot dog": "hot dog hotdog", "pizza": "pizza", "donut": "donut doughnut", "cake": "cake cupcake",
    "chair": "chair", "couch": "couch sofa", "potted plant": "potted plant houseplant", "bed": "bed",
    "dining table": "table", "toilet": "toilet", "tv": "tv television", "laptop": "laptop computer",
    "mouse": "mouse", "remote": "remote controller", "keyboard": "keyboard", "cell phone": "phone cellphone smartphone",
    "microwave": "microwave", "oven": "oven stove", "toaster": "toaster", "sink": "sink", "refrigerator": "refrigerator fridge",
    "book": "book", "clock": "clock", "vase": "vase", "scissors": "scissors", "teddy bear": "teddy",
    "hair drier": "hair dryer hairdryer", "toothbrush": "toothbrush",
}
NOT_AFTER = {"dog": "hot", "bear": "teddy"}   # "hot dog" is food, "teddy bear" a toy
TWO_WORD = {"traffic light", "stop sign", "parking meter", "wine glass", "hot dog", "potted plant", "hair dryer"}


def _plurals(word: str) -> set[str]:
    forms = {word, word + "s", word + "es"}
    if word.endswith("y"):
        forms.add(word[:-1] + "ies")
    if word.endswith("fe"):
        forms.add(word[:-2] + "ves")
    return forms


def _category_patterns() -> dict[str, re.Pattern]:
    """One regex per category that matches any of its words as whole words (with plurals)."""
    out = {}
    for cat, words in SYNONYMS.items():
        phrases = [p for p in TWO_WORD if p in words]
        singles = [w for w in words.split() if not any(w in p.split() for p in phrases)]
        forms = sorted({f for w in singles for f in _plurals(w)} |
                       {p.rsplit(" ", 1)[0] + " " + f for p in phrases for f in _plurals(p.rsplit(" ", 1)[1])})
        guard = f"(?<!{NOT_AFTER[cat]} )" if cat in NOT_AFTER else ""
        out[cat] = re.compile(guard + r"\b(?:" + "|".join(re.escape(f) for f in forms) + r")\b")
    return out


def mine_labels(captions: pd.DataFrame) -> pd.DataFrame:
    """Captions (image_id, caption) -> (N_img, 80) 0/1 DataFrame: the categories any caption names."""
    patterns = _category_patterns()
    text = captions.assign(caption=captions.caption.str.lower()).groupby("image_id").caption.agg(" | ".join)
    return pd.DataFrame({cat: text.str.contains(p).astype(int) for cat, p in patterns.items()})


def without_people(subset: CocoSubset, image_ids=None) -> list[int]:
    """Image ids, in order, whose captions name no person (mined labels): neutral examples to show in a
    classroom (no children, no identifiable faces as the subject)."""
    mined = mine_labels(subset.captions)
    ids = subset.image_ids if image_ids is None else [int(i) for i in image_ids]
    return [i for i in ids if i in mined.index and not mined.loc[i, "person"]]


def rows_without_people(subset: CocoSubset, image_ids) -> list[int]:
    """(N,) image ids (a FeatureSet's `image_ids`) -> the positions of those whose captions name no person."""
    ids = [int(i) for i in image_ids]
    keep = set(without_people(subset, ids))
    return [r for r, i in enumerate(ids) if i in keep]


def instance_labels(subset: CocoSubset) -> pd.DataFrame:
    """(N_inst_img, 80) 0/1 DataFrame of the official instance labels, for the 258 labelled images."""
    inst = subset.instances
    names = {c["id"]: c["name"] for c in inst.dataset["categories"]}
    rows = {i: {names[a["category_id"]] for a in inst.imgToAnns[i]} for i in subset.instance_image_ids()}
    return pd.DataFrame([[int(c in rows[i]) for c in SYNONYMS] for i in rows], index=list(rows), columns=list(SYNONYMS))


def label_quality(mined: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Precision and recall of mined labels against instance labels, per category and over all (micro)."""
    m, t = mined.loc[truth.index], truth
    tp, fp, fn = (m & t).sum(), (m & ~t.astype(bool)).sum(), (~m.astype(bool) & t).sum()
    per = pd.DataFrame({"images_with_category": t.sum(), "mined": m.sum(), "precision": tp / (tp + fp),
                        "recall": tp / (tp + fn)})
    per.loc["ALL (micro)"] = [t.values.sum(), m.values.sum(), tp.sum() / (tp.sum() + fp.sum()),
                              tp.sum() / (tp.sum() + fn.sum())]
    return per


# ------------------------------------------------------------------------------------ command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="put the subset at data/coco-subset")
    p.add_argument("--dest", type=Path)
    p.add_argument("--download-url", help="COCO server base URL (default: the official one)")
    p.add_argument("--checksums", type=Path, help="COURSE_DATA=karpathy only: a JSON table {file: {md5, bytes}} "
                   "that replaces the pinned one (download.KARPATHY_PINS)")
    v = sub.add_parser("verify", help="check every image against the manifest")
    v.add_argument("--dest", type=Path)
    v.add_argument("--decode", action="store_true", help="COURSE_DATA=karpathy only: also decode every image")
    args = parser.parse_args(argv)
    try:
        source = data_source()
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    if source == "karpathy":
        return karpathy_command(args)
    if getattr(args, "checksums", None) or getattr(args, "decode", False):
        print("--checksums and --decode are for full COCO: set COURSE_DATA=karpathy", file=sys.stderr)
        return 2
    if args.command == "prepare":
        try:
            print(f"COCO subset ready at {args.dest or PATHS.subset}: {prepare(args.dest, args.download_url)}")
        except SubsetError as e:
            print(e, file=sys.stderr)
            return 1
        return 0
    try:
        report = verify(args.dest)
    except SubsetError as e:
        print(e, file=sys.stderr)
        return 1
    print(report)
    return 0 if not report.bad else 1


if __name__ == "__main__":
    sys.exit(main())
