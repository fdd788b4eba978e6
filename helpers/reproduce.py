"""The whole pipeline without notebooks: features, every model with several seeds, evaluation, the table.

`python -m helpers reproduce [--seeds 3] [--budget cpu|gpu]` calls the same functions as notebooks
05 and 06; finished runs and their test rankings are reused from `runs/`, so a rerun takes seconds.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics, models, parallel_runs
from .atomic import atomic_path
from .config import PATHS
from .checkpoints import load_checkpoint
from .features import FeatureSet, load_course_features
from .train import TrainConfig, TrainResult, finished, load_result, train

# The factorial (flow x head, see helpers.models) and the blog's module as written.
MODEL_NAMES = ("dual", "dual_words", "decoupled_pooled", "decoupled", "joint", "joint_words", "blog")
HEADLINE = ("decoupled", "joint")      # the primary comparison: the blog's claim, its two models
HEADLINE_SEEDS = (0, 1, 2, 3, 4)       # 5 seeds for the headline models
OTHER_SEEDS = (0, 1, 2)                # 3 for the rest of the factorial

# One switch: the CPU budget runs in minutes on 2 cores; the GPU budget trains on bigger batches.
# `epochs` is the most a run may take (its cosine schedule spans them); early stopping ends a run once
# validation rSum has not improved for `patience` epochs, and the best epoch's weights are kept.
BUDGETS = {
    "cpu": dict(epochs=20, patience=3, batch_size=64, lr=2e-3),
    "gpu": dict(epochs=60, patience=5, batch_size=256, lr=1e-3, device="auto"),   # CUDA, bf16 autocast
}


def seeds_for(model: str) -> tuple[int, ...]:
    return HEADLINE_SEEDS if model in HEADLINE else OTHER_SEEDS


def train_config(model: str, budget: str = "cpu", seed: int = 0, setting: dict | None = None,
                 **overrides) -> TrainConfig:
    """The course's training configuration for `model` under a budget ('cpu' or 'gpu'), with the
    learning rate and initial temperature the search chose for it (`tuning.chosen_setting`), or the
    given `setting` ({'lr', 'init_temperature'}); without either, the budget's defaults."""
    from .tuning import chosen_setting

    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {sorted(BUDGETS)}")
    cfg = {**BUDGETS[budget]}
    setting = setting if setting is not None else chosen_setting(model, budget)
    if setting is not None:
        cfg["lr"] = setting["lr"]
        cfg["model_overrides"] = {**cfg.get("model_overrides", {}), "init_temperature": setting["init_temperature"]}
    return TrainConfig(model=model, seed=seed, progress=False, **{**cfg, **overrides})


def run_dir(model: str, budget: str = "cpu", seed: int = 0) -> Path:
    return PATHS.runs / f"{model}-{budget}-seed{seed}"


def train_run(model: str, feats: dict[str, FeatureSet], budget: str = "cpu", seed: int = 0) -> TrainResult:
    """Train one model with one seed (or reuse the finished run in runs/)."""
    return train(train_config(model, budget, seed), feats["train"], feats["val"], run_dir(model, budget, seed))


def train_all(feats: dict[str, FeatureSet], budget: str = "cpu", seed: int = 0,
              model_names=MODEL_NAMES) -> dict[str, TrainResult]:
    """`train_run` for every model with one seed -> {model: TrainResult}. Missing runs are first trained
    side by side (`parallel_runs`, speed only)."""
    parallel_runs.run_missing(_jobs([(name, seed) for name in model_names], budget), feats, rank=False)
    return {name: train_run(name, feats, budget, seed) for name in model_names}


def needs_work(cfg: TrainConfig, folder: Path, rank: bool = False) -> bool:
    """Is the run in `folder` unfinished (or, with `rank`, its test ranking missing or older than best.pt)?"""
    folder = Path(folder)
    if not (folder / "last.pt").is_file() or not (folder / "best.pt").is_file():
        return True
    last = load_checkpoint(folder / "last.pt")
    if not finished(cfg, last["epoch"], last["best"]["epoch"]):
        return True
    return rank and not ranking_is_fresh(folder)


def ranking_is_fresh(folder: Path) -> bool:
    """Does `folder` hold test ranks written after its best checkpoint (test_ranks.npz, by `rank_folder`)?"""
    cache = Path(folder) / "test_ranks.npz"
    return cache.is_file() and cache.stat().st_mtime >= (Path(folder) / "best.pt").stat().st_mtime


