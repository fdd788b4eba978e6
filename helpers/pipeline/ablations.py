"""Notebook 08's runs and tables: the blog's bugs and the readers' proposals, each as one change to `decoupled`,
the readers' proposals at their best, and the data-scale curve.

Every variant is `decoupled`'s training configuration (the setting 05's search chose for it) with one field
changed (`variant_config`); the models are in `helpers.models`, the added losses in `helpers.losses`, the
pre-training in `helpers.pretraining`. Each proposal that adds something with no default (a term's weight, the
SimCLR epochs, a changed loss's learning rate) is tuned first on seed 0 and validation rSum, along a ladder
until its choice is interior, the same trials for each (`tune_all`); then every variant at its choice and the
data-scale curve train with 3 seeds. The runs are costly, so `make ablations` (`python -m helpers reproduce
--ablations`, `reproduce_ablations`) trains them outside the tests and commits three files beside the
notebooks (`committed_files`): every tuning trial (resumable), every run's convergence, every run's test ranks.
Notebook 08 reads them (`load_committed`), builds its sentences from them, and retrains one variant to check them.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from .. import intervals, metrics
from ..atomic import atomic_path, write_csv
from ..checkpoints import save_checkpoint
from ..config import PATHS
from ..features import FeatureSet
from ..pretraining import pretrain_projections
from ..train import TrainConfig, TrainResult, make_model
from .feature_cache import load_course_features
from .recipes import LADDERS as LADDERS_05
from .recipes import grow_until_interior, run_dir, seeds_for, train_config
from .runs import course_run, curve_convergence, rank_run, train_run

BASELINE = "decoupled"
# variant -> (group, what changes against `decoupled`, the TrainConfig fields that change)
VARIANTS = {
    "no_value": ("the blog's bugs", "no value projection", dict(model="no_value")),
    "counts_padding": ("the blog's bugs", "no padding mask", dict(model="counts_padding")),
    "raw_regions": ("the blog's bugs", "attention over raw, not projected, regions", dict(model="raw_regions")),
    "logits_features": ("the blog's bugs", "1000 ImageNet logits instead of regions",
                        dict(image_features="imagenet_logits")),
    "loss_vse": ("readers' proposals", "VSE++ max-violation hinge instead of InfoNCE", dict(loss="vse")),
    "loss_pointwise": ("readers' proposals", "per-pair logistic loss instead of InfoNCE", dict(loss="pointwise")),
    "pretrained": ("readers' proposals", "projections pre-trained per modality (SimCLR)", dict(init_from="SimCLR")),
    "local_consistency": ("readers' proposals", "+ image local-consistency term", dict(model="local_consistency")),
    "word_diversity": ("readers' proposals", "+ text word-diversity term", dict(model="word_diversity")),
    "masked_reconstruction": ("readers' proposals", "+ masked cross-modal reconstruction",
                              dict(model="masked_reconstruction")),
}
SEEDS = (0, 1, 2)
SCALE_MODELS = ("dual", "decoupled", "joint")
SCALE_FRACTIONS = (0.25, 0.5, 1.0)        # 1.0 is notebook 06's runs


def swept(variant: str) -> bool:
    return VARIANTS[variant][2].get("model") in ("local_consistency", "word_diversity", "masked_reconstruction")


# ----------------------------------------------------------------------------- the runs

def pretrained_projections(budget: str, seed: int, epochs: int | None = None) -> str:
    """Where the SimCLR-pre-trained projections of `decoupled`'s seed-`seed` model are kept (relative to
    runs/, as `TrainConfig.init_from` takes it): named after the run whose model they start from, and with
    `epochs` (the tuned design's SimCLR epochs) after those too, so no two numbers of epochs share a file."""
    name = run_dir(train_config(BASELINE, budget, seed)).name
    return f"pretrained/{name}.pt" if epochs is None else f"pretrained/{name}-simclr{int(epochs)}ep.pt"


def variant_config(variant: str, budget: str = "cpu", seed: int = 0, aux_weight: float | None = None) -> TrainConfig:
    """`decoupled`'s training configuration (the setting chosen in 05) with the variant's one change."""
    change = dict(VARIANTS[variant][2])
    cfg = train_config(BASELINE, budget, seed)
    if swept(variant):
        if aux_weight is None:
            raise ValueError(f"{variant} needs aux_weight (its tuning's choice: `tuned_value`)")
        change["model_overrides"] = {**cfg.model_overrides, "aux_weight": aux_weight}
    if "init_from" in change:
        change["init_from"] = pretrained_projections(budget, seed)
    return dataclasses.replace(cfg, **change)


def pretrain(cfg: TrainConfig, feats: dict[str, FeatureSet], epochs: int | None = None) -> None:
    """Write the pre-trained projections `cfg.init_from` names, unless they are there: the projections of
    the model `cfg` starts from, SimCLR on the training split's images and captions, each alone, for
    `epochs` epochs (None: `pretrain_projections`'s default)."""
    path = PATHS.runs / cfg.init_from
    if path.is_file():
        return
    model = make_model(dataclasses.replace(cfg, init_from=""), feats["train"])
    pretrain_projections(model, feats["train"], seed=cfg.seed, **({} if epochs is None else {"epochs": int(epochs)}))
    save_checkpoint({k: v for k, v in model.state_dict().items() if k.startswith(("image_proj", "text_proj"))}, path)


def one_change(tuning: pd.DataFrame, budget: str = "cpu") -> pd.DataFrame:
    """Per variant: what its seed-0 run under the tuned design (`tuned_config`) changes against `decoupled`'s
    training configuration, field by field."""
    return pd.DataFrame([{"group": group, "variant": name, "change": change,
                          "differs from decoupled in": differences(tuned_config(name, tuning, budget, 0), budget)}
                         for name, (group, change, _) in VARIANTS.items()])


def differences(cfg: TrainConfig, budget: str = "cpu") -> str:
    """What `cfg` changes against `decoupled`'s training configuration (seed 0): 'field = value; ...'."""
    base, cfg = dataclasses.asdict(train_config(BASELINE, budget, 0)), dataclasses.asdict(cfg)
    diffs = {k: v for k, v in cfg.items() if v != base[k]}
    if "model_overrides" in diffs:
        diffs["model_overrides"] = {k: v for k, v in diffs["model_overrides"].items()
                                    if base["model_overrides"].get(k) != v}
    if "init_from" in diffs:
        diffs["init_from"] = "the projections pre-trained with SimCLR (helpers.pretraining)"
    if "image_features" in diffs:
        diffs["image_features"] = "test/val/train images as (N, 1, 1000) ImageNet logits"
    return "; ".join(f"{k} = {v}" for k, v in diffs.items())


def scale_config(model: str, fraction: float, budget: str = "cpu", seed: int = 0) -> TrainConfig:
    """`model`'s course run on the first `fraction` of the training images (validation and test stay whole);
    the full training set is notebook 06's run of the model."""
    return train_config(model, budget, seed, train_fraction=fraction)


# ----------------------------------------------------------------------------- the tables

def _pairs(runs: list[dict]) -> list[tuple]:
    return [(r["img_rank"], r["cap_rank"]) for r in runs]


def ablation_table(variants: dict[str, list[dict]], baseline: list[dict], caption_image, n_boot: int = 1000,
                   alpha: float = 0.05) -> pd.DataFrame:
    """Every variant against `decoupled` on test rSum: points with a 95% interval and two-sided p
    (`intervals.honest_test`: test images resampled with their captions, plus a Student-t seed term), Holm's
    correction within each group (the blog's bugs; the readers' proposals: `intervals.holm`) and the verdict
    from it: "better" / "credibly worse" when Holm rejects, "not credible after Holm" when the raw interval
    excludes 0 but Holm does not, else "no credible difference"."""
    rows, order = [], list(VARIANTS)
    for name, runs in sorted(variants.items(), key=lambda kv: order.index(kv[0])):   # the course's order
        t = intervals.honest_test([(1, _pairs(runs)), (-1, _pairs(baseline))], caption_image, n_boot=n_boot,
                                  level=1 - alpha)
        group, change, _ = VARIANTS[name]
        rows.append({"group": group, "variant": name, "change": change, "seeds": len(runs), "rsum": t["means"][0],
                     "baseline rsum": t["means"][1], "difference": t["estimate"], "lo": t["lo"], "hi": t["hi"],
                     "p": t["p"]})
    table = pd.DataFrame(rows, columns=["group", "variant", "change", "seeds", "rsum", "baseline rsum", "difference",
                                        "lo", "hi", "p"])
    table["p_holm"], table["correction"], table["verdict"] = np.nan, "", ""
    for group, idx in table.groupby("group", sort=False).groups.items():
        part = table.loc[idx]
        adjusted, reject = intervals.holm(part["p"], alpha)
        table.loc[idx, "p_holm"] = adjusted
        table.loc[idx, "correction"] = f"Holm within {group} ({len(idx)})"
        table.loc[idx, "verdict"] = [("better" if d > 0 else "credibly worse") if r else
                                     "not credible after Holm" if lo > 0 or hi < 0 else "no credible difference"
                                     for d, lo, hi, r in zip(part["difference"], part["lo"], part["hi"], reject)]
    return table


def scale_table(scale: dict[tuple[str, float], list[dict]], caption_image, n_boot: int = 1000) -> pd.DataFrame:
    """Per training fraction: each model's test rSum with its interval, and the gaps `joint` - `decoupled`
    and `dual` - `decoupled` with theirs."""
    rows = []
    for f in sorted({f for _, f in scale}):
        for model in SCALE_MODELS:
            t = intervals.honest_interval(_pairs(scale[model, f]), caption_image, n_boot=n_boot).loc["rsum"]
            rows.append({"fraction": f, "what": model, "value": t["mean"], "lo": t["lo"], "hi": t["hi"]})
        for other in ("joint", "dual"):
            d = intervals.honest_difference(_pairs(scale[other, f]), _pairs(scale[BASELINE, f]), caption_image,
                                            n_boot=n_boot).loc["rsum"]
            rows.append({"fraction": f, "what": f"{other} - {BASELINE}", "value": d["diff"], "lo": d["lo"], "hi": d["hi"]})
    return pd.DataFrame(rows)


def gap_table(scale: dict[tuple[str, float], list[dict]], caption_image, n_boot: int = 1000) -> pd.DataFrame:
    """How each gap to `decoupled` moves from the smallest to the largest training fraction: the change
    of (other - decoupled) in rSum points, with a 95% interval (`intervals.honest_contrast`, four sets of
    independent runs on the same resampled test images), and the word for it. The gap "narrows" when it
    credibly moves toward zero from a credible starting gap, "widens" when it credibly moves away from
    it (or opens where there was no credible gap), else "holds (no credible change)"."""
    small, large = min(f for _, f in scale), max(f for _, f in scale)
    pairs = {key: _pairs(runs) for key, runs in scale.items()}
    rows = []
    for other in ("joint", "dual"):
        before, b_lo, b_hi = intervals.honest_contrast([(1, pairs[other, small]), (-1, pairs[BASELINE, small])],
                                                       caption_image, n_boot=n_boot)
        change, lo, hi = intervals.honest_contrast([(1, pairs[other, large]), (-1, pairs[BASELINE, large]),
                                                    (-1, pairs[other, small]), (1, pairs[BASELINE, small])],
                                                   caption_image, n_boot=n_boot)
        if b_lo > 0 or b_hi < 0:                        # a credible gap to start from
            toward_zero = -np.sign(before)
            word = ("narrows" if min(toward_zero * lo, toward_zero * hi) > 0 else
                    "widens" if max(toward_zero * lo, toward_zero * hi) < 0 else "holds (no credible change)")
        else:
            word = "widens (opens from no credible gap)" if lo > 0 or hi < 0 else "holds (no credible change)"
        rows.append({"gap": f"{other} - {BASELINE}", f"at {small:.0%}": before, f"at {large:.0%}": before + change,
                     "change": change, "lo": lo, "hi": hi, "the gap": word})
    return pd.DataFrame(rows)


def tables(tuning: pd.DataFrame, variants: dict, scale: dict, baseline: list[dict], caption_image) -> dict:
    """The tables of 08 (and of results/ablations.md): the tuning and, from the runs' test ranks, the variants,
    the data scale and how the gaps move with it."""
    return {"Tuning (seed 0, validation)": tuning_summary(tuning),
            f"Variants vs {BASELINE} (test rSum)": ablation_table(variants, baseline, caption_image),
            "Data scale (test rSum)": scale_table(scale, caption_image),
            "How the gaps move with data (test rSum)": gap_table(scale, caption_image)}


def write_tables(tables: dict[str, pd.DataFrame], name: str = "ablations.md") -> Path:
    """{title: table} -> results/<name> (each table as text, 2 decimals); -> its path."""
    out = PATHS.results / name
    with atomic_path(out) as tmp:
        tmp.write_text("".join(f"## {title}\n```\n{t.round(2).to_string(index=False)}\n```\n\n"
                               for title, t in tables.items()))
    return out


# ----------------------------------------------------------------------------- the committed files

def save_ranks(variants: dict, scale: dict, path: Path, runs: dict | None = None) -> None:
    """Every run's test ranks in one .npz: 'variant|name|seed|img' / '|cap', 'scale|model|fraction|seed|...'.
    With `runs` ({'variant|name|seed' or 'scale|model|fraction|seed': {'name': run folder name, 'rsum':
    validation rSum per epoch}}), each run's folder name ('...|run') and validation curve ('...|rsum') too, so
    a later call tells a committed run from a changed one and has its convergence without its folder."""
    arrays = {}
    for name, ranked in variants.items():
        for s, r in zip(SEEDS, ranked):
            arrays[f"variant|{name}|{s}|img"], arrays[f"variant|{name}|{s}|cap"] = r["img_rank"], r["cap_rank"]
    for (model, f), ranked in scale.items():
        for s, r in zip(SEEDS, ranked):
            arrays[f"scale|{model}|{f:g}|{s}|img"], arrays[f"scale|{model}|{f:g}|{s}|cap"] = r["img_rank"], r["cap_rank"]
    arrays = {k: np.asarray(v).astype(np.int16) for k, v in arrays.items()}
    for key, run in (runs or {}).items():
        if f"{key}|img" in arrays:
            arrays[f"{key}|run"], arrays[f"{key}|rsum"] = np.array(run["name"]), np.asarray(run["rsum"], dtype=np.float64)
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)


