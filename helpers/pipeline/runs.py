"""The course's runs: train each one (or reuse it), rank its test set (or reuse that), for notebooks 05-08
and `python -m helpers reproduce`.

The rule a notebook relies on, in `train_run`: if the run's folder (`recipes.run_dir`) holds a finished
run, load it; else train it, resuming from its last epoch if it was interrupted. Training uses the fast
scores (`helpers.fast.scoring.FAST`, equal to `models.READABLE` up to rounding), one process or a torchrun
rank (`helpers.fast.distributed`); on a CPU, runs that are still missing train side by side first
(`helpers.fast.parallel`), which changes when they finish, not what they compute.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from torch import nn

from .. import metrics, models
from ..atomic import atomic_path
from ..checkpoints import load_checkpoint
from ..encoders import load_image_encoder
from ..fast import distributed, parallel
from ..fast.scoring import FAST
from ..features import FeatureSet, logits_features
from ..train import TrainConfig, TrainResult, finished, load_result, train
from .feature_cache import check_split, encoder_features, load_course_features
from .recipes import MODEL_NAMES, recipe_id, run_dir, seeds_for, train_config


def course_features() -> dict[str, FeatureSet]:
    """The course's features, read from data/cache (what a side-by-side worker loads once)."""
    return load_course_features(progress=False)


def imagenet_classifier() -> nn.Module:
    """The image backbone's own ImageNet head: (B, C) pooled -> (B, 1000) logits."""
    return load_image_encoder()[0].head.eval()


def features_for(cfg: TrainConfig, feats: dict[str, FeatureSet], order: int = 0) -> dict[str, FeatureSet]:
    """The features a run trains and is tested on: the course's, with the text side of `cfg.text_features`
    (`feature_cache.encoder_features`), and for `image_features="imagenet_logits"` every split's images as
    their 1000 ImageNet logits (the blog's image "features")."""
    feats = encoder_features(cfg.text_features, feats, order)
    if cfg.image_features == "regions":
        return feats
    classifier = imagenet_classifier()
    return {split: logits_features(fs, classifier) for split, fs in feats.items()}


def train_run(cfg: TrainConfig, feats: dict[str, FeatureSet], order: int = 0) -> TrainResult:
    """The run `cfg` defines, on `feats` (the course's splits, or with `order` > 0 those of another split of
    the subset, `load_course_features(order=...)`): trained, resumed or reused from its folder."""
    check_split(feats["train"], order)
    data = features_for(cfg, feats, order)
    with distributed.process(cfg.device) as process:
        return train(cfg, data["train"], data["val"], run_dir(cfg, order), scoring=FAST, process=process)


def stopped_by(best_epoch: int, epochs: int, cfg: TrainConfig) -> str:
    """'patience' when `patience` epochs passed without a better validation (converged by the course's rule),
    else 'epoch cap' (the run ran out of epochs still within `patience` of its best: it may not have converged)."""
    return "patience" if cfg.patience and epochs - best_epoch >= cfg.patience else "epoch cap"


def curve_convergence(cfg: TrainConfig, history: pd.DataFrame) -> dict:
    """A run's per-epoch history (columns epoch, rsum) -> how it converged: its stopping epoch, best epoch and
    best validation rSum, the validation change over its last three epochs (last minus three epochs before;
    NaN under four epochs) and what stopped it (`stopped_by`)."""
    rsum = history.rsum.to_numpy(dtype=float)
    best = int(history.epoch.iloc[int(rsum.argmax())])        # the first best, as `save_epoch` keeps it
    return {"epochs": len(rsum), "best epoch": best, "val rsum": round(float(rsum.max()), 2),
            "change over last 3 epochs": round(float(rsum[-1] - rsum[-4]), 2) if len(rsum) >= 4 else float("nan"),
            "stopped by": stopped_by(best, len(rsum), cfg)}


def convergence(cfg: TrainConfig, result: TrainResult) -> dict:
    """A finished run -> `curve_convergence` of its history and the temperature it learned (of the best
    epoch's weights)."""
    return {**curve_convergence(cfg, result.history),
            "learned temperature": round(1 / result.model.logit_scale.exp().item(), 4)}


def trial_row(cfg: TrainConfig, r: TrainResult) -> dict:
    """A trained trial -> its row: the setting, the best and last validation rSum, the stopping epoch, the
    validation change over its last three epochs, how it stopped, the learned temperature (`runs.convergence`)
    and the seconds of training and validation."""
    c = convergence(cfg, r)
    return {"model": cfg.model, "lr": cfg.lr, "init_temperature": cfg.model_overrides["init_temperature"],
            "best epoch": c["best epoch"], "epochs": c["epochs"], "val rsum": c["val rsum"],
            "last val rsum": round(float(r.history.rsum.iloc[-1]), 2),
            "change over last 3 epochs": c["change over last 3 epochs"], "stopped by": c["stopped by"],
            "learned temperature": c["learned temperature"],
            "seconds": round(float(r.history.seconds.sum()), 1), "recipe": recipe_id(cfg)}


def course_run(model: str, feats: dict[str, FeatureSet], budget: str = "cpu", seed: int = 0) -> TrainResult:
    """`train_run` of the course's recipe for `model` (`recipes.train_config`)."""
    return train_run(train_config(model, budget, seed), feats)