def _jobs(pairs, budget: str) -> list[tuple[TrainConfig, Path]]:
    """[(model, seed)] -> [(TrainConfig, run folder)], the models without attention (seconds each) last."""
    pairs = sorted(pairs, key=lambda p: p[0] in ("dual", "dual_words"))
    return [(train_config(m, budget, s), run_dir(m, budget, s)) for m, s in pairs]


def rank_on_test(model: str, feats: dict[str, FeatureSet], budget: str = "cpu", seed: int = 0,
               device: str = "cpu") -> dict:
    """Ranks of the best checkpoint on the 1K test set (cached beside the checkpoint) and the scoring time.

    -> {'img_rank': (N_img,) ndarray, 'cap_rank': (N_cap,) ndarray, 'seconds': float}
    """
    return rank_folder(run_dir(model, budget, seed), feats["test"], device)


def rank_folder(folder: Path, test_fs: FeatureSet, device: str = "cpu") -> dict:
    """`rank_on_test` for the run in `folder`, ranked on `test_fs`."""
    cache = folder / "test_ranks.npz"
    if ranking_is_fresh(folder):
        z = np.load(cache)
        return {"img_rank": z["img_rank"], "cap_rank": z["cap_rank"], "seconds": float(z["seconds"])}
    result = load_result(folder, device)
    start = time.perf_counter()
    scores = models.score_all(result.model, test_fs, device=device)
    seconds = time.perf_counter() - start
    img_rank, cap_rank = metrics.ranks(scores, test_fs.caption_image)
    with atomic_path(cache) as tmp:
        np.savez(tmp, img_rank=img_rank, cap_rank=cap_rank, seconds=seconds)
    return {"img_rank": img_rank, "cap_rank": cap_rank, "seconds": seconds}


# ------------------------------------------------------------------------------ the claim table

CLAIMED_GAIN = 8.5            # the blog: "+8.5% cross-modal retrieval accuracy" (metric and baseline unspecified)
METRICS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "rsum")
# The course's readings of the blog's sentence, declared before any number: the primary comparison is
# decoupled vs joint on rSum, relative %; the same pair on R@1 and in absolute points are the other readings.
READINGS = [("rsum", "relative %"), ("rsum", "points"), ("i2t_R@1", "relative %"), ("i2t_R@1", "points"),
            ("t2i_R@1", "relative %"), ("t2i_R@1", "points")]
# Secondary comparisons: one factor changed at a time (no claim was made about them: verdicts say only
# which way the difference credibly goes).
FACTORIAL = [("decoupled", "dual_words", "flow: text->image vs none (per-word head)"),
             ("decoupled_pooled", "dual", "flow: text->image vs none (pooled head)"),
             ("joint_words", "decoupled", "flow: both vs text->image (per-word head)"),
             ("joint", "decoupled_pooled", "flow: both vs text->image (pooled head)"),
             ("dual_words", "dual", "head: per-word vs pooled (no flow)"),
             ("decoupled", "decoupled_pooled", "head: per-word vs pooled (text->image)"),
             ("joint_words", "joint", "head: per-word vs pooled (both)"),
             ("blog", "decoupled", "the blog's module as written vs corrected")]
ANCHORS = {"VSE++ (ResNet-152, fine-tuned)": 478.6, "SCAN t→i (Faster R-CNN regions)": 500.5}


def evaluate_all(feats, model_names=MODEL_NAMES, seeds=None, budget: str = "cpu") -> dict[str, list[dict]]:
    """Train (or reuse) every model with its seeds (`seeds_for`, or the given ones) and rank the 1K test
    set -> {model: [ranks per seed]}."""
    pairs = [(name, s) for name in model_names for s in (seeds if seeds is not None else seeds_for(name))]
    parallel_runs.run_missing(_jobs(pairs, budget), feats, rank=True)       # speed only: runs side by side
    out = {}
    for name in model_names:
        out[name] = []
        for s in (seeds if seeds is not None else seeds_for(name)):
            train_run(name, feats, budget, s)
            out[name].append(rank_on_test(name, feats, budget, s))
    return out


def _pairs(runs):
    return [(r["img_rank"], r["cap_rank"]) for r in runs]


def results_table(ranks: dict[str, list[dict]], caption_image, n_boot: int = 1000) -> pd.DataFrame:
    """Per model and metric: mean ± std over seeds and a 95% interval (test images resampled with
    their captions, plus a Student-t seed term: `metrics.honest_interval`)."""
    rows = []
    for name, runs in ranks.items():
        t = metrics.honest_interval(_pairs(runs), caption_image, n_boot=n_boot)
        for m in METRICS:
            rows.append({"model": name, "metric": m, **t.loc[m].to_dict(), "seeds": len(runs)})
    return pd.DataFrame(rows)


