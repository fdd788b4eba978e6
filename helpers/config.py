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
    def cache(self) -> Path:
        return Path(os.environ.get("COURSE_CACHE_DIR", self.data / "cache"))

    @property
    def runs(self) -> Path:
        return Path(os.environ.get("COURSE_RUNS_DIR", self.root / "runs"))

    @property
    def results(self) -> Path:
        return Path(os.environ.get("COURSE_RESULTS_DIR", self.root / "results"))

    @property
    def shared_mirror(self) -> Path:
        """The local mirror of the subset that sits beside a checkout (and beside CI's)."""
        return self.root.parent / "shared" / "coco-subset"


PATHS = Paths()


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
