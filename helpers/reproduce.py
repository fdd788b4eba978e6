"""The whole pipeline without notebooks: features, every model with several seeds, evaluation, the table.

`python -m helpers reproduce [--seeds 3] [--budget cpu|gpu]` calls the same functions as notebooks
05 and 06; finished runs and their test rankings are reused from `runs/`, so a rerun takes seconds.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import metrics, models
from .config import PATHS
from .features import FeatureSet, load_course_features
from .train import TrainConfig, TrainResult, load_result, train

MODEL_NAMES = ("dual", "joint", "decoupled", "decoupled_plus")

# One switch: the CPU budget runs in minutes on 2 cores; the GPU budget trains longer on bigger batches.
BUDGETS = {
    "cpu": dict(epochs=6, batch_size=64, lr=2e-3),
    "gpu": dict(epochs=30, batch_size=256, lr=1e-3, device="auto"),   # CUDA when visible, bf16 autocast
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


# ------------------------------------------------------------------------------ the claim table

CLAIMED_GAIN = 8.5            # the blog: "+8.5% cross-modal retrieval accuracy" (read as relative %)
METRICS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "rsum")
COMPARISONS = [("decoupled", "joint"), ("decoupled", "dual"), ("decoupled_plus", "joint"),
               ("decoupled_plus", "dual"), ("decoupled_plus", "decoupled")]
ANCHORS = {"VSE++ (ResNet-152, fine-tuned)": 478.6, "SCAN t→i (Faster R-CNN regions)": 500.5}


def evaluate_all(feats, model_names=MODEL_NAMES, seeds=(0, 1, 2), budget: str = "cpu") -> dict[str, list[dict]]:
    """Train (or reuse) every model with every seed and rank the 1K test set -> {model: [ranks per seed]}."""
    out = {}
    for name in model_names:
        out[name] = []
        for s in seeds:
            train_run(name, feats, budget, s)
            out[name].append(rank_on_test(name, feats, budget, s))
    return out


def results_table(ranks: dict[str, list[dict]], n_boot: int = 1000) -> pd.DataFrame:
    """Per model: every recall and rSum as mean ± std over seeds with a 95% interval (queries and seeds resampled)."""
    rows = []
    for name, runs in ranks.items():
        t = metrics.model_interval([(r["img_rank"], r["cap_rank"]) for r in runs], n_boot=n_boot)
        for m in METRICS:
            rows.append({"model": name, "metric": m, **t.loc[m].to_dict(), "seeds": len(runs)})
    return pd.DataFrame(rows)


def claims_table(ranks: dict[str, list[dict]], n_boot: int = 1000, claimed: float = CLAIMED_GAIN) -> pd.DataFrame:
    """A vs B for each comparison and metric: absolute and relative differences with 95% intervals and a
    verdict on the claim "A beats B by +claimed %" computed from the relative interval (metrics.verdict)."""
    rows = []
    for a, b in COMPARISONS:
        if a not in ranks or b not in ranks:
            continue
        d = metrics.paired_difference([(r["img_rank"], r["cap_rank"]) for r in ranks[a]],
                                      [(r["img_rank"], r["cap_rank"]) for r in ranks[b]], n_boot=n_boot)
        for m in METRICS:
            row = d.loc[m]
            rows.append({"A": a, "B": b, "metric": m, "A mean": row["A"], "B mean": row["B"],
                         "diff (points)": row["diff"], "diff lo": row["lo"], "diff hi": row["hi"],
                         "rel %": row["rel_%"], "rel lo": row["rel_lo"], "rel hi": row["rel_hi"],
                         "verdict": metrics.verdict(row["rel_lo"], row["rel_hi"], claimed)})
    return pd.DataFrame(rows)


def with_interval(value: float, lo: float, hi: float, fmt: str = "{:+.1f}") -> str:
    """'value [lo, hi]', all three in one number format (signed by default, for differences)."""
    return f"{fmt.format(value)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def results_for_reading(results: pd.DataFrame) -> pd.DataFrame:
    """`results_table` -> models x metrics of 'mean ± std  [lo, hi]' strings."""
    cells = [f"{r['mean']:.1f} ± {r['std']:.1f}  [{r['lo']:.1f}, {r['hi']:.1f}]" for _, r in results.iterrows()]
    table = results.assign(value=cells).pivot(index="model", columns="metric", values="value")
    return table.loc[[m for m in MODEL_NAMES if m in table.index], [m for m in METRICS if m in table.columns]]


def claims_for_reading(claims: pd.DataFrame) -> pd.DataFrame:
    """`claims_table` with each difference and its interval as one 'x [lo, hi]' column (points and %)."""
    both = lambda v, lo, hi: [with_interval(*t) for t in zip(claims[v], claims[lo], claims[hi])]  # noqa: E731
    return claims.assign(**{"diff (points) [95%]": both("diff (points)", "diff lo", "diff hi"),
                            "relative % [95%]": both("rel %", "rel lo", "rel hi")}
                         )[["A", "B", "metric", "A mean", "B mean", "diff (points) [95%]", "relative % [95%]",
                            "verdict"]]


def markdown_table(results: pd.DataFrame, claims: pd.DataFrame) -> str:
    """The headline table (rSum per model) and the claim rows on rSum, as markdown."""
    lines = ["| model | rSum (mean ± std over seeds) | 95% interval | seeds |", "|---|---|---|---|"]
    for r in results[results.metric == "rsum"].itertuples():
        lines.append(f"| {r.model} | {r.mean:.1f} ± {r.std:.1f} | [{r.lo:.1f}, {r.hi:.1f}] | {r.seeds} |")
    lines += ["", f"| claim: A beats B by +{CLAIMED_GAIN}% (rSum) | relative difference | 95% interval | verdict |",
              "|---|---|---|---|"]
    for _, r in claims[claims.metric == "rsum"].iterrows():
        lines.append(f"| {r['A']} vs {r['B']} | {r['rel %']:+.1f}% | [{r['rel lo']:+.1f}%, {r['rel hi']:+.1f}%] "
                     f"| {r['verdict']} |")
    return "\n".join(lines)


def write_results(results: pd.DataFrame, claims: pd.DataFrame, folder: Path | None = None) -> Path:
    """results/retrieval.json, results/claims.json and results/table.md."""
    folder = Path(folder or PATHS.results)
    folder.mkdir(parents=True, exist_ok=True)
    results.to_json(folder / "retrieval.json", orient="records", indent=1)
    claims.to_json(folder / "claims.json", orient="records", indent=1)
    (folder / "table.md").write_text(markdown_table(results, claims) + "\n")
    return folder / "table.md"


def reproduce(seeds: int = 3, budget: str = "cpu", model_names=MODEL_NAMES) -> Path:
    """Prepare data, extract features, train every model with `seeds` seeds, evaluate, write results/."""
    from . import data

    data.prepare()
    feats = load_course_features(progress=True)
    ranks = evaluate_all(feats, model_names, tuple(range(seeds)), budget)
    return write_results(results_table(ranks), claims_table(ranks))


# ------------------------------------------------------- unimodal probes, mixing, pointing game

KEPT_MARGIN = 2.0   # mAP points a representation may lose against the raw features and still count as "kept"


def load_runs(name: str, budget: str = "cpu", seeds=(0, 1, 2)) -> list:
    """The best checkpoint of each seed's run of `name` (train them first)."""
    return [load_result(run_dir(name, budget, s)).model for s in seeds]