# ----------------------------------------------------------------------------- test rankings

def ranking_is_fresh(folder: Path) -> bool:
    """Does `folder` hold test ranks written after its best checkpoint (test_ranks.npz, by `rank_run`)?"""
    cache = Path(folder) / "test_ranks.npz"
    return cache.is_file() and cache.stat().st_mtime >= (Path(folder) / "best.pt").stat().st_mtime


def rank_run(cfg: TrainConfig, feats: dict[str, FeatureSet], device: str = "cpu", order: int = 0) -> dict:
    """Ranks of the run's best checkpoint on the 1K test set (cached beside the checkpoint) and the scoring time;
    `order` > 0: the run and test set of another split of the subset.

    -> {'img_rank': (N_img,) ndarray, 'cap_rank': (N_cap,) ndarray, 'seconds': float}
    """
    check_split(feats["test"], order)
    folder, test = run_dir(cfg, order), features_for(cfg, feats, order)["test"]
    cache = folder / "test_ranks.npz"
    if ranking_is_fresh(folder):
        z = np.load(cache)
        return {"img_rank": z["img_rank"], "cap_rank": z["cap_rank"], "seconds": float(z["seconds"])}
    result = load_result(folder, device)
    start = time.perf_counter()
    scores = FAST.all(result.model, test, device=device)
    seconds = time.perf_counter() - start
    img_rank, cap_rank = metrics.ranks(scores, test.caption_image)
    with atomic_path(cache) as tmp:
        np.savez(tmp, img_rank=img_rank, cap_rank=cap_rank, seconds=seconds)
    return {"img_rank": img_rank, "cap_rank": cap_rank, "seconds": seconds}


def needs_work(cfg: TrainConfig, rank: bool = False, order: int = 0) -> bool:
    """Is the run unfinished (or, with `rank`, its test ranking missing or older than its best.pt)? `order` > 0:
    its run on another split of the subset."""
    folder = run_dir(cfg, order)
    if not (folder / "last.pt").is_file() or not (folder / "best.pt").is_file():
        return True
    last = load_checkpoint(folder / "last.pt")
    if not finished(cfg, last["epoch"], last["best"]["epoch"]):
        return True
    return rank and not ranking_is_fresh(folder)


# ----------------------------------------------------------------------------- many runs

def train_and_rank(feats: dict[str, FeatureSet], cfg: TrainConfig, rank: bool) -> None:
    """One job of `run_all`: the run, and with `rank` its test ranking."""
    train_run(cfg, feats)
    if rank:
        rank_run(cfg, feats)


def run_all(configs: list[TrainConfig], feats: dict[str, FeatureSet], rank: bool = True,
            done: Callable[[TrainConfig, bool], None] | None = None) -> None:
    """Train (and with `rank`, rank) every run of `configs` that is not done yet: side by side on a CPU
    (`fast.parallel`, long runs first), else one after another here. `done(cfg, rank)`, if given, is called
    here as each of those runs finishes (to write a table as it grows)."""
    todo = [cfg for cfg in configs if needs_work(cfg, rank)]
    todo.sort(key=lambda cfg: cfg.model in ("dual", "dual_words"))     # runs without attention (seconds) last
    device = todo[0].device if todo else "cpu"
    if not parallel.side_by_side(train_and_rank, [(cfg, rank) for cfg in todo], feats, course_features, device,
                                 done=done):
        for cfg in todo:
            train_and_rank(feats, cfg, rank)
            if done is not None:
                done(cfg, rank)


def train_all(feats: dict[str, FeatureSet], budget: str = "cpu", seed: int = 0,
              model_names=MODEL_NAMES) -> dict[str, TrainResult]:
    """Notebook 05: every model's course run with one seed -> {model: TrainResult}."""
    configs = {name: train_config(name, budget, seed) for name in model_names}
    run_all(list(configs.values()), feats, rank=False)
    return {name: train_run(cfg, feats) for name, cfg in configs.items()}


def evaluate_all(feats: dict[str, FeatureSet], model_names=MODEL_NAMES, seeds=None,
                 budget: str = "cpu") -> dict[str, list[dict]]:
    """Notebook 06: every model's course runs with its seeds (`seeds_for`, or the given ones), ranked on the
    1K test set -> {model: [ranks per seed]}."""
    configs = {name: [train_config(name, budget, s) for s in (seeds if seeds is not None else seeds_for(name))]
               for name in model_names}
    run_all([cfg for runs in configs.values() for cfg in runs], feats, rank=True)
    return {name: [rank_run(cfg, feats) for cfg in runs] for name, runs in configs.items()}


def convergence_table(configs: list[TrainConfig]) -> pd.DataFrame:
    """Each finished run of `configs` -> one row: model, seed and `convergence` (from its folder; train them first)."""
    return pd.DataFrame([{"model": cfg.model, "seed": cfg.seed, **convergence(cfg, load_result(run_dir(cfg)))}
                         for cfg in configs])


def load_runs(name: str, budget: str = "cpu", seeds=None) -> list[models.RetrievalModel]:
    """The best checkpoint of each seed's course run of `name` (train them first); seeds default to `seeds_for`."""
    return [load_result(run_dir(train_config(name, budget, s))).model
            for s in (seeds if seeds is not None else seeds_for(name))]
