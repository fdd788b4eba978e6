"""Notebook 08's runs and tables: the blog's bugs and the readers' proposals, each as one change to `decoupled`,
the weight sweep of every added loss term, and the data-scale curve.

Every variant is `decoupled`'s training configuration (the setting 05's search chose for it) with exactly
one field changed (`variant_config`); the models are in `helpers.models`, the added losses in
`helpers.losses`, the pre-training in `helpers.pretraining`. The runs are costly (54), so `make ablations`
(`python -m helpers ablations`, `reproduce_ablations`) trains them outside the tests and commits three
files beside the notebooks: the sweep, one row per run, every run's test ranks. Notebook 08 reads them
(`load_committed`) and retrains one variant to check them.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from .. import intervals, metrics
from ..atomic import atomic_path
from ..checkpoints import save_checkpoint
from ..config import PATHS
from ..features import FeatureSet
from ..pretraining import pretrain_projections
from ..train import TrainConfig, TrainResult, make_model
from .feature_cache import load_course_features
from .recipes import run_dir, seeds_for, train_config
from .runs import course_run, rank_run, train_run

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
AUX_WEIGHTS = (0.1, 1.0, 10.0)            # the sweep of each added term's weight (seed 0, validation rSum)
SEEDS = (0, 1, 2)
SCALE_MODELS = ("dual", "decoupled", "joint")
SCALE_FRACTIONS = (0.25, 0.5, 1.0)        # 1.0 is notebook 06's runs


def swept(variant: str) -> bool:
    return VARIANTS[variant][2].get("model") in ("local_consistency", "word_diversity", "masked_reconstruction")


# ----------------------------------------------------------------------------- the runs

def pretrained_projections(budget: str, seed: int) -> str:
    """Where the SimCLR-pre-trained projections of `decoupled`'s seed-`seed` model are kept (relative to
    runs/, as `TrainConfig.init_from` takes it): named after the run whose model they start from."""
    return f"pretrained/{run_dir(train_config(BASELINE, budget, seed)).name}.pt"


def variant_config(variant: str, budget: str = "cpu", seed: int = 0, aux_weight: float | None = None) -> TrainConfig:
    """`decoupled`'s training configuration (the setting chosen in 05) with the variant's one change."""
    change = dict(VARIANTS[variant][2])
    cfg = train_config(BASELINE, budget, seed)
    if swept(variant):
        if aux_weight is None:
            raise ValueError(f"{variant} needs aux_weight (the sweep's choice: `chosen_weight`)")
        change["model_overrides"] = {**cfg.model_overrides, "aux_weight": aux_weight}
    if "init_from" in change:
        change["init_from"] = pretrained_projections(budget, seed)
    return dataclasses.replace(cfg, **change)


def pretrain(cfg: TrainConfig, feats: dict[str, FeatureSet]) -> None:
    """Write the pre-trained projections `cfg.init_from` names, unless they are there: the projections of
    the model `cfg` starts from, SimCLR on the training split's images and captions, each alone."""
    path = PATHS.runs / cfg.init_from
    if path.is_file():
        return
    model = make_model(dataclasses.replace(cfg, init_from=""), feats["train"])
    pretrain_projections(model, feats["train"], seed=cfg.seed)
    save_checkpoint({k: v for k, v in model.state_dict().items() if k.startswith(("image_proj", "text_proj"))}, path)


def train_variant(variant: str, feats: dict[str, FeatureSet], budget: str = "cpu", seed: int = 0,
                  aux_weight: float | None = None) -> TrainResult:
    """Train (or reuse) one run of a variant; `pretrained` pre-trains its projections first (once per seed)."""
    cfg = variant_config(variant, budget, seed, aux_weight)
    if cfg.init_from:
        pretrain(cfg, feats)
    return train_run(cfg, feats)


def sweep(variant: str, feats, budget: str = "cpu") -> pd.DataFrame:
    """Seed 0 of a swept variant at every AUX_WEIGHTS -> weight, best val rSum, the term's share of the
    training loss at the best epoch (%), best epoch."""
    rows = []
    for w in AUX_WEIGHTS:
        result = train_variant(variant, feats, budget, 0, w)
        best = result.history.loc[result.history.epoch == result.best["epoch"]].iloc[0]
        rows.append({"variant": variant, "weight": w, "val rsum": best["rsum"],
                     "share of loss %": 100 * best[variant] / best["train_loss"], "best epoch": result.best["epoch"],
                     "epochs": len(result.history)})
    return pd.DataFrame(rows)


def chosen_weight(table: pd.DataFrame, variant: str) -> float:
    """The sweep's weight with the best validation rSum."""
    rows = table[table.variant == variant]
    return float(rows.loc[rows["val rsum"].idxmax(), "weight"])