def difference(ranks, a: str, b: str, caption_image, n_boot: int = 1000) -> pd.DataFrame:
    """`metrics.honest_difference` of A vs B: metrics x [A, B, diff, lo, hi, rel_%, rel_lo, rel_hi]."""
    return metrics.honest_difference(_pairs(ranks[a]), _pairs(ranks[b]), caption_image, n_boot=n_boot)


def claims_table(ranks: dict[str, list[dict]], caption_image, n_boot: int = 1000,
                 claimed: float = CLAIMED_GAIN) -> pd.DataFrame:
    """The primary comparison (decoupled vs joint) under every reading of "+8.5%" in `READINGS`:
    the difference with its 95% interval and the verdict on the claim (`metrics.verdict`)."""
    d = difference(ranks, *HEADLINE, caption_image, n_boot)
    rows = []
    for m, reading in READINGS:
        r = d.loc[m]
        value, lo, hi = (r["rel_%"], r["rel_lo"], r["rel_hi"]) if reading == "relative %" else (r["diff"], r["lo"], r["hi"])
        rows.append({"A": HEADLINE[0], "B": HEADLINE[1], "metric": m, "reading": reading,
                     "A mean": r["A"], "B mean": r["B"], "difference": value, "lo": lo, "hi": hi,
                     "primary": (m, reading) == READINGS[0], "verdict": metrics.verdict(lo, hi, claimed)})
    return pd.DataFrame(rows)


def factorial_table(ranks: dict[str, list[dict]], caption_image, n_boot: int = 1000) -> pd.DataFrame:
    """The secondary comparisons (`FACTORIAL`, one factor at a time) on rSum: points with 95% interval."""
    rows = []
    for a, b, factor in FACTORIAL:
        if a in ranks and b in ranks:
            r = difference(ranks, a, b, caption_image, n_boot).loc["rsum"]
            rows.append({"comparison": f"{a} vs {b}", "changes": factor, "A": r["A"], "B": r["B"],
                         "difference": r["diff"], "lo": r["lo"], "hi": r["hi"],
                         "verdict": metrics.verdict(r["lo"], r["hi"])})
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
    """`claims_table` with each difference and its interval as one 'x [lo, hi]' column."""
    cells = [with_interval(*t) for t in zip(claims["difference"], claims["lo"], claims["hi"])]
    return claims.assign(**{"difference [95%]": cells})[
        ["metric", "reading", "primary", "A mean", "B mean", "difference [95%]", "verdict"]]


def markdown_table(results: pd.DataFrame, claims: pd.DataFrame, factorial: pd.DataFrame) -> str:
    """The rSum per model, the primary comparison's readings and the factorial, as markdown."""
    lines = ["| model | rSum (mean ± std over seeds) | 95% interval | seeds |", "|---|---|---|---|"]
    for r in results[results.metric == "rsum"].itertuples():
        lines.append(f"| {r.model} | {r.mean:.1f} ± {r.std:.1f} | [{r.lo:.1f}, {r.hi:.1f}] | {r.seeds} |")
    lines += ["", f"| claim: decoupled beats joint by +{CLAIMED_GAIN}% (reading) | difference | 95% interval | verdict |",
              "|---|---|---|---|"]
    for _, r in claims.iterrows():
        tag = " (primary)" if r["primary"] else ""
        lines.append(f"| {r['metric']}, {r['reading']}{tag} | {r['difference']:+.1f} | [{r['lo']:+.1f}, {r['hi']:+.1f}] "
                     f"| {r['verdict']} |")
    lines += ["", "| secondary comparison (rSum points) | changes | difference | 95% interval | verdict |",
              "|---|---|---|---|---|"]
    for _, r in factorial.iterrows():
        lines.append(f"| {r['comparison']} | {r['changes']} | {r['difference']:+.1f} | [{r['lo']:+.1f}, {r['hi']:+.1f}] "
                     f"| {r['verdict']} |")
    return "\n".join(lines)


def write_results(results: pd.DataFrame, claims: pd.DataFrame, factorial: pd.DataFrame,
                  folder: Path | None = None) -> Path:
    """results/retrieval.json, claims.json, factorial.json and table.md."""
    folder = Path(folder or PATHS.results)
    folder.mkdir(parents=True, exist_ok=True)
    results.to_json(folder / "retrieval.json", orient="records", indent=1)
    claims.to_json(folder / "claims.json", orient="records", indent=1)
    factorial.to_json(folder / "factorial.json", orient="records", indent=1)
    (folder / "table.md").write_text(markdown_table(results, claims, factorial) + "\n")
    return folder / "table.md"