def probe_results(feats, subset, budget: str = "cpu", seeds=(0, 1, 2), model_names=MODEL_NAMES) -> pd.DataFrame:
    """Linear-probe mAP (caption-mined categories) of the raw features and of each model's image and
    text sides (one caption per image), and the modality-probe accuracy (1.0 = image and text vectors
    separable, 0.5 = mixed), per seed -> DataFrame: representation, seed, image mAP, text mAP, modality probe.

    `joint` appears twice: its mixed vectors (what it matches with, text content included) and its
    vectors before mixing; only the latter say what its image side keeps on its own.
    """
    from . import probes

    train_fs, test_fs = feats["train"], feats["test"]
    y_train, y_test, names = probes.category_targets(subset, train_fs, test_fs)

    def probe(name, reps_of, seed):
        tr, te = reps_of(train_fs), reps_of(test_fs)                 # computed once, used by both probes
        t = probes.probe_table({name: {"train": tr, "test": te}}, train_fs, test_fs, y_train, y_test, names)
        if seed >= 0:                                                 # raw features differ in width: no modality probe
            t["modality probe"] = probes.modality_probe(tr["image"], tr["text"], te["image"], te["text"])
        return t.assign(seed=seed).rename_axis("representation").reset_index()

    rows = [probe("raw features", lambda fs: probes.raw_representations(fs, captions="one"), -1)]
    for name in model_names:
        for s, model in zip(seeds, load_runs(name, budget, seeds)):
            rows.append(probe(name, lambda fs: probes.representations(model, fs, captions="one"), s))
            if name == "joint":
                rows.append(probe("joint (before mixing)",
                                  lambda fs: probes.representations(model, fs, captions="one", mixed=False), s))
    return pd.concat(rows, ignore_index=True)