def load_ranks(path: Path) -> tuple[dict[str, list[dict]], dict[tuple[str, float], list[dict]]]:
    """`save_ranks`'s file -> the (variants, scale) dicts of `all_ranks`."""
    z = np.load(path)
    variants, scale = {}, {}
    for key in sorted(k for k in z.files if k.endswith("|img")):
        parts, run = key.split("|"), {"img_rank": z[key].astype(np.int64), "cap_rank": z[key[:-3] + "cap"].astype(np.int64)}
        if parts[0] == "variant":
            variants.setdefault(parts[1], {})[int(parts[2])] = run
        else:
            scale.setdefault((parts[1], float(parts[2])), {})[int(parts[3])] = run
    return ({k: [v[s] for s in sorted(v)] for k, v in variants.items()},
            {k: [v[s] for s in sorted(v)] for k, v in scale.items()})


def committed_runs(path: Path) -> dict[str, dict]:
    """`save_ranks`'s file -> {'variant|name|seed' or 'scale|model|fraction|seed': {'name', 'rsum'}} of the runs it
    names ({} without the file, or for a file written without them)."""
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {k.removesuffix("|run"): {"name": str(z[k]), "rsum": z[k.removesuffix("run") + "rsum"]}
                for k in z.files if k.endswith("|run")}


