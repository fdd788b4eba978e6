"""Notebook 08's last section, its runs: does the blog's variable depend on a text encoder that already saw COCO?

The text encoder becomes a factor (`ENCODERS`, `train.TEXT_FEATURES`): the course's frozen MiniLM (its training
saw ~828k COCO caption pairs), a GRU tower with no prior learnt from scratch with each model, and a frozen
MiniLM with random weights. Everything else is the course's: image features, projections, widths, optimiser,
early stopping. Per encoder the same search chooses each model's learning rate (`search`), then `MODELS` train
with `SEEDS` at their choice and are ranked on the 1K test set (`all_ranks`).

The search is 05's made cheaper, the same for every encoder: the learning rate alone, at the initial temperature
05 chose for 6 of its 7 models (0.1; the models learn their temperature from there), from three ladder values,
grown by `recipes.grow_until_interior` until each model's choice is interior. MiniLM's trials are 05's own rows
(`recipes.searched`: the same configurations), so its chosen runs are 06's.

Costly (about 70 runs): `make encoders` runs it outside the tests, resumable from the committed tables
(`committed_files`); notebook 08 reads them and retrains one run per encoder (`RECHECK`).
"""
from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from .. import intervals, metrics
from ..atomic import atomic_path, write_csv
from ..config import PATHS
from ..train import TrainConfig, load_result
from .feature_cache import load_course_features
from .recipes import LADDERS, grow_until_interior, recipe_id, run_dir, searched, seeds_for, train_config
from .runs import rank_run, run_all, train_run, trial_row

ENCODERS = ("minilm", "gru", "random_minilm")
BASE = "minilm"                                     # the course's encoder: the interactions are measured from it
MODELS = ("decoupled", "joint_words", "decoupled_pooled", "joint", "dual")
SEEDS = (0, 1, 2, 3, 4)
TEMPERATURE = 0.1
LR_START = (3e-4, 1e-3, 3e-3)                       # 05's starting learning rates
RECHECK = ("dual", 0)                               # the run per encoder that notebook 08 retrains (the cheapest)
LONGEST_FIRST = ("joint_words", "decoupled", "joint", "decoupled_pooled", "dual")   # 05's trial times, descending

# What each contrast changes, as notebook 06 declared them: A - B on rSum.
CONTRASTS = {
    "flow (per-word head)": ("decoupled", "joint_words"),       # 06's primary
    "flow (pooled head)": ("decoupled_pooled", "joint"),         # 06's first secondary
    "head (decoupled's flow)": ("decoupled", "decoupled_pooled"),
}
PRIMARY, FIRST_SECONDARY, HEAD = CONTRASTS
# The interactions: a contrast's change when the encoder changes from BASE, per other encoder. encoder x flow
# is the question of the issue (does the blog's variable depend on the prior?); encoder x head asks whether
# the pooled head's edge comes from the prior.
INTERACTIONS = {"encoder x flow": CONTRASTS[PRIMARY], "encoder x head": CONTRASTS[HEAD]}


def committed_files(budget: str = "cpu") -> dict[str, Path]:
    """The files `make encoders` commits beside the notebooks: every search trial, every run's test ranks."""
    return {"search": PATHS.notebooks / f"encoders-search-{budget}.csv",
            "ranks": PATHS.notebooks / f"encoders-ranks-{budget}.npz"}


def config(encoder: str, model: str, seed: int = 0, lr: float = 3e-4, budget: str = "cpu") -> TrainConfig:
    """The run of `model` on `encoder`'s text features at learning rate `lr` (the course's recipe otherwise)."""
    return train_config(model, budget, seed, setting={"lr": float(lr), "init_temperature": TEMPERATURE},
                        text_features=encoder)     # float(): a numpy scalar from a table would not load back


# ----------------------------------------------------------------------------- the search

class _Untrained(Exception):
    """A trial the search needs that has no row yet."""

    def __init__(self, lr: float):
        super().__init__(f"lr {lr:g} not trained")
        self.lr = lr


def read_search(path: Path) -> pd.DataFrame:
    """The committed trials (an empty table if there are none yet)."""
    columns = ["encoder", "model", "lr", "val rsum", "recipe"]
    if not path.is_file():
        return pd.DataFrame(columns=columns)
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is damaged ({type(err).__name__}); restore the committed one (`git checkout -- "
                         f"{path.parent.name}/{path.name}`) or move it away and run `make encoders` again") from None
    missing = set(columns) - set(table.columns)
    if missing:
        raise ValueError(f"{path} lacks the columns {sorted(missing)}: it is not the encoders' search table; move "
                         "it away and run `make encoders` to write it again")
    return table