def kept_table(probe_df: pd.DataFrame, margin: float = KEPT_MARGIN) -> pd.DataFrame:
    """Per model and modality: probe mAP minus the raw features' mAP, in points (mAP × 100), over seeds
    (mean, 95% t-interval) and the verdict on "unimodal performance kept" (metrics.verdict_kept: no
    loss larger than `margin` points is credible)."""
    raw = probe_df[probe_df.representation == "raw features"].iloc[0]
    rows = []
    for name, g in probe_df[probe_df.representation != "raw features"].groupby("representation", sort=False):
        for side in ("image mAP", "text mAP"):
            s = metrics.seed_summary(100 * (g[side] - raw[side]))
            rows.append({"model": name, "modality": side.split()[0], "raw mAP": 100 * raw[side],
                         "model mAP": 100 * g[side].mean(),
                         "change": s["mean"], "lo": s["lo"], "hi": s["hi"],
                         "verdict (kept)": metrics.verdict_kept(s["lo"], s["hi"], margin)})
    return pd.DataFrame(rows)


def pointing_results(feats, subset, budget: str = "cpu", seeds=(0, 1, 2),
                     model_names=("joint", "decoupled", "decoupled_plus")) -> pd.DataFrame:
    """Pointing game per model and seed on the instance-labelled test images -> hit rate, uniform baseline."""
    from . import interpret

    rows = []
    tokenizer = interpret.load_tokenizer()
    for name in model_names:
        for s, model in zip(seeds, load_runs(name, budget, seeds)):
            summary = interpret.pointing_summary(interpret.pointing_game(model, feats["test"], subset, tokenizer))
            rows.append({"model": name, "seed": s, **dict(summary)})
    return pd.DataFrame(rows)


def pointing_verdicts(pointing: pd.DataFrame) -> pd.DataFrame:
    """Pointing-game comparisons over seeds (95% t-interval, points): each model against the uniform and
    the centre-cell baselines, and decoupled against joint; verdict = metrics.verdict (better or not)."""
    rows = []

    def add(label, values):
        s = metrics.seed_summary(np.asarray(values) * 100)
        rows.append({"comparison": label, "difference (points)": s["mean"], "lo": s["lo"], "hi": s["hi"],
                     "verdict": metrics.verdict(s["lo"], s["hi"])})

    for name, g in pointing.groupby("model", sort=False):
        add(f"{name} vs uniform attention", g.difference)
        add(f"{name} vs centre cell", g.vs_centre)
    if {"decoupled", "joint"} <= set(pointing.model):
        by = pointing.set_index(["model", "seed"]).hit_rate
        add("decoupled vs joint", by["decoupled"].to_numpy() - by["joint"].to_numpy())
    return pd.DataFrame(rows)


def verdict_table(claims: pd.DataFrame, kept: pd.DataFrame, pointing_v: pd.DataFrame) -> pd.DataFrame:
    """The blog's claims beside what the course measured (95% intervals) and the computed verdicts."""
    h = claims.query("A == 'decoupled' and B == 'joint' and metric == 'rsum'").iloc[0]
    rows = [("+8.5% retrieval over joint training (rSum)",
             f"decoupled vs joint {h['rel %']:+.1f}% [{h['rel lo']:+.1f}, {h['rel hi']:+.1f}]", h["verdict"])]
    for side in ("image", "text"):
        k = kept.query("model == 'decoupled' and modality == @side").iloc[0]
        rows.append((f"unimodal performance kept ({side})",
                     f"probe mAP vs raw features {k['change']:+.1f} points [{k['lo']:+.1f}, {k['hi']:+.1f}] "
                     f"(margin {KEPT_MARGIN})", k["verdict (kept)"]))
    p = pointing_v.set_index("comparison")
    for label, key in [("attention points at the named object", "decoupled vs uniform attention"),
                       ("... better than always pointing at the centre", "decoupled vs centre cell"),
                       ("better interpretability than joint training", "decoupled vs joint")]:
        if key in p.index:
            r = p.loc[key]
            rows.append((label, f"pointing game, {key}: {r['difference (points)']:+.1f} points "
                                f"[{r['lo']:+.1f}, {r['hi']:+.1f}]", r["verdict"]))
    return pd.DataFrame(rows, columns=["the blog claims", "the course measures (95% interval)", "verdict"])