def reproduce(seeds: int | None = None, budget: str = "cpu", model_names=MODEL_NAMES) -> Path:
    """Prepare data, extract features, train every model (with `seeds` seeds each, or the course's
    5 for the headline models and 3 for the others), evaluate, write results/."""
    from . import data

    data.prepare()
    feats = load_course_features(progress=True)
    ranks = evaluate_all(feats, model_names, None if seeds is None else tuple(range(seeds)), budget)
    cap = feats["test"].caption_image
    return write_results(results_table(ranks, cap), claims_table(ranks, cap), factorial_table(ranks, cap))


# ------------------------------------------------------- unimodal probes, mixing, pointing game

KEPT_MARGIN = 2.0   # mAP points a representation may lose against its control and still count as "kept"
CONTROL = "PCA-128 of raw features"   # the same-size control the "kept" verdict compares with
PROBED = ("dual", "decoupled", "joint", "blog")          # one model per flow, and the blog's module
POINTED = ("decoupled", "joint", "blog")                 # the models whose words attend over regions


def load_runs(name: str, budget: str = "cpu", seeds=None) -> list:
    """The best checkpoint of each seed's run of `name` (train them first); seeds default to `seeds_for`."""
    return [load_result(run_dir(name, budget, s)).model for s in (seeds if seeds is not None else seeds_for(name))]


def probe_results(feats, subset, budget: str = "cpu", model_names=PROBED) -> pd.DataFrame:
    """Linear-probe mAP (caption-mined categories) of the raw features, of two same-size controls
    (PCA-128 and a random 128-d projection of the raw features, `probes.same_size_controls`), and of
    each model's image and text sides (one caption per image), and the modality-probe accuracy
    (1.0 = image and text vectors separable, 0.5 = mixed), per seed -> DataFrame: representation,
    seed, image mAP, text mAP, modality probe.

    `joint` appears twice: its mixed vectors (what it matches with, text content included) and its
    vectors before mixing; only the latter say what its image side keeps on its own.
    """
    from . import probes

    train_fs, test_fs = feats["train"], feats["test"]
    y_train, y_test, names = probes.category_targets(subset, train_fs, test_fs)

    def probe(name, tr, te, seed, modality=True):
        t = probes.probe_table({name: {"train": tr, "test": te}}, train_fs, test_fs, y_train, y_test, names)
        if modality:                                                 # raw features differ in width
            t["modality probe"] = probes.modality_probe(tr["image"], tr["text"], te["image"], te["text"])
        return t.assign(seed=seed).rename_axis("representation").reset_index()

    raw_tr = probes.raw_representations(train_fs, captions="one")
    raw_te = probes.raw_representations(test_fs, captions="one")
    rows = [probe("raw features", raw_tr, raw_te, -1, modality=False)]
    for s in OTHER_SEEDS:                                             # PCA is deterministic: seed 0 only
        for name, reps in probes.same_size_controls(raw_tr, raw_te, seed=s).items():
            if name == CONTROL and s > 0:
                continue
            rows.append(probe(name, reps["train"], reps["test"], s if name != CONTROL else -1))
    for name in model_names:
        seeds = seeds_for(name)
        for s, model in zip(seeds, load_runs(name, budget, seeds)):
            for label, mixed in [(name, True)] + ([("joint (before mixing)", False)] if name == "joint" else []):
                tr, te = (probes.representations(model, fs, captions="one", mixed=mixed) for fs in (train_fs, test_fs))
                rows.append(probe(label, tr, te, s))
    return pd.concat(rows, ignore_index=True)


def kept_table(probe_df: pd.DataFrame, margin: float = KEPT_MARGIN, control: str = CONTROL) -> pd.DataFrame:
    """Per model and modality: probe mAP minus the same-size control's mAP (and minus the raw features'),
    in points (mAP × 100), over seeds (mean, 95% t-interval) and the verdict on "unimodal performance
    kept" (metrics.verdict_kept against the control: no loss larger than `margin` points is credible)."""
    raw = probe_df[probe_df.representation == "raw features"].iloc[0]
    ref = probe_df[probe_df.representation == control].iloc[0]
    rows = []
    skip = {"raw features", control}
    for name, g in probe_df[~probe_df.representation.isin(skip)].groupby("representation", sort=False):
        for side in ("image mAP", "text mAP"):
            s = metrics.seed_summary(100 * (g[side] - ref[side]))
            rows.append({"model": name, "modality": side.split()[0], "raw mAP": 100 * raw[side],
                         "control mAP": 100 * ref[side], "model mAP": 100 * g[side].mean(),
                         "vs raw": 100 * (g[side].mean() - raw[side]),
                         "vs control": s["mean"], "lo": s["lo"], "hi": s["hi"], "seeds": len(g),
                         "verdict (kept)": metrics.verdict_kept(s["lo"], s["hi"], margin)})
    return pd.DataFrame(rows)