def _row(table: pd.DataFrame, cfg: TrainConfig) -> pd.Series | None:
    hit = table[table.recipe == recipe_id(cfg)] if len(table) else table
    return hit.iloc[0] if len(hit) else None


def choose(table: pd.DataFrame, encoder: str, model: str, budget: str = "cpu") -> tuple[float, dict[float, float]]:
    """`grow_until_interior` on the trials in `table` -> (chosen lr, {lr: val rsum} tried); `_Untrained` when a
    trial it needs is missing."""
    def score(lr: float) -> float:
        row = _row(table, config(encoder, model, 0, lr, budget))
        if row is None:
            raise _Untrained(lr)
        return float(row["val rsum"])

    return grow_until_interior(LR_START, LADDERS["lr"], score)


def search(feats, budget: str = "cpu", path: Path | None = None, log=print) -> pd.DataFrame:
    """Every encoder's and model's trials, trained (side by side) or read -> the search table, written to `path`
    after every trial. MiniLM's rows come from 05's search table (the same configurations)."""
    path = path or committed_files(budget)["search"]
    table, course = read_search(path), searched(budget)

    def add(rows: list[dict]) -> None:
        nonlocal table
        new = pd.DataFrame(rows)
        keep = table[~table.recipe.isin(new.recipe)] if len(table) else table.iloc[0:0]
        table = pd.concat([keep, new], ignore_index=True) if len(keep) else new
        write_csv(table, path, index=False)

    for round_ in range(1, 2 * len(LADDERS["lr"])):
        needed = []
        for encoder in ENCODERS:
            for model in MODELS:
                starts = [config(encoder, model, 0, lr, budget) for lr in LR_START]
                missing = [cfg for cfg in starts if _row(table, cfg) is None]
                if not missing:
                    try:
                        choose(table, encoder, model, budget)
                    except _Untrained as want:
                        missing = [config(encoder, model, 0, want.lr, budget)]
                for cfg in missing:
                    row = _row(course, cfg) if encoder == BASE else None
                    if row is not None:                       # 05's trial, the same configuration
                        add([{"encoder": encoder, **row.to_dict(), "source": "05's search"}])
                    else:
                        needed.append(cfg)
        if not needed:
            return table
        needed.sort(key=lambda cfg: LONGEST_FIRST.index(cfg.model))      # side by side: long runs first
        log(f"round {round_}: {len(needed)} trials to train")
        run_all(needed, feats, rank=False, done=lambda cfg, rank: add(
            [{"encoder": cfg.text_features, **trial_row(cfg, train_run(cfg, feats)), "source": "make encoders"}]))
    raise RuntimeError("the search did not settle: a choice kept moving along the ladder")