def one_change(sweep_table: pd.DataFrame, budget: str = "cpu") -> pd.DataFrame:
    """Per variant: what differs from `decoupled`'s training configuration (seed 0), field by field."""
    base = dataclasses.asdict(train_config(BASELINE, budget, 0))
    rows = []
    for name, (group, change, how) in VARIANTS.items():
        weight = chosen_weight(sweep_table, name) if swept(name) else None
        cfg = dataclasses.asdict(variant_config(name, budget, 0, weight))
        diffs = {k: v for k, v in cfg.items() if v != base[k]}
        if "model_overrides" in diffs:
            diffs["model_overrides"] = {k: v for k, v in diffs["model_overrides"].items()
                                        if base["model_overrides"].get(k) != v}
        if "init_from" in diffs:
            diffs["init_from"] = "the projections pre-trained with SimCLR (helpers.pretraining)"
        if "image_features" in diffs:
            diffs["image_features"] = "test/val/train images as (N, 1, 1000) ImageNet logits"
        rows.append({"group": group, "variant": name, "change": change,
                     "differs from decoupled in": "; ".join(f"{k} = {v}" for k, v in diffs.items())})
    return pd.DataFrame(rows)


def scale_config(model: str, fraction: float, budget: str = "cpu", seed: int = 0) -> TrainConfig:
    """`model`'s course run on the first `fraction` of the training images (validation and test stay whole);
    the full training set is notebook 06's run of the model."""
    return train_config(model, budget, seed, train_fraction=fraction)


def all_ranks(feats: dict[str, FeatureSet], budget: str = "cpu", seeds=SEEDS, sweep_table: pd.DataFrame | None = None
              ) -> tuple[dict[str, list[dict]], dict[tuple[str, float], list[dict]]]:
    """Train (or reuse) every variant (swept ones at their chosen weight) and every point of the data-scale
    curve, and rank the 1K test set -> ({variant: [ranks per seed]}, {(model, fraction): [ranks per seed]})."""
    variants = {}
    for name in VARIANTS:
        weight = chosen_weight(sweep_table, name) if swept(name) else None
        variants[name] = []
        for s in seeds:
            train_variant(name, feats, budget, s, weight)
            variants[name].append(rank_run(variant_config(name, budget, s, weight), feats))
    scale = {}
    for model in SCALE_MODELS:
        for f in SCALE_FRACTIONS:
            scale[model, f] = []
            for s in seeds:
                cfg = scale_config(model, f, budget, s)
                train_run(cfg, feats)
                scale[model, f].append(rank_run(cfg, feats))
    return variants, scale


def run_log(sweep_table: pd.DataFrame, budget: str = "cpu") -> pd.DataFrame:
    """One row per run of `make ablations` (sweep, variants, the scale curve's new points), from its
    history.csv: epochs trained, best epoch, training seconds (validation included), whether its best epoch
    came before its last (converged by the course's rule), and how much its best validation rSum gained in
    its last 3 epochs (0 when it stopped early). A swept variant's seed-0 run at its chosen weight is both a
    sweep run and a variant run: "sweep + variant"."""
    runs: dict[Path, dict] = {}

    def add(kind, cfg, run, weight=np.nan, fraction=1.0):
        folder = run_dir(cfg)
        if folder in runs:
            runs[folder]["kind"] = "sweep + variant"
        else:
            runs[folder] = {"kind": kind, "run": run, "weight": weight, "fraction": fraction, "seed": cfg.seed}

    for variant in (v for v in VARIANTS if swept(v)):
        for w in AUX_WEIGHTS:
            add("sweep", variant_config(variant, budget, 0, w), variant, w)
    for variant in VARIANTS:
        weight = chosen_weight(sweep_table, variant) if swept(variant) else None
        for s in SEEDS:
            add("variant", variant_config(variant, budget, s, weight), variant, np.nan if weight is None else weight)
    for model in SCALE_MODELS:
        for f in (f for f in SCALE_FRACTIONS if f < 1):
            for s in SEEDS:
                add("scale", scale_config(model, f, budget, s), model, fraction=f)
    rows = []
    for folder, row in runs.items():
        if not (folder / "history.csv").is_file():
            continue
        h = pd.read_csv(folder / "history.csv")
        rows.append({**row, "epochs": len(h), "best epoch": int(h.loc[h.rsum.idxmax(), "epoch"]),
                     "training s": float(h.seconds.sum()),
                     "gain in last 3 epochs": float(h.rsum.max() - h.rsum.iloc[:-3].max()) if len(h) > 3 else np.nan})
    log = pd.DataFrame(rows)
    if len(log):
        log["best before last"] = log["best epoch"] < log["epochs"]
    return log


# ----------------------------------------------------------------------------- the tables

def _pairs(runs: list[dict]) -> list[tuple]:
    return [(r["img_rank"], r["cap_rank"]) for r in runs]