# ----------------------------------------------------------------------------- the tuned design

# The readers' proposals at their best, with the same trials for each. Every proposal that adds something with no
# default gets it tuned on seed 0 and validation rSum, by one rule (`grow_until_interior`): three values of a
# ladder to start; wherever the best sits on an edge of the values tried, the ladder's next value on that side is
# tried too; until the best is interior or the ladder ends. The same ladder and start for every variant of a kind:
#   - each added term (`local_consistency`, `word_diversity`, `masked_reconstruction`): its weight;
#   - `pretrained`: the number of SimCLR epochs (pre-trained once per number of epochs and seed);
#   - each changed loss (`loss_vse`, `loss_pointwise`): its learning rate, from `decoupled`'s chosen one and
#     its two ladder neighbours (the ladder of notebook 05's search).
# The blog's bugs are not tuned: each is `decoupled`'s recipe with the bug put back.
WEIGHT_LADDER = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
WEIGHT_START = (0.1, 0.3, 1.0)
EPOCHS_LADDER = (2, 5, 10, 20, 40)
EPOCHS_START = (2, 5, 10)
LR_LADDER = LADDERS_05["lr"]                # notebook 05's ladder
TUNED = {"loss_vse": "lr", "loss_pointwise": "lr", "pretrained": "pretrain_epochs",
         "local_consistency": "aux_weight", "word_diversity": "aux_weight", "masked_reconstruction": "aux_weight"}