def chosen_lrs(table: pd.DataFrame, budget: str = "cpu") -> pd.DataFrame:
    """Per encoder and model: the chosen learning rate, the values tried, and the chosen trial's validation rSum."""
    rows = []
    for encoder in ENCODERS:
        for model in MODELS:
            lr, tried = choose(table, encoder, model, budget)
            rows.append({"encoder": encoder, "model": model, "lrs tried": ", ".join(f"{v:g}" for v in tried),
                         "chosen lr": lr, "val rsum": tried[lr],
                         "interior": min(tried) < lr < max(tried)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- the runs and their ranks

def _key(encoder: str, model: str, seed: int) -> str:
    return f"{encoder}|{model}|{seed}"


def save_ranks(got: dict[str, dict], runs: dict[str, dict], path: Path) -> None:
    """{'encoder|model|seed': ranks} and {same key: {'name', 'rsum', 'seconds'}} -> one .npz ('...|img', '|cap',
    '|run', '|rsum', '|seconds'), so a later call tells a committed run from a changed one without its folder."""
    arrays = {}
    for key, r in got.items():
        arrays[f"{key}|img"], arrays[f"{key}|cap"] = (np.asarray(r["img_rank"]).astype(np.int16),
                                                      np.asarray(r["cap_rank"]).astype(np.int16))
        arrays[f"{key}|run"] = np.array(runs[key]["name"])
        arrays[f"{key}|rsum"] = np.asarray(runs[key]["rsum"], dtype=np.float64)
        arrays[f"{key}|seconds"] = np.float64(runs[key]["seconds"])
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)


def load_ranks(path: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """`save_ranks`'s file -> ({key: ranks}, {key: {'name', 'rsum', 'seconds'}}); ({}, {}) without the file."""
    if not path.is_file():
        return {}, {}
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = [k.removesuffix("|img") for k in z.files if k.endswith("|img")]
            got = {k: {"img_rank": z[f"{k}|img"].astype(np.int64), "cap_rank": z[f"{k}|cap"].astype(np.int64)}
                   for k in keys}
            runs = {k: {"name": str(z[f"{k}|run"]), "rsum": z[f"{k}|rsum"], "seconds": float(z[f"{k}|seconds"])}
                    for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is damaged ({type(err).__name__}: {err}); restore the committed one (`git checkout "
                         f"-- {path.parent.name}/{path.name}`) or move it away and run `make encoders` again") from None
    return got, runs


def grouped(got: dict[str, dict]) -> dict[tuple[str, str], list[dict]]:
    """{'encoder|model|seed': ranks} -> {(encoder, model): [ranks per seed, in seed order]}."""
    out: dict[tuple[str, str], dict[int, dict]] = {}
    for key, r in got.items():
        encoder, model, seed = key.split("|")
        out.setdefault((encoder, model), {})[int(seed)] = r
    return {k: [v[s] for s in sorted(v)] for k, v in out.items()}


def seed_configs(table: pd.DataFrame, budget: str = "cpu", seeds=SEEDS) -> dict[str, TrainConfig]:
    """{'encoder|model|seed': the run at the model's chosen learning rate} for every encoder, model and seed."""
    lrs = {(e, m): choose(table, e, m, budget)[0] for e in ENCODERS for m in MODELS}
    return {_key(e, m, s): config(e, m, s, lrs[e, m], budget) for e in ENCODERS for m in MODELS for s in seeds}


def all_ranks(feats, table: pd.DataFrame, budget: str = "cpu", path: Path | None = None, seeds=SEEDS,
              reuse: dict[tuple[str, int], dict] | None = None) -> dict[tuple[str, str], list[dict]]:
    """Every encoder's models with every seed, trained (side by side) or reused, ranked on the 1K test set ->
    {(encoder, model): [ranks per seed]}. Resumable across machines: a run whose ranks are in `path` under the
    same run folder name is read, not retrained; the file is rewritten after every run that trains. `reuse`:
    {(model, seed): ranks} of MiniLM runs committed elsewhere (06's seeds 3 and 4, from `make splits`), taken
    as they are, so MiniLM's numbers here are 06's."""
    path = path or committed_files(budget)["ranks"]
    jobs = seed_configs(table, budget, seeds)
    got, runs = load_ranks(path)
    got = {k: v for k, v in got.items() if k in jobs and runs[k]["name"] == run_dir(jobs[k]).name}
    runs = {k: runs[k] for k in got}
    for (model, seed), r in (reuse or {}).items():
        key = _key(BASE, model, seed)
        if key in jobs:
            got[key] = {"img_rank": r["img_rank"], "cap_rank": r["cap_rank"]}
            runs[key] = {"name": run_dir(jobs[key]).name, "rsum": np.zeros(0), "seconds": 0.0}   # trained there
    by_folder = {run_dir(cfg).name: key for key, cfg in jobs.items()}

    def record(cfg: TrainConfig, rank: bool) -> None:
        key = by_folder[run_dir(cfg).name]
        result = load_result(run_dir(cfg))
        got[key] = rank_run(cfg, feats)
        runs[key] = {"name": run_dir(cfg).name, "rsum": result.history.rsum.to_numpy(dtype=float),
                     "seconds": float(result.history.seconds.sum())}
        save_ranks(got, runs, path)

    todo = sorted((cfg for key, cfg in jobs.items() if key not in got), key=lambda c: LONGEST_FIRST.index(c.model))
    run_all(todo, feats, rank=True, done=record)
    for cfg in todo:                   # runs that were already trained in runs/ (run_all had nothing to do)
        if by_folder[run_dir(cfg).name] not in got:
            record(cfg, True)
    return grouped({k: got[k] for k in jobs})


def load_committed(budget: str = "cpu") -> tuple[pd.DataFrame, dict[tuple[str, str], list[dict]], dict]:
    """The committed outputs of `make encoders` -> (search table, {(encoder, model): ranks per seed}, {key: run
    name, validation curve, seconds}); a clear error when one is missing or incomplete."""
    files = committed_files(budget)
    for f in files.values():
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: it is committed with the course, so restore it (`git checkout "
                                    f"-- {f.parent.name}/{f.name}`) or recompute it with `make encoders` (about 70 "
                                    "runs: hours on a 2-core CPU; it resumes where it stopped)")
    table = read_search(files["search"])
    got, runs = load_ranks(files["ranks"])
    jobs = seed_configs(table, budget)
    absent = [k for k in jobs if k not in got]
    if absent:
        raise FileNotFoundError(f"{files['ranks'].name} lacks {len(absent)} of {len(jobs)} runs (first: {absent[0]}): "
                                "`make encoders` stopped before the end; run it again to finish (it resumes)")
    return table, grouped({k: got[k] for k in jobs}), {k: runs[k] for k in jobs}


def reproduce_encoders(budget: str = "cpu", reuse: dict | None = None, log=print) -> tuple[pd.DataFrame, dict]:
    """`make encoders`: the search, then every run, each resumable from the committed files -> (search table,
    {(encoder, model): ranks per seed}); `reuse` as `all_ranks` takes it. Logs the wall time it took."""
    start = time.perf_counter()
    feats = load_course_features(progress=True)
    table = search(feats, budget, log=log)
    log(f"search done: {len(table)} trials ({(time.perf_counter() - start) / 60:.1f} min so far)")
    ranks = all_ranks(feats, table, budget, reuse=reuse)
    log(f"make encoders: {sum(len(v) for v in ranks.values())} runs ranked in "
        f"{(time.perf_counter() - start) / 60:.1f} min of wall time")
    return table, ranks


# ----------------------------------------------------------------------------- the tables notebook 08 shows

def _pairs(runs: list[dict]) -> list[tuple]:
    return [(r["img_rank"], r["cap_rank"]) for r in runs]


def model_table(ranks: dict[tuple[str, str], list[dict]], caption_image, n_boot: int = 1000) -> pd.DataFrame:
    """Per encoder and model: test rSum over its seeds with the course's interval (`intervals.honest_interval`)."""
    rows = []
    for (encoder, model), runs in ranks.items():
        r = intervals.honest_interval(_pairs(runs), caption_image, n_boot=n_boot).loc["rsum"]
        rows.append({"encoder": encoder, "model": model, "seeds": len(runs), "rsum": r["mean"],
                     "seed sd": r["std"], "lo": r["lo"], "hi": r["hi"]})
    return pd.DataFrame(rows)


def _verdicts(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    adjusted, reject = intervals.holm(table["p"], alpha)
    table["p_holm"] = adjusted
    table["verdict"] = [("A better" if d > 0 else "A credibly worse") if r else
                        "not credible after Holm" if lo > 0 or hi < 0 else "no credible difference"
                        for d, lo, hi, r in zip(table["difference"], table["lo"], table["hi"], reject)]
    return table


def contrast_table(ranks, caption_image, n_boot: int = 1000, alpha: float = 0.05) -> pd.DataFrame:
    """Per contrast of `CONTRASTS` and encoder: A - B on rSum points with its interval and p (`intervals.honest_test`);
    Holm within each contrast over the encoders (a family of 3)."""
    parts = []
    for name, (a, b) in CONTRASTS.items():
        rows = []
        for encoder in ENCODERS:
            t = intervals.honest_test([(1, _pairs(ranks[encoder, a])), (-1, _pairs(ranks[encoder, b]))],
                                      caption_image, n_boot=n_boot, level=1 - alpha)
            rows.append({"contrast": name, "encoder": encoder, "comparison": f"{a} vs {b}", "A": t["means"][0],
                         "B": t["means"][1], "difference": t["estimate"], "lo": t["lo"], "hi": t["hi"],
                         "p": t["p"], "detectable": detectable(t, alpha)})
        parts.append(_verdicts(pd.DataFrame(rows), alpha))
    return pd.concat(parts, ignore_index=True)


def interaction_terms(contrast, encoder, base=BASE):
    """(A, B) models, an encoder -> [(weight, (encoder, model)), ...]: the terms of
    (A - B on `encoder`) - (A - B on `base`), the change of the contrast when the encoder changes."""
    a, b = contrast
    return [(1, (encoder, a)), (-1, (encoder, b)), (-1, (base, a)), (1, (base, b))]


def detectable(test: dict, alpha: float = 0.05, power: float = 0.8) -> float:
    """`honest_test`'s result -> the smallest true value its interval excludes 0 for with probability `power`."""
    return intervals.detectable_contrast(test["se"], test["df"], alpha, power)


def interaction_table(ranks, caption_image, n_boot: int = 1000, alpha: float = 0.05) -> pd.DataFrame:
    """Every interaction of `INTERACTIONS` for every encoder but BASE: the contrast on that encoder minus the same
    contrast on BASE, with its interval, p and the smallest interaction it resolves at 80% power; Holm over the
    whole family (2 interactions x 2 encoders)."""
    rows = []
    for name, contrast in INTERACTIONS.items():
        for encoder in ENCODERS:
            if encoder == BASE:
                continue
            terms = [(w, _pairs(ranks[run])) for w, run in interaction_terms(contrast, encoder)]
            t = intervals.honest_test(terms, caption_image, n_boot=n_boot, level=1 - alpha)
            rows.append({"interaction": name, "encoder": f"{encoder} vs {BASE}",
                         "contrast": f"{contrast[0]} - {contrast[1]}", "on encoder": t["means"][0] - t["means"][1],
                         f"on {BASE}": t["means"][2] - t["means"][3], "difference": t["estimate"],
                         "lo": t["lo"], "hi": t["hi"], "p": t["p"], "detectable": detectable(t, alpha)})
    return _verdicts(pd.DataFrame(rows), alpha)


def verdict_sentence(interactions: pd.DataFrame, alpha: float = 0.05) -> str:
    """The answer to the issue's question, from the encoder x flow rows of `interaction_table`. A credible change
    whose Holm-adjusted p is above alpha / 2 is called borderline: a familywise level half as large would not pass it."""
    flow = interactions[interactions.interaction == "encoder x flow"]
    credible = flow[flow.verdict.isin(["A better", "A credibly worse"])]
    parts = [f"{r.encoder.split(' vs ')[0]}: {r.difference:+.1f} [{r.lo:+.1f}, {r.hi:+.1f}], Holm p {r.p_holm:.3f}, "
             f"{r.verdict}" for r in flow.itertuples()]
    if len(credible):
        head = (f"The blog's variable's effect depends on the text encoder: the flow contrast (decoupled - joint_words) "
                f"changes credibly, after Holm, when MiniLM's prior is replaced ({'; '.join(parts)}).")
        weakest = credible.loc[credible.p_holm.idxmax()]
        if weakest.p_holm > alpha / 2:
            head += (f" The evidence is borderline: {weakest.encoder.split(' vs ')[0]}'s Holm-adjusted p, "
                     f"{weakest.p_holm:.3f}, would not pass a familywise level of {alpha / 2:g}.")
    else:
        head = (f"No credible dependence on the encoder prior: the flow contrast (decoupled - joint_words) does not "
                f"change credibly, after Holm, when MiniLM's prior is replaced ({'; '.join(parts)}); this design "
                f"resolves a change of about {flow.detectable.max():.0f} rSum points at 80% power, not smaller ones.")
    return head


CLAIM = "+8.5% cross-modal retrieval accuracy"     # the blog's words; 06 reads it as +8.5% of joint_words' rSum


def claim_sentence(primary: pd.DataFrame, claimed_pct: float = 8.5) -> str:
    """`contrast_table`'s rows of the primary, indexed by encoder -> the blog's claim read on each encoder: the
    difference with its 95% interval against +claimed_pct% of B's rSum (`metrics.verdict`)."""
    parts = []
    for encoder, r in primary.iterrows():
        claimed = claimed_pct / 100 * r["B"]
        parts.append(f"{encoder} {r['difference']:+.1f} [{r['lo']:+.1f}, {r['hi']:+.1f}] against +{claimed:.1f} "
                     f"claimed: {metrics.verdict(r['lo'], r['hi'], claimed)}")
    return (f"The blog's \"{CLAIM}\", read as 06 reads it (decoupled over joint_words by {claimed_pct}% of "
            f"joint_words' rSum), on each encoder: " + "; ".join(parts)
            + " (one 95% interval per encoder; MiniLM's is 06's primary, the other two are readings of the same claim).")


def cost(table: pd.DataFrame, runs: dict[str, dict]) -> dict:
    """What `make encoders` trained (not 05's trials, nor 06's runs it reuses) -> {'trials', 'runs', 'hours'}: its
    search trials, its seed runs (a seed-0 run at the choice is a trial already), and their training time summed
    over runs in hours (validation included; they train two side by side on 2 cores, so the wall time is less)."""
    trials = table[table.source == "make encoders"]
    course = {_key(BASE, m, s) for m in MODELS for s in seeds_for(m)}          # 06's runs, reused
    seeds = {k: r for k, r in runs.items() if int(k.split("|")[2]) > 0 and k not in course}
    seconds = float(trials.seconds.sum()) + sum(r["seconds"] for r in seeds.values())
    return {"trials": len(trials), "runs": len(seeds), "hours": seconds / 3600}
