"""The whole pipeline without notebooks: features, every model with several seeds, evaluation, the table.

`python -m helpers reproduce [--seeds 3] [--budget cpu|gpu]` calls the same functions as notebooks
05 and 06; finished runs and their test rankings are reused from `runs/`, so a rerun takes seconds.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from . import metrics, models
from .config import PATHS
from .features import FeatureSet, load_course_features
from .train import TrainConfig, TrainResult, load_result, train

MODEL_NAMES = ("dual", "joint", "decoupled", "decoupled_plus")

# One switch: the CPU budget runs in minutes on 2 cores; the GPU budget trains longer on bigger batches.
BUDGETS = {
    "cpu": dict(epochs=6, batch_size=64, lr=2e-3),
    "gpu": dict(epochs=30, batch_size=256, lr=1e-3),
}


def train_config(model: str, budget: str = "cpu", seed: int = 0, **overrides) -> TrainConfig:
    """The course's training configuration for `model` under a budget ('cpu' or 'gpu')."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {sorted(BUDGETS)}")
    return TrainConfig(model=model, seed=seed, progress=False, **{**BUDGETS[budget], **overrides})


def run_dir(model: str, budget: str = "cpu", seed: int = 0) -> Path:
    return PATHS.runs / f"{model}-{budget}-seed{seed}"


def train_run(model: str, feats: dict[str, FeatureSet], budget: str = "cpu", seed: int = 0) -> TrainResult:
    """Train one model with one seed (or reuse the finished run in runs/)."""
    return train(train_config(model, budget, seed), feats["train"], feats["val"], run_dir(model, budget, seed))


def rank_on_test(model: str, feats: dict[str, FeatureSet], budget: str = "cpu", seed: int = 0,
               device: str = "cpu") -> dict:
    """Ranks of the best checkpoint on the 1K test set (cached beside the checkpoint) and the scoring time.

    -> {'img_rank': (N_img,) ndarray, 'cap_rank': (N_cap,) ndarray, 'seconds': float}
    """
    folder = run_dir(model, budget, seed)
    cache = folder / "test_ranks.npz"
    best = folder / "best.pt"
    if cache.is_file() and cache.stat().st_mtime >= best.stat().st_mtime:
        z = np.load(cache)
        return {"img_rank": z["img_rank"], "cap_rank": z["cap_rank"], "seconds": float(z["seconds"])}
    result = load_result(folder, device)
    start = time.perf_counter()
    scores = models.score_all(result.model, feats["test"], device=device)
    seconds = time.perf_counter() - start
    img_rank, cap_rank = metrics.ranks(scores, feats["test"].caption_image)
    tmp = folder / "test_ranks.tmp.npz"
    np.savez(tmp, img_rank=img_rank, cap_rank=cap_rank, seconds=seconds)
    tmp.replace(cache)
    return {"img_rank": img_rank, "cap_rank": cap_rank, "seconds": seconds}