LADDERS = {"aux_weight": WEIGHT_LADDER, "pretrain_epochs": EPOCHS_LADDER, "lr": LR_LADDER}
TUNING_COLUMNS = ["variant", "tuned", "value", "val rsum", "best epoch", "epochs", "change over last 3 epochs",
                  "stopped by", "share of loss %", "run"]


def lr_start(budget: str = "cpu") -> tuple[float, float, float]:
    """`decoupled`'s chosen learning rate (its nearest value on `LR_LADDER`) and its two ladder neighbours
    (the three nearest at an end of the ladder)."""
    lr = train_config(BASELINE, budget, 0).lr
    i = min(range(len(LR_LADDER)), key=lambda j: abs(np.log(LR_LADDER[j] / lr)))
    i = min(max(i, 1), len(LR_LADDER) - 2)
    return LR_LADDER[i - 1], LR_LADDER[i], LR_LADDER[i + 1]


def tuning_start(variant: str, budget: str = "cpu") -> tuple:
    """The three values a tuned variant starts from (the same for every variant of a kind)."""
    return {"aux_weight": WEIGHT_START, "pretrain_epochs": EPOCHS_START, "lr": lr_start(budget)}[TUNED[variant]]


def trial_config(variant: str, value: float, budget: str = "cpu", seed: int = 0) -> TrainConfig:
    """The run of a tuned variant at one value of what it tunes (`TUNED`): its weight, SimCLR epochs or learning rate."""
    if variant not in TUNED:
        raise ValueError(f"{variant!r} is not tuned; the tuned variants are {sorted(TUNED)}")
    what = TUNED[variant]
    if what == "aux_weight":
        return variant_config(variant, budget, seed, float(value))
    cfg = variant_config(variant, budget, seed)
    if what == "pretrain_epochs":
        return dataclasses.replace(cfg, init_from=pretrained_projections(budget, seed, int(value)))
    return dataclasses.replace(cfg, lr=float(value))


