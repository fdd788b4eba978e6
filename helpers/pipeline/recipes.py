"""The course's recipe: which models, how many seeds, the two budgets, the learning rate and temperature the
search chose per model, and the one function that names a run's folder after its configuration (`run_dir`).

A run is a `train.TrainConfig` (whose defaults are the CPU budget); `train_config` builds the course's one
for a model, a budget and a seed, and every run of the course, 05's to 08's, has its folder named by
`run_dir` from that configuration alone: the same configuration, the same folder, whoever asks.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .. import models
from ..config import PATHS
from ..train import TrainConfig

# The factorial (flow x head, see helpers.models) and the blog's module as written.
MODEL_NAMES = ("dual", "dual_words", "decoupled_pooled", "decoupled", "joint", "joint_words", "blog")
PRIMARY = ("decoupled", "joint_words")  # 06's primary: the direction of flow alone, at the per-word head
HEADLINE = ("decoupled", "joint")      # the blog's sentence ("decoupled vs traditional joint"): flow and head both change
# 06's declared primary, decoupled vs joint_words (flow alone, per-word head), and its first secondary,
# decoupled_pooled vs joint (flow alone, pooled head): 5 seeds for their four models, the power
# `verdicts.primary_power` states; 3 for the rest of the factorial and the blog's module.
FIVE_SEED_MODELS = ("decoupled", "joint_words", "decoupled_pooled", "joint")
HEADLINE_SEEDS = (0, 1, 2, 3, 4)
OTHER_SEEDS = (0, 1, 2)

# One switch: the CPU budget (TrainConfig's defaults) runs in minutes on 2 cores; the GPU budget trains
# longer on bigger batches. `epochs` is the most a run may take (its cosine schedule spans them); early
# stopping ends a run once validation rSum has not improved for `patience` epochs, and the best epoch's
# weights are kept.
BUDGETS = {
    "cpu": {},
    "gpu": dict(epochs=60, patience=5, batch_size=256, lr=1e-3, device="auto"),   # CUDA, bf16 autocast
}

# Beside them, for the features at scale (`helpers.pipeline.shards`, not the notebooks' switch): the
# Karpathy train split (113,287 images) under torchrun DDP, on N GPUs sharing the global batch (512 = 8 x 64),
# bf16 autocast on CUDA. 221 steps an epoch; the cosine schedule spans 30 epochs, early stopping after 5
# without a better validation rSum (its 5K images are scored whole every epoch, on rank 0).
SCALE_BUDGETS = {
    "full": dict(epochs=30, patience=5, batch_size=512, lr=1e-3, device="auto", amp=True),
}

# The bracketing search (`helpers.pipeline.search.bracketing_search`, `make search`): one grid shared by every
# model, three values per axis to start; wherever a model's best trial sits on an edge of the grid, the grid grows by
# the next value of that axis's ladder on that side, for every model (the same trials for all), until every model's
# choice is interior or the ladder ends. The temperature's ladder starts at 0.01, the least a model may learn
# (train.MAX_LOGIT_SCALE, CLIP's cap of 100 on the inverse temperature): there is nothing below it to try.
LADDERS = {"lr": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
           "init_temperature": (0.01, 0.03, 0.1, 0.3, 1.0)}
START_GRID = {"lr": (3e-4, 1e-3, 3e-3), "init_temperature": (0.03, 0.1, 0.3)}
IDENTITY_LEFT_OUT = ("progress",)     # TrainConfig fields that do not change what a run computes


# The rule every tuning of the course grows its trials by (08's variants, 08's encoders): a ladder of values.
def _rung(value: float, ladder) -> int:
    """The index of `value` on `ladder` (up to float rounding); ValueError if it is not on it."""
    for i, v in enumerate(ladder):
        if np.isclose(v, value, rtol=1e-9, atol=0):
            return i
    raise ValueError(f"{value:g} is not on the ladder {tuple(ladder)}: start from values of the ladder")


def grow_until_interior(values, ladder, score_fn) -> tuple[float, dict[float, float]]:
    """Score the starting `values` (three or more, on `ladder`) with `score_fn(value) -> float` (higher is
    better); wherever the best sits on an edge of the values tried, score the ladder's next value on that
    side too; repeat until the best is interior or the ladder ends on its side. Ties go to the smaller value.
    -> (the best value, {value: score} of every value tried, ascending)."""
    ladder = tuple(ladder)
    if any(a >= b for a, b in zip(ladder, ladder[1:])):
        raise ValueError(f"the ladder must be strictly increasing, got {ladder}")
    tried = sorted({_rung(v, ladder) for v in values})
    if len(tried) < 3:
        raise ValueError(f"start from three distinct ladder values, got {tuple(values)}")
    scores: dict[int, float] = {}
    while True:
        for i in tried:
            if i not in scores:
                scores[i] = float(score_fn(ladder[i]))
                if np.isnan(scores[i]):
                    raise ValueError(f"the score of {ladder[i]:g} is NaN: the trial did not validate; look at its run")
        best = max(tried, key=lambda i: (scores[i], -i))
        grown = [i for i in (best - 1, best + 1) if 0 <= i < len(ladder) and i not in tried
                 and (i < tried[0] or i > tried[-1])]
        if not grown:
            return ladder[best], {ladder[i]: scores[i] for i in sorted(scores)}
        tried = sorted(tried + grown)


def seeds_for(model: str) -> tuple[int, ...]:
    return HEADLINE_SEEDS if model in FIVE_SEED_MODELS else OTHER_SEEDS


def grid_trials(grid: dict) -> list[dict]:
    """{'lr': (...), 'init_temperature': (...)} -> every combination, [{'lr': ..., 'init_temperature': ...}, ...]."""
    return [dict(zip(grid, values)) for values in itertools.product(*(sorted(v) for v in grid.values()))]


def grid_of(table: pd.DataFrame) -> dict:
    """A search table -> its grid, {axis: the values tried}: every model gets the same grid."""
    return {a: tuple(sorted(float(v) for v in table[a].unique())) for a in START_GRID}


def grid_table(budget: str) -> Path:
    """The bracketing search's committed table (every trial, with its convergence): notebooks/search-grid-<budget>.csv."""
    return PATHS.notebooks / f"search-grid-{budget}.csv"


