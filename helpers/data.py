"""The course's COCO subset: prepare it, verify it, load it, split it, and mine category labels.

`python -m helpers.data prepare` puts the subset at `data/coco-subset/` from, in this order:
an existing valid copy, the folder named by COCO_SUBSET_DIR, the local mirror `../shared/coco-subset`,
or a download from the official COCO servers. `python -m helpers.data verify` checks every image.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from .config import PATHS
from .atomic import atomic_path, md5sum
from .download import check_file_name, download_subset

IDS_CSV = PATHS.data / "subset_images.csv"   # committed: ids, checksums, has_instances, split
N_TEST, N_VAL = 1000, 250                    # the 1K retrieval protocol; the rest trains
FIX = "run `python -m helpers.data prepare` (it copies the subset from ../shared/coco-subset, " \
      "the folder in COCO_SUBSET_DIR, or downloads it from the COCO servers)"


class SubsetError(RuntimeError):
    """The prepared subset is missing or damaged; the message says how to fix it."""


# ---------------------------------------------------------------------------------- prepare / verify

def _bad_files(folder: Path, manifest: pd.DataFrame, check_md5: bool = True, decode: bool = False) -> list[str]:
    """File names in `manifest` that are missing, have the wrong size/md5, or do not decode."""
    bad = []
    for row in manifest.itertuples():
        path = folder / "images" / check_file_name(row.file_name)
        if not path.is_file() or path.stat().st_size != row.file_bytes or \
                (check_md5 and md5sum(path) != row.file_md5):
            bad.append(row.file_name)
        elif decode:
            try:
                with Image.open(path) as im:
                    im.load()
            except (OSError, UnidentifiedImageError):
                bad.append(row.file_name)
    return bad


def _is_subset(folder: Path | None) -> bool:
    return folder is not None and (folder / "manifest.csv").is_file() and \
        (folder / "annotations" / "captions.json").is_file()


def _copy_from(source: Path, dest: Path) -> int:
    """Copy the subset from `source` into `dest`, only files that are missing or wrong; returns how many."""
    manifest = pd.read_csv(source / "manifest.csv")
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "annotations").mkdir(exist_ok=True)
    todo = _bad_files(dest, manifest) if (dest / "manifest.csv").is_file() else list(manifest.file_name)
    for name in todo:
        with atomic_path(dest / "images" / name) as tmp:
            shutil.copyfile(source / "images" / name, tmp)
    for rel in ["annotations/captions.json", "annotations/instances.json", "SOURCES.md", "manifest.csv"]:
        if (source / rel).is_file():
            with atomic_path(dest / rel) as tmp:
                shutil.copyfile(source / rel, tmp)
    return len(todo)


def prepare(dest: Path | None = None, download_url: str | None = None, progress: bool = True) -> str:
    """Make `dest` (default data/coco-subset) a valid copy of the subset; returns where it came from."""
    dest = Path(dest or PATHS.subset)
    if _is_subset(dest) and not _bad_files(dest, pd.read_csv(dest / "manifest.csv"), check_md5=False):
        return f"existing copy at {dest}"
    env = os.environ.get("COCO_SUBSET_DIR")
    for source, label in [(Path(env) if env else None, "COCO_SUBSET_DIR"), (PATHS.shared_mirror, "local mirror")]:
        if _is_subset(source) and source.resolve() != dest.resolve():
            n = _copy_from(source, dest)
            return f"copied {n} images from the {label} {source}"
    download_subset(dest, IDS_CSV, **({"base_url": download_url} if download_url else {}), progress=progress)
    return f"downloaded from {download_url or 'the official COCO servers'}"


@dataclass
class VerifyReport:
    n_images: int
    bad: list[str]

    def __str__(self) -> str:
        if not self.bad:
            return f"OK: {self.n_images} images present, md5 as in the manifest, all decode"
        return f"FAILED: {len(self.bad)} of {self.n_images} images missing, changed or unreadable " \
               f"(first: {', '.join(self.bad[:5])}); {FIX}"


def verify(dest: Path | None = None) -> VerifyReport:
    """Check every image of the subset against its manifest: present, md5, decodes."""
    dest = Path(dest or PATHS.subset)
    if not _is_subset(dest):
        raise SubsetError(f"COCO subset not found at {dest}; {FIX}")
    manifest = pd.read_csv(dest / "manifest.csv")
    return VerifyReport(len(manifest), _bad_files(dest, manifest, check_md5=True, decode=True))


# ---------------------------------------------------------------------------------------- loading

def quiet_coco(annotation_file: Path):
    """pycocotools.COCO without its 'loading annotations... Done (t=...)' chatter."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(annotation_file))


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
            check_file_name(name)
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
        self._split = make_split(self.image_ids, self.instance_image_ids())

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

    def split_ids(self, name: str) -> list[int]:
        """Image ids of the 'train', 'val' or 'test' split (sorted)."""
        if name not in self._split:
            raise ValueError(f"unknown split {name!r}; choose 'train', 'val' or 'test'")
        return self._split[name]

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
    v = sub.add_parser("verify", help="check every image against the manifest")
    v.add_argument("--dest", type=Path)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        print(f"COCO subset ready at {args.dest or PATHS.subset}: {prepare(args.dest, args.download_url)}")
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