def train_trial(variant: str, value: float, feats: dict[str, FeatureSet], budget: str = "cpu", seed: int = 0
                ) -> tuple[TrainConfig, TrainResult]:
    """Train (or reuse) a tuned variant at one value; `pretrained` pre-trains its projections first
    (once per number of epochs and seed) -> (its configuration, its result)."""
    cfg = trial_config(variant, value, budget, seed)
    if TUNED[variant] == "pretrain_epochs":
        pretrain(cfg, feats, int(value))
    return cfg, train_run(cfg, feats)


def convergence(cfg: TrainConfig, history: pd.DataFrame) -> dict:
    """A run's per-epoch history -> `runs.curve_convergence` (one stopping rule for the whole course) and, for a
    run with an added term, the term's share of the training loss at the best epoch in % (else NaN)."""
    c = curve_convergence(cfg, history)
    best = history.loc[history.epoch == c["best epoch"]].iloc[0]
    share = 100 * best[cfg.model] / best["train_loss"] if cfg.model in history.columns else np.nan
    return {**c, "share of loss %": round(float(share), 2)}


def tuning_file(budget: str = "cpu") -> Path:
    """The committed table of every tuning trial: notebooks/ablations-tuning-<budget>.csv."""
    return PATHS.notebooks / f"ablations-tuning-{budget}.csv"


def read_tuning(path: Path) -> pd.DataFrame:
    """The tuning trials written so far (an empty table if none); ValueError if the file is not such a table."""
    if not path.is_file():
        return pd.DataFrame(columns=TUNING_COLUMNS)
    table = pd.read_csv(path)
    missing = set(TUNING_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"{path} lacks the columns {sorted(missing)}: it is not a table of the ablations' tuning; "
                         "move it away and run the tuning again (`tune_all`) to write it")
    return table


def _same_trial(table: pd.DataFrame, variant: str, value: float) -> pd.Series:
    return (table.variant == variant) & (table.tuned == TUNED[variant]) & np.isclose(table.value.astype(float), value)


def tune(variant: str, feats: dict[str, FeatureSet], budget: str = "cpu", log=print) -> pd.DataFrame:
    """Tune one variant (`TUNED`) by `grow_until_interior` on seed 0, judged on validation rSum -> its trials' rows.

    Resumable: the table (`tuning_file`) is written after every finished trial, and a trial whose row is there
    with the same run identity (`recipes.run_dir(cfg).name`) is read, not retrained; a row whose identity has
    changed (the recipe moved) is retrained and replaced."""
    path = tuning_file(budget)

    def score(value: float) -> float:
        table = read_tuning(path)
        same = _same_trial(table, variant, value)
        name = run_dir(trial_config(variant, value, budget)).name
        if same.any() and (table.loc[same, "run"] == name).all():
            return float(table.loc[same, "val rsum"].iloc[0])
        log(f"{variant}: training the trial {TUNED[variant]} = {value:g}")
        cfg, result = train_trial(variant, value, feats, budget)
        row = {"variant": variant, "tuned": TUNED[variant], "value": float(value),
               **convergence(cfg, result.history), "run": name}
        table = read_tuning(path)                                         # as it is now, this row in its place
        kept = table[~_same_trial(table, variant, value)].to_dict("records")
        write_csv(pd.DataFrame([*kept, row], columns=TUNING_COLUMNS), path, index=False)
        return row["val rsum"]

    _, scores = grow_until_interior(tuning_start(variant, budget), LADDERS[TUNED[variant]], score)
    table = read_tuning(path)
    tried = np.logical_or.reduce([_same_trial(table, variant, v).to_numpy() for v in scores])
    return table[tried].sort_values("value").reset_index(drop=True)


def tune_all(feats: dict[str, FeatureSet], budget: str = "cpu", log=print) -> pd.DataFrame:
    """Tune every variant of `TUNED`, in the course's order -> every trial's row (the table `tuning_file` holds).

    The same trials for each: every variant of a kind gets the same design, one ladder, the same three values
    to start and the same growth rule (`grow_until_interior`), seed 0, the budget's early stopping, judged on
    validation rSum; so two variants whose optima sit alike take the same number of runs."""
    return pd.concat([tune(v, feats, budget, log) for v in VARIANTS if v in TUNED], ignore_index=True)