def recipe_id(cfg: TrainConfig) -> str:
    """What a trial's row was computed from: its run folder's name (the whole training configuration) and a
    digest of its model's definition in `models.MODELS`, so a changed recipe or model makes the row stale."""
    cls, settings = models.MODELS[cfg.model]
    definition = f"{cls.__name__}:{sorted(settings.items())}"
    return f"{run_dir(cfg).name}:{hashlib.sha256(definition.encode()).hexdigest()[:8]}"


def searched(budget: str) -> pd.DataFrame:
    """The committed search's trials that today's recipes would train the same way (a row whose recipe changed
    since it was searched is left out), in the table's order; an empty table without a search."""
    path = grid_table(budget)
    if not path.is_file():
        return pd.DataFrame(columns=["model", *START_GRID, "val rsum", "recipe"])
    table = pd.read_csv(path)
    if table.empty:
        return table
    current = [recipe_id(train_config(r.model, budget, seed=0,
                                      setting={"lr": r.lr, "init_temperature": r.init_temperature})) == r.recipe
               if r.model in models.MODELS else False for r in table.itertuples()]
    return table[current]


def chosen(table: pd.DataFrame) -> pd.DataFrame:
    """Per model, the trial with the best validation rSum (the first one on a tie) -> indexed by model."""
    best = table.loc[table.groupby("model", sort=False)["val rsum"].idxmax()]
    return best.set_index("model")


def chosen_setting(model: str, budget: str) -> dict | None:
    """{'lr', 'init_temperature'} the search chose for `model` under `budget`, or None without a search of it."""
    table = searched(budget)
    table = table[table.model == model]
    if table.empty:
        return None
    row = chosen(table).loc[model]
    return {"lr": float(row["lr"]), "init_temperature": float(row["init_temperature"])}


def train_config(model: str, budget: str = "cpu", seed: int = 0, setting: dict | None = None,
                 **overrides) -> TrainConfig:
    """The course's training configuration for `model` under a budget ('cpu', 'gpu' or 'full'), with the learning
    rate and initial temperature the search chose for it (`chosen_setting`), or the given `setting`
    ({'lr', 'init_temperature'}); without either, the budget's defaults. `overrides`: TrainConfig fields."""
    budgets = {**BUDGETS, **SCALE_BUDGETS}
    if budget not in budgets:
        raise ValueError(f"unknown budget {budget!r}; choose one of {sorted(budgets)}")
    cfg = replace(TrainConfig(model=model, seed=seed, progress=False), **budgets[budget])
    setting = setting if setting is not None else chosen_setting(model, budget)
    if setting is not None:
        cfg = replace(cfg, lr=setting["lr"],
                      model_overrides={**cfg.model_overrides, "init_temperature": setting["init_temperature"]})
    return replace(cfg, **overrides)


def run_dir(cfg: TrainConfig, order: int = 0) -> Path:
    """The folder of the run `cfg` defines: runs/<model>[-<what differs>]-seed<seed>-<10 hex of the
    configuration's sha256>, e.g. runs/decoupled-seed0-3f2a..., runs/joint-25pct-seed1-...; on another split
    of the subset (`order` > 0, `pipeline.splits`) the same name in runs/split<order>/.

    Everything in the configuration but `IDENTITY_LEFT_OUT` goes into the hash, so two configurations share a
    folder exactly when they train the same run; the words before it are for people (the folder's
    config.json says the whole configuration)."""
    identity = {k: v for k, v in asdict(cfg).items() if k not in IDENTITY_LEFT_OUT}
    if identity["text_features"] == "minilm":     # added for 08's encoder prior: the course's runs keep their folders
        del identity["text_features"]
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    aux = cfg.model_overrides.get("aux_weight", 0.0)
    words = [cfg.model, cfg.text_features if cfg.text_features != "minilm" else "",
             cfg.loss if cfg.loss != "infonce" else "",
             cfg.image_features if cfg.image_features != "regions" else "",
             f"{round(100 * cfg.train_fraction)}pct" if cfg.train_fraction < 1 else "",
             "pretrained" if cfg.init_from else "", f"w{aux:g}" if aux else ""]
    runs = PATHS.runs / f"split{order}" if order else PATHS.runs
    return runs / f"{'-'.join(w for w in words if w)}-seed{cfg.seed}-{digest[:10]}"