def ablation_table(variants: dict[str, list[dict]], baseline: list[dict], caption_image, n_boot: int = 1000
                   ) -> pd.DataFrame:
    """Every variant against `decoupled` on test rSum: points with a 95% interval (`intervals.honest_difference`:
    test images resampled with their captions, plus a Student-t seed term) and the verdict."""
    rows, order = [], list(VARIANTS)
    for name, runs in sorted(variants.items(), key=lambda kv: order.index(kv[0])):   # the course's order
        d = intervals.honest_difference(_pairs(runs), _pairs(baseline), caption_image, n_boot=n_boot).loc["rsum"]
        group, change, _ = VARIANTS[name]
        rows.append({"group": group, "variant": name, "change": change, "seeds": len(runs), "rsum": d["A"],
                     "baseline rsum": d["B"], "difference": d["diff"], "lo": d["lo"], "hi": d["hi"],
                     "verdict": metrics.verdict(d["lo"], d["hi"]).replace("A ", "")})
    return pd.DataFrame(rows)


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


def tables(sweep_table: pd.DataFrame, variants: dict, scale: dict, baseline: list[dict], caption_image) -> dict:
    """The three tables of 08 (and of results/ablations.md), from the runs' test ranks."""
    return {"Sweeps (seed 0, validation)": sweep_table,
            f"Variants vs {BASELINE} (test rSum)": ablation_table(variants, baseline, caption_image),
            "Data scale (test rSum)": scale_table(scale, caption_image),
            "How the gaps move with data (test rSum)": gap_table(scale, caption_image)}


def write_tables(tables: dict[str, pd.DataFrame]) -> Path:
    """{title: table} -> results/ablations.md (each table as text, 2 decimals); -> its path."""
    out = PATHS.results / "ablations.md"
    with atomic_path(out) as tmp:
        tmp.write_text("".join(f"## {title}\n```\n{t.round(2).to_string(index=False)}\n```\n\n"
                               for title, t in tables.items()))
    return out


# ----------------------------------------------------------------------------- the committed files

def committed_files(budget: str = "cpu") -> dict[str, Path]:
    """The files `make ablations` commits beside the notebooks: the sweep, the run log, every run's test ranks."""
    return {"sweep": PATHS.notebooks / f"ablations-sweep-{budget}.csv",
            "runs": PATHS.notebooks / f"ablations-runs-{budget}.csv",
            "ranks": PATHS.notebooks / f"ablations-ranks-{budget}.npz"}


def save_ranks(variants: dict, scale: dict, path: Path) -> None:
    """Every run's test ranks in one .npz: 'variant|name|seed|img' / '|cap', 'scale|model|fraction|seed|...'."""
    arrays = {}
    for name, runs in variants.items():
        for s, r in zip(SEEDS, runs):
            arrays[f"variant|{name}|{s}|img"], arrays[f"variant|{name}|{s}|cap"] = r["img_rank"], r["cap_rank"]
    for (model, f), runs in scale.items():
        for s, r in zip(SEEDS, runs):
            arrays[f"scale|{model}|{f:g}|{s}|img"], arrays[f"scale|{model}|{f:g}|{s}|cap"] = r["img_rank"], r["cap_rank"]
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **{k: v.astype(np.int16) for k, v in arrays.items()})


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


def load_committed(budget: str = "cpu") -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    """The committed outputs of `make ablations` -> (sweep table, run log, {variant: ranks per seed},
    {(model, fraction): ranks per seed}); a clear error when one is missing."""
    files = committed_files(budget)
    for f in files.values():
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: it is committed with the course, so restore it "
                                    f"(`git checkout -- {f.parent.name}/{f.name}`) or recompute it with "
                                    f"`make ablations` (54 runs: about 1.2 h of training on a 2-core CPU, plus ranking each on the test set)")
    variants, scale = load_ranks(files["ranks"])
    return pd.read_csv(files["sweep"]), pd.read_csv(files["runs"]), variants, scale


def reproduce_ablations(budget: str = "cpu") -> Path:
    """Everything 08 shows, outside the tests: the weight sweeps, every variant and every point of the
    data-scale curve with 3 seeds, ranked on the 1K test set. Writes the sweep table, the run log and the
    ranks to notebooks/ (committed, read by 08) and the tables to results/ablations.md."""
    feats = load_course_features(progress=True)
    files = committed_files(budget)
    table = pd.concat([sweep(v, feats, budget) for v in VARIANTS if swept(v)], ignore_index=True)
    with atomic_path(files["sweep"]) as tmp:
        table.to_csv(tmp, index=False)
    variants, scale = all_ranks(feats, budget, SEEDS, table)
    save_ranks(variants, scale, files["ranks"])
    with atomic_path(files["runs"]) as tmp:
        run_log(table, budget).to_csv(tmp, index=False)
    baseline = []
    for s in seeds_for(BASELINE):
        course_run(BASELINE, feats, budget, s)
        baseline.append(rank_run(train_config(BASELINE, budget, s), feats))
    return write_tables(tables(table, variants, scale, baseline, feats["test"].caption_image))