def tuned_value(tuning: pd.DataFrame, variant: str) -> float:
    """The tuning's choice for a variant: its trial with the best validation rSum (the smaller value on a tie)."""
    rows = tuning[(tuning.variant == variant) & (tuning.tuned == TUNED[variant])].sort_values("value")
    if rows.empty:
        raise ValueError(f"the tuning table has no trials of {variant}: run `tune_all` (or `tune({variant!r}, ...)`) first")
    return float(rows.loc[rows["val rsum"].idxmax(), "value"])


def tuning_summary(tuning: pd.DataFrame) -> pd.DataFrame:
    """Per tuned variant: what is tuned, the values tried, the choice and its validation rSum, the number of
    trials, whether the choice is interior to the values tried, and whether it sits at an end of its ladder."""
    rows = []
    for variant in (v for v in VARIANTS if v in TUNED):
        trials = tuning[(tuning.variant == variant) & (tuning.tuned == TUNED[variant])].sort_values("value")
        if trials.empty:
            continue
        value, ladder = tuned_value(tuning, variant), LADDERS[TUNED[variant]]
        values = trials.value.astype(float).tolist()
        rows.append({"variant": variant, "tuned": TUNED[variant], "tried": ", ".join(f"{v:g}" for v in values),
                     "chosen": value, "val rsum": float(trials["val rsum"].max()), "trials": len(trials),
                     "interior": bool(values[0] < value < values[-1]),
                     "at ladder end": bool(np.isclose(value, ladder[0]) or np.isclose(value, ladder[-1]))})
    return pd.DataFrame(rows)


def tuned_config(variant: str, tuning: pd.DataFrame, budget: str = "cpu", seed: int = 0) -> TrainConfig:
    """A variant's run under the tuned design: a tuned variant at its tuning's choice, the others as `variant_config`."""
    if variant in TUNED:
        return trial_config(variant, tuned_value(tuning, variant), budget, seed)
    return variant_config(variant, budget, seed)


def tuned_configs(tuning: pd.DataFrame, budget: str = "cpu", seeds=SEEDS) -> list[tuple[str, str, TrainConfig]]:
    """Every run of the tuned design but its tuning trials -> [(kind, name, configuration)]: each variant's
    seeds ("seed run") and the data-scale curve below 100% ("scale"; 100% is notebook 06's runs)."""
    runs = [("seed run", v, tuned_config(v, tuning, budget, s)) for v in VARIANTS for s in seeds]
    return runs + [("scale", m, scale_config(m, f, budget, s)) for m in SCALE_MODELS
                   for f in SCALE_FRACTIONS if f < 1 for s in seeds]


def all_ranks(feats: dict[str, FeatureSet], tuning: pd.DataFrame, budget: str = "cpu", seeds=SEEDS,
              path: Path | None = None) -> tuple[dict[str, list[dict]], dict[tuple[str, float], list[dict]]]:
    """Every variant (tuned ones at their choice) and the data-scale curve, trained or reused, ranked on the 1K
    test set -> ({variant: [ranks per seed]}, {(model, fraction): [ranks per seed]}).

    With `path` (the committed ranks file), resumable across machines: a run whose ranks are there under the same
    run folder name is read, not retrained, and the file is rewritten after every run that had to train."""
    jobs = [(f"variant|{name}|{s}", name, tuned_config(name, tuning, budget, s)) for name in VARIANTS for s in seeds]
    jobs += [(f"scale|{m}|{f:g}|{s}", (m, f), scale_config(m, f, budget, s))
             for m in SCALE_MODELS for f in SCALE_FRACTIONS for s in seeds]
    committed = committed_runs(path) if path is not None else {}
    have = {}
    if committed:
        variants, scale = load_ranks(path)
        have.update({f"variant|{k}|{s}": r for k, ranked in variants.items() for s, r in zip(SEEDS, ranked)})
        have.update({f"scale|{m}|{f:g}|{s}": r for (m, f), ranked in scale.items() for s, r in zip(SEEDS, ranked)})
    got, runs = {}, {}
    for key, _, cfg in jobs:
        if key in have and committed.get(key, {}).get("name") == run_dir(cfg).name:
            got[key], runs[key] = have[key], committed[key]
            continue
        name = key.split("|")[1]
        if TUNED.get(name) == "pretrain_epochs":
            pretrain(cfg, feats, int(tuned_value(tuning, name)))
        result = train_run(cfg, feats)
        got[key] = rank_run(cfg, feats)
        runs[key] = {"name": run_dir(cfg).name, "rsum": result.history.rsum.to_numpy(dtype=float)}
        if path is not None:
            save_ranks(*_grouped(jobs, got), path, runs)
    return _grouped(jobs, got)