def pointing_results(feats, subset, budget: str = "cpu", model_names=POINTED) -> dict[str, list[pd.DataFrame]]:
    """Pointing game per model and seed on the instance-labelled test images -> {model: [cases per seed]}."""
    from . import interpret

    tokenizer = interpret.load_tokenizer()
    return {name: [interpret.pointing_game(m, feats["test"], subset, tokenizer) for m in load_runs(name, budget)]
            for name in model_names}


def pointing_table(pointing: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    """Per model: hit rate and the two baselines' rates (uniform attention, centre cell), means over
    seeds, with the number of seeds, cases and images."""
    rows = []
    for name, runs in pointing.items():
        rows.append({"model": name, "seeds": len(runs),
                     "hit_rate": np.mean([df.hit.mean() for df in runs]),
                     "baseline_rate": runs[0].baseline.mean(), "centre_rate": runs[0].centre_hit.mean(),
                     "cases": len(runs[0]), "images": runs[0].image_id.nunique()})
    return pd.DataFrame(rows).set_index("model")


def pointing_verdicts(pointing: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    """Pointing-game comparisons (points, 95% interval from `metrics.honest_rate_difference`: test images
    resampled with their cases, plus a Student-t seed term): each model against the uniform and the
    centre-cell baselines, and decoupled against joint; verdict = metrics.verdict (better or not)."""
    rows = []

    def add(label, a_runs, a_col, b_runs, b_col):
        r = metrics.honest_rate_difference(a_runs, a_col, b_runs, b_col)
        rows.append({"comparison": label, "difference (points)": 100 * r["diff"], "lo": 100 * r["lo"],
                     "hi": 100 * r["hi"], "verdict": metrics.verdict(r["lo"], r["hi"])})

    for name, runs in pointing.items():
        add(f"{name} vs uniform attention", runs, "hit", None, "baseline")
        add(f"{name} vs centre cell", runs, "hit", None, "centre_hit")
    if {"decoupled", "joint"} <= set(pointing):
        add("decoupled vs joint", pointing["decoupled"], "hit", pointing["joint"], "hit")
    return pd.DataFrame(rows)


def verdict_table(claims: pd.DataFrame, kept: pd.DataFrame, pointing_v: pd.DataFrame) -> pd.DataFrame:
    """The blog's claims beside what the course measured (95% intervals) and the computed verdicts."""
    rows = []
    for _, c in claims.iterrows():
        unit = "%" if c["reading"] == "relative %" else " points"
        label = f"+{CLAIMED_GAIN}% retrieval over joint training ({c['metric']}, {c['reading']}"
        label += ", primary)" if c["primary"] else ")"
        rows.append((label, f"decoupled vs joint {c['difference']:+.1f}{unit} [{c['lo']:+.1f}, {c['hi']:+.1f}]",
                     c["verdict"]))
    for side in ("image", "text"):
        k = kept.query("model == 'decoupled' and modality == @side").iloc[0]
        rows.append((f"unimodal performance kept ({side})",
                     f"probe mAP vs {CONTROL} {k['vs control']:+.1f} points [{k['lo']:+.1f}, {k['hi']:+.1f}] "
                     f"(margin {KEPT_MARGIN}; encoders frozen)", k["verdict (kept)"]))
    p = pointing_v.set_index("comparison")
    for label, key in [("attention points at the named object", "decoupled vs uniform attention"),
                       ("... better than always pointing at the centre", "decoupled vs centre cell"),
                       ("better interpretability than joint training", "decoupled vs joint")]:
        if key in p.index:
            r = p.loc[key]
            rows.append((label, f"pointing game, {key}: {r['difference (points)']:+.1f} points "
                                f"[{r['lo']:+.1f}, {r['hi']:+.1f}]", r["verdict"]))
    return pd.DataFrame(rows, columns=["the blog claims", "the course measures (95% interval)", "verdict"])