def _grouped(jobs, got: dict) -> tuple[dict[str, list[dict]], dict[tuple[str, float], list[dict]]]:
    """The runs ranked so far, in `jobs`' order -> ({variant: [ranks per seed]}, {(model, fraction): [...]}),
    each list the seeds from the first up to the first one missing."""
    variants, scale, gap = {}, {}, set()
    for key, group, _ in jobs:
        out = variants if key.startswith("variant|") else scale
        if key in got and group not in gap:
            out.setdefault(group, []).append(got[key])
        else:
            gap.add(group)
    return variants, scale


def convergence_table(tuning: pd.DataFrame, budget: str = "cpu", seeds=SEEDS, path: Path | None = None) -> pd.DataFrame:
    """Every run of `make ablations`, each once: its kind ("tuning", "seed run", "tuning + seed run" for a seed-0
    run at the chosen value, "scale"), name, seed, training fraction, what it tunes and the value, its stopping
    epoch, best epoch, validation change over its last three epochs and what stopped it. Tuning trials come from
    the tuning table; the other runs from their folders' history.csv or, for a run with no folder here, from its
    validation curve in the ranks file `path` (RuntimeError if it is in neither: it has not been trained)."""
    kept = ("epochs", "best epoch", "change over last 3 epochs", "stopped by")
    curves = {run["name"]: run["rsum"] for run in (committed_runs(path) if path is not None else {}).values()}
    rows = {r["run"]: {"kind": "tuning", "name": r["variant"], "seed": 0, "fraction": 1.0, "tuned": r["tuned"],
                       "value": r["value"], **{k: r[k] for k in kept}} for r in tuning.to_dict("records")}
    for kind, name, cfg in tuned_configs(tuning, budget, seeds):
        folder = run_dir(cfg)
        if folder.name in rows:
            rows[folder.name]["kind"] = "tuning + seed run"
            continue
        if (folder / "history.csv").is_file():
            c = convergence(cfg, pd.read_csv(folder / "history.csv"))
        elif folder.name in curves:
            rsum = curves[folder.name]
            c = convergence(cfg, pd.DataFrame({"epoch": np.arange(1, len(rsum) + 1), "rsum": rsum}))
        else:
            raise RuntimeError(f"{folder} has no history.csv: the {kind} {name}, seed {cfg.seed}, has not been trained; "
                               "train them first (`make ablations`)")
        tuned = kind == "seed run" and name in TUNED
        rows[folder.name] = {"kind": kind, "name": name, "seed": cfg.seed, "fraction": cfg.train_fraction,
                             "tuned": TUNED[name] if tuned else "",
                             "value": tuned_value(tuning, name) if tuned else np.nan, **{k: c[k] for k in kept}}
    return pd.DataFrame([{**row, "run": run} for run, row in rows.items()])


# ----------------------------------------------------------------------------- 08's sentences, from the tables

def _counts(summary: pd.DataFrame, variants) -> str:
    """'3 runs each' when the variants' trial counts agree, else '`a` 3, `b` 4 runs' (one variant: '3 runs')."""
    n = summary.set_index("variant").loc[list(variants), "trials"].astype(int)
    if len(n) == 1:
        return f"{n.iloc[0]} runs"
    if n.nunique() == 1:
        return f"{n.iloc[0]} runs each"
    return ", ".join(f"`{v}` {k}" for v, k in n.items()) + " runs"


def verdict_sentence(claims: pd.DataFrame, comparisons: pd.DataFrame) -> str:
    """Notebook 06's tables (`evaluation.claims_table`, `verdicts.family_table`) -> the sentence 08 opens
    with: which way `decoupled` differs from the primary's B (the primary reading's interval) and the blog's
    module from `decoupled` (its corrected verdict), e.g. "... credibly *worse* than `joint_words`, and the
    blog's module as written worse again."."""
    primary = claims[claims.primary]
    blog = comparisons[comparisons.comparison == "blog vs decoupled"]
    if len(primary) != 1 or len(blog) != 1:
        raise ValueError("need notebook 06's claims table with one primary row and its comparisons table with the "
                         "row 'blog vs decoupled' (evaluation.claims_table, verdicts.family_table)")
    first = metrics.verdict(float(primary.lo.iloc[0]), float(primary.hi.iloc[0]))
    a, b = primary.A.iloc[0], primary.B.iloc[0]
    said = {"A credibly worse": f"credibly *worse* than `{b}`", "A better": f"credibly *better* than `{b}`",
            "no credible difference": f"not credibly different from `{b}`"}[first]
    second = blog.verdict.iloc[0]
    blog_said = ("worse again" if second == "A credibly worse" and first == "A credibly worse" else
                 {"A credibly worse": f"credibly worse than `{a}`", "A better": f"credibly better than `{a}`",
                  "no credible difference": f"not credibly different from `{a}`",
                  "not credible after Holm": f"not credibly different from `{a}` after Holm's correction"}[second])
    return f"Notebook 06 found the corrected `{a}` model {said}, and the blog's module as written {blog_said}."


def design_sentence(tuning: pd.DataFrame, search: pd.DataFrame) -> str:
    """The tuning table and 05's search table -> what 08 says of its design: which variants get their own
    trials and how many runs each took, and what 05's search would cost per variant (its trials of `decoupled`)."""
    summary = tuning_summary(tuning)
    kinds = {what: [v for v in summary.variant if TUNED[v] == what] for what in LADDERS}
    if any(not names for names in kinds.values()):
        raise ValueError(f"the tuning table lacks trials of {[w for w, n in kinds.items() if not n]}: run `tune_all` first")
    n_search = int((search.model == BASELINE).sum())
    names = ", ".join(f"`{v}`" for v in kinds["lr"])
    text = (f"What this design cannot show: a variant that would prefer another learning rate is judged at "
            f"`{BASELINE}`'s, except the changed losses ({names}), which get their own learning-rate trial "
            f"({_counts(summary, kinds['lr'])}). Notebook 05's whole search is not repeated per variant (that would "
            f"cost {n_search} runs each); the added loss terms get their own weight sweep "
            f"({_counts(summary, kinds['aux_weight'])}), because a weight has no default, and pre-training its number "
            f"of SimCLR epochs ({_counts(summary, kinds['pretrain_epochs'])}). Every trial is seed 0, judged on "
            "validation rSum, and each variant's values grow along its ladder until its choice is interior")
    unfinished = summary[~summary.interior & ~summary["at ladder end"]]
    if len(unfinished):
        raise ValueError(f"the tuning of {list(unfinished.variant)} is unfinished (its choice sits on an edge of the "
                         "values tried, inside its ladder): run `tune_all` again to grow it")
    ends = summary[~summary.interior]
    if len(ends):
        text += (", or the ladder ends: " + ", ".join(f"`{r.variant}` chose {r.chosen:g}, the end of its ladder"
                                                     for r in ends.itertuples()))
    return text + "."


# ----------------------------------------------------------------------------- the committed files of `make ablations`

def committed_files(budget: str = "cpu") -> dict[str, Path]:
    """The files `reproduce_ablations` commits beside the notebooks: every tuning trial, every run's
    convergence, every run's test ranks."""
    return {"tuning": tuning_file(budget),
            "convergence": PATHS.notebooks / f"ablations-convergence-{budget}.csv",
            "ranks": PATHS.notebooks / f"ablations-ranks-{budget}.npz"}


def load_committed(budget: str = "cpu") -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    """The committed outputs of `make ablations` -> (tuning table, convergence table, {variant: ranks per seed},
    {(model, fraction): ranks per seed}); a clear error when one is missing."""
    files = committed_files(budget)
    for f in files.values():
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: it is committed with the course, so restore it "
                                    f"(`git checkout -- {f.parent.name}/{f.name}`) or recompute it with `make ablations` "
                                    "(the tuning, then every variant and the data-scale curve with 3 seeds: hours "
                                    "on a 2-core CPU; it resumes where it stopped)")
    variants, scale = load_ranks(files["ranks"])
    return read_tuning(files["tuning"]), pd.read_csv(files["convergence"]), variants, scale


def reproduce_ablations(budget: str = "cpu") -> Path:
    """Everything 08 shows, outside the tests: the tuning of every variant of `TUNED` (resumable from the
    committed tuning table), every variant at its choice and the data-scale curve with 3 seeds, ranked on the
    1K test set (resumable from the committed ranks). Writes the tuning, convergence and ranks files to
    notebooks/ (`committed_files`) and the tables to results/ablations.md."""
    feats = load_course_features(progress=True)
    files = committed_files(budget)
    tuning = tune_all(feats, budget)
    variants, scale = all_ranks(feats, tuning, budget, SEEDS, path=files["ranks"])
    write_csv(convergence_table(tuning, budget, path=files["ranks"]), files["convergence"], index=False)
    baseline = []
    for s in seeds_for(BASELINE):
        course_run(BASELINE, feats, budget, s)
        baseline.append(rank_run(train_config(BASELINE, budget, s), feats))
    return write_tables(tables(tuning, variants, scale, baseline, feats["test"].caption_image))
