"""Split sensitivity: 06's primary comparison and its first secondary, with 5 seeds per model, on the course's
split of the subset (order 0) and re-run on other splits of it.

Split `order` k > 0 follows the course's rule in another sha1 order (`data.make_split_order`): test holds
every instance-labelled image and is filled to 1,000 from the others in that order, validation takes the
next 250, training the rest. Its features are cut from the same cached 'all' (`load_course_features(order=k)`,
no re-extraction) and carry '|split<k>' in their `source`; its runs live in runs/split<k>/ (`recipes.run_dir`).
Order 0 is the course's own split: its runs are 06's (the same folders in runs/), so the committed ranks of its
seeds are what 06 reads without retraining them all, and CI retrains a sample to check them.
Each of `MODELS` trains with the course's recipe (`recipes.train_config`) and `SEEDS`. That is costly (60
runs for three splits), so `make splits` (`python -m helpers splits`, `reproduce_splits`) trains them outside
the tests and commits two files beside the notebooks: one row per run, and every run's test ranks. Both are
rewritten after every finished run, so a killed `make splits` loses at most the runs in flight, and a run
whose row holds the same recipe is not trained again. `split_table` turns them (and the course split's
ranks) into 06's table: per split, each comparison in rSum points with its 95% interval.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import intervals, metrics
from ..atomic import atomic_path, write_csv
from ..config import PATHS
from ..fast import parallel
from ..features import FeatureSet
from ..models import ModelConfig
from ..train import TrainConfig, load_result
from .feature_cache import load_course_features
from .recipes import MODEL_NAMES, run_dir, train_config
from .runs import convergence, evaluate_all, needs_work, rank_run, train_run

# (A, B, what changes): the difference is A - B. The primary comparison first, then the first secondary.
COMPARISONS = (("decoupled", "joint_words", "primary: flow text->image vs both ways (per-word head)"),
               ("decoupled_pooled", "joint", "first secondary: flow text->image vs both ways (pooled head)"))
MODELS = tuple(dict.fromkeys(m for a, b, _ in COMPARISONS for m in (a, b)))
ORDERS = (0, 1, 2)               # 0: the course's own split (its runs are 06's); 1 and 2: two other splits
SEEDS = (0, 1, 2, 3, 4)
RETRAIN = (0, 1, 2)              # the seeds of MODELS 06 trains itself and checks against the committed runs
CONVERGENCE = ["change over last 3 epochs", "stopped by", "learned temperature"]     # `runs.convergence`'s
COLUMNS = ["split", "model", "seed", "lr", "init_temperature", "epochs", "best epoch", "val rsum", *CONVERGENCE,
           "test rsum", "recipe"]
OLDER_COLUMNS = [c for c in COLUMNS if c not in CONVERGENCE]     # a table written before the convergence columns
FORMAT = "course-splits-1"       # the ranks file's `format` entry: another file there is not ours
COST = "60 runs for three splits: about two hours of training on a 2-core CPU"


def committed_files(budget: str = "cpu") -> dict[str, Path]:
    """The files `make splits` commits beside the notebooks: the runs' table and their test ranks."""
    return {"table": PATHS.notebooks / f"splits-{budget}.csv",
            "ranks": PATHS.notebooks / f"splits-ranks-{budget}.npz"}


def _fix(budget: str) -> str:
    names = " ".join(f"notebooks/{p.name}" for p in committed_files(budget).values())
    return (f"restore the committed files (`git checkout -- {names}`), or delete both and run `make splits` "
            "again (finished runs in runs/split<k>/ are reused, not retrained)")


@dataclass
class Committed:
    """What `make splits` has recorded: one row per run (`COLUMNS`), each run's test ranks, each split's test set."""
    table: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=COLUMNS))
    ranks: dict = field(default_factory=dict)      # (split, model, seed) -> {'img_rank', 'cap_rank'}
    tests: dict = field(default_factory=dict)      # split -> {'image_ids': (N_img,), 'caption_image': (N_cap,)}

    def runs(self, order: int) -> dict[str, list[dict]]:
        """Split `order`'s ranks -> {model: [ranks per seed, in seed order]}."""
        out = {}
        for (o, model, seed) in sorted(self.ranks, key=lambda k: (k[0], k[1], k[2])):
            if o == order:
                out.setdefault(model, []).append(self.ranks[o, model, seed])
        return out


# ----------------------------------------------------------------------------- the committed files

def save_committed(committed: Committed, budget: str) -> None:
    """Write the ranks (first) and the table, each atomically: a kill between the two leaves ranks without a
    row, which the next `make splits` records again."""
    files = committed_files(budget)
    arrays = {"format": np.array(FORMAT), "budget": np.array(budget)}
    for order, test in committed.tests.items():
        arrays[f"split{order}|image_ids"] = np.asarray(test["image_ids"], dtype=np.int64)
        arrays[f"split{order}|caption_image"] = np.asarray(test["caption_image"], dtype=np.int16)
    for (order, model, seed), r in committed.ranks.items():
        arrays[f"split{order}|{model}|{seed}|img"] = np.asarray(r["img_rank"]).astype(np.int16)
        arrays[f"split{order}|{model}|{seed}|cap"] = np.asarray(r["cap_rank"]).astype(np.int16)
    with atomic_path(files["ranks"]) as tmp:
        np.savez_compressed(tmp, **arrays)
    table = committed.table.sort_values(["split", "model", "seed"], key=_run_order).reset_index(drop=True)
    write_csv(table[COLUMNS], files["table"], index=False)


def _run_order(column: pd.Series) -> pd.Series:
    return column.map({m: i for i, m in enumerate(MODELS)}) if column.name == "model" else column


def _read_table(path: Path, budget: str) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"{path} is damaged or not a CSV ({type(e).__name__}: {e}); {_fix(budget)}") from None
    if list(table.columns) == OLDER_COLUMNS:         # its runs are recorded again by the next `make splits`
        table = table.reindex(columns=COLUMNS)
    if list(table.columns) != COLUMNS:
        raise ValueError(f"{path} is not the table `make splits` writes (columns {list(table.columns)}, expected "
                         f"{COLUMNS}); {_fix(budget)}")
    if table.duplicated(["split", "model", "seed"]).any():
        raise ValueError(f"{path} holds a run (split, model, seed) twice; {_fix(budget)}")
    return table


def _read_ranks(path: Path, budget: str) -> tuple[dict, dict]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is damaged or not an .npz file ({type(e).__name__}: {e}); {_fix(budget)}") from None
    if str(arrays.get("format", "")) != FORMAT:
        raise ValueError(f"{path} is not a ranks file of `make splits` (no format {FORMAT!r}: another file was put "
                         f"there); {_fix(budget)}")
    if str(arrays.get("budget", "")) != budget:
        raise ValueError(f"{path} holds the ranks of budget {str(arrays.get('budget', ''))!r}, not {budget!r}; "
                         f"{_fix(budget)}")
    tests, ranks = {}, {}
    for key, a in arrays.items():
        parts = key.split("|")
        if len(parts) == 2:
            tests.setdefault(int(parts[0].removeprefix("split")), {})[parts[1]] = a.astype(np.int64)
        elif len(parts) == 4:
            run = ranks.setdefault((int(parts[0].removeprefix("split")), parts[1], int(parts[2])), {})
            run["img_rank" if parts[3] == "img" else "cap_rank"] = a.astype(np.int64)
    return tests, ranks


def load_committed(budget: str = "cpu", must_exist: bool = True) -> Committed:
    """The committed outputs of `make splits`, checked: a clear error (with the fix) when a file is missing,
    damaged or not ours, or a row has no ranks of its split's test set. `must_exist=False`: nothing recorded
    yet reads as an empty record."""
    files = committed_files(budget)
    there = {name: path.is_file() for name, path in files.items()}
    if not any(there.values()):
        if must_exist:
            raise FileNotFoundError(f"{files['table']} and {files['ranks']} are missing: they are committed with "
                                    f"the course, so restore them (`git checkout -- notebooks/`) or compute them "
                                    f"with `make splits` ({COST})")
        return Committed()
    if not all(there.values()):
        have, lack = (files[n] for n in sorted(there, key=lambda n: not there[n]))
        raise ValueError(f"{have} is there but {lack} is not (the two are written together); {_fix(budget)}")
    table = _read_table(files["table"], budget)
    tests, ranks = _read_ranks(files["ranks"], budget)
    for row in table.itertuples():
        key = (int(row.split), row.model, int(row.seed))
        run, test = ranks.get(key, {}), tests.get(key[0], {})
        if set(run) != {"img_rank", "cap_rank"} or set(test) != {"image_ids", "caption_image"} or \
                (len(run["img_rank"]), len(run["cap_rank"])) != (len(test["image_ids"]), len(test["caption_image"])):
            raise ValueError(f"{files['table']} lists split {key[0]}, {key[1]}, seed {key[2]}, but {files['ranks']} "
                             f"holds no ranks of that run on its split's test set; {_fix(budget)}")
    keep = {(int(r.split), r.model, int(r.seed)) for r in table.itertuples()}
    return Committed(table, {k: v for k, v in ranks.items() if k in keep}, tests)


def recorded(committed: Committed, order: int, cfg: TrainConfig) -> bool:
    """Does the record hold split `order`'s run of `cfg` with the same recipe (`run_dir`'s name) and its
    convergence (a row of an older table has none)?"""
    t = committed.table
    row = t[(t["split"] == order) & (t["model"] == cfg.model) & (t["seed"] == cfg.seed)]
    return len(row) == 1 and row["recipe"].iloc[0] == run_dir(cfg).name and row["stopped by"].notna().all()


def record(committed: Committed, order: int, cfg: TrainConfig, test: FeatureSet, budget: str) -> None:
    """Add split `order`'s finished, ranked run of `cfg` (replacing an older row of the same model and seed) and
    write both files."""
    ids, cap = test.image_ids.numpy(), test.caption_image.numpy()
    known = committed.tests.get(order)
    if known is not None and not (np.array_equal(known["image_ids"], ids) and
                                  np.array_equal(known["caption_image"], cap)):
        raise RuntimeError(f"the committed ranks of split {order} were made on another test set (the subset or "
                           f"the split rule changed since); delete both files of committed_files({budget!r}) "
                           f"and run `make splits` again")
    result, ranks = load_result(run_dir(cfg, order)), rank_run(cfg, {"test": test}, order=order)
    row = {"split": order, "model": cfg.model, "seed": cfg.seed, "lr": cfg.lr,
           "init_temperature": cfg.model_overrides.get("init_temperature", ModelConfig().init_temperature),
           **convergence(cfg, result),
           "test rsum": round(float(metrics.recalls_from_ranks(ranks["img_rank"], ranks["cap_rank"])["rsum"]), 2),
           "recipe": run_dir(cfg).name}
    t = committed.table
    others = t[~((t["split"] == order) & (t["model"] == cfg.model) & (t["seed"] == cfg.seed))]
    committed.table = pd.concat([others, pd.DataFrame([row])], ignore_index=True) if len(others) else \
        pd.DataFrame([row], columns=COLUMNS)
    committed.tests[order] = {"image_ids": ids, "caption_image": cap}
    committed.ranks[order, cfg.model, cfg.seed] = {"img_rank": ranks["img_rank"], "cap_rank": ranks["cap_rank"]}
    save_committed(committed, budget)


# ----------------------------------------------------------------------------- the runs

def train_and_rank(feats: dict[str, FeatureSet], cfg: TrainConfig, order: int) -> None:
    """One job of `run_split` (module level, for `fast.parallel`): the run on split `order`, and its test ranks."""
    train_run(cfg, feats, order)
    rank_run(cfg, feats, order=order)


@dataclass(frozen=True)
class SplitFeatures:
    """The loader a side-by-side worker calls for split `order`'s features (pickled to it by value)."""
    order: int

    @property
    def __name__(self) -> str:           # `fast.parallel` names its loader in an error
        return f"SplitFeatures(order={self.order})"

    def __call__(self) -> dict[str, FeatureSet]:
        return load_course_features(progress=False, order=self.order)


def run_split(order: int, configs: list[TrainConfig], feats: dict[str, FeatureSet], committed: Committed,
              budget: str) -> None:
    """Train and rank every run of `configs` on split `order` (side by side on a CPU, `fast.parallel`),
    recording each in the committed files as it finishes."""
    def done(cfg: TrainConfig, order: int) -> None:
        record(committed, order, cfg, feats["test"], budget)

    todo = [needs_work(cfg, rank=True, order=order) for cfg in configs]
    for cfg in (cfg for cfg, work in zip(configs, todo) if not work):     # finished before: record it
        done(cfg, order)
    jobs = [(cfg, order) for cfg, work in zip(configs, todo) if work]
    device = jobs[0][0].device if jobs else "cpu"
    if not parallel.side_by_side(train_and_rank, jobs, feats, SplitFeatures(order), device, done=done):
        for job in jobs:
            train_and_rank(feats, *job)
            done(*job)


def reproduce_splits(budget: str = "cpu", orders=ORDERS, seeds=SEEDS, models=MODELS,
                     progress: bool = True) -> Committed:
    """Train and rank `models` x `seeds` (`recipes.train_config`) on each split of `orders`, resuming from the
    committed files: a run whose row holds the same recipe is skipped; each finished one is recorded at once."""
    bad = [o for o in orders if isinstance(o, bool) or not isinstance(o, int) or o < 0]
    if bad:
        raise ValueError(f"split orders must be whole numbers >= 0 (0 is the course's split, 1 and up other "
                         f"orders of the same rule); got {bad}")
    committed = load_committed(budget, must_exist=False)
    for order in orders:
        configs = [train_config(m, budget, s) for s in seeds for m in models]     # seed by seed: all models of seed 0 first
        todo = [cfg for cfg in configs if not recorded(committed, order, cfg)]
        if todo:
            run_split(order, todo, load_course_features(progress=progress, order=order), committed, budget)
    return committed


# ----------------------------------------------------------------------------- 06: the course split's seeds

def course_ranks(feats: dict[str, FeatureSet], budget: str = "cpu", retrain=RETRAIN, models=MODELS, seeds=SEEDS
                 ) -> tuple[dict[str, list[dict]], pd.DataFrame]:
    """The course split's runs of `models` x `seeds` for 06 without training them all: the seeds of `retrain`
    are trained here (or reused from runs/) and ranked; the others are read from the committed files (`make
    splits`, order 0). -> ({model: [ranks per seed, in seed order]}, one row per retrained run: its test rSum
    here beside the committed one, for the caller to check within its tolerance).

    A committed run that is missing, or was recorded with another recipe than today's `recipes.train_config`,
    is an error that says how to fix it; nothing is retrained silently in its place."""
    committed = load_committed(budget)
    lacking = [f"{m} seed {s}" for m in models for s in seeds
               if not recorded(committed, 0, train_config(m, budget, s))]
    if lacking:
        raise RuntimeError(f"the committed files lack {len(lacking)} run(s) of the course's split with today's "
                           f"recipe and their convergence (first: {lacking[0]}); run `make splits` ({COST}; finished "
                           f"runs in runs/ are recorded, not retrained) and commit the two files")
    test = committed.tests[0]
    if not (np.array_equal(test["image_ids"], feats["test"].image_ids.numpy()) and
            np.array_equal(test["caption_image"], feats["test"].caption_image.numpy())):
        raise RuntimeError("the committed ranks of the course's split were made on another test set (the subset "
                           "or the split rule changed since); run `make splits` again and commit the two files")
    out, rows = {}, []
    for m in models:
        out[m] = []
        for s in seeds:
            cfg = train_config(m, budget, s)
            if s in retrain:
                train_run(cfg, feats, 0)
                here = rank_run(cfg, feats, order=0)
                t = committed.table
                want = float(t[(t.split == 0) & (t.model == m) & (t.seed == s)]["test rsum"].iloc[0])
                got = float(metrics.recalls_from_ranks(here["img_rank"], here["cap_rank"])["rsum"])
                rows.append({"model": m, "seed": s, "retrained here": round(got, 2), "committed": want,
                             "difference": round(got - want, 2)})
                out[m].append(here)
            else:
                r = committed.ranks[0, m, s]
                out[m].append({"img_rank": r["img_rank"], "cap_rank": r["cap_rank"]})
    return out, pd.DataFrame(rows, columns=["model", "seed", "retrained here", "committed", "difference"])


def committed_course_ranks(budget: str = "cpu", models=MODELS,
                           seeds=tuple(s for s in SEEDS if s not in RETRAIN)) -> dict[tuple[str, int], dict]:
    """The course split's committed runs of today's recipe (`make splits`, order 0), by default the seeds 06 reads
    rather than trains -> {(model, seed): ranks}: what another design reuses so that its numbers are 06's
    (`encoder_prior.all_ranks`)."""
    committed = load_committed(budget, must_exist=False)
    return {(m, s): committed.ranks[0, m, s] for m in models for s in seeds
            if recorded(committed, 0, train_config(m, budget, s))}


def convergence_table(budget: str = "cpu", order: int = 0) -> pd.DataFrame:
    """Split `order`'s committed runs -> one row each: model, seed and how it converged (`runs.convergence`'s
    columns), in the table's order. A row without its convergence (an older table) is an error: run `make splits`."""
    t = load_committed(budget).table
    t = t[t.split == order]
    if t["stopped by"].isna().any():
        raise RuntimeError(f"the committed table of split {order} has runs without their convergence (an older "
                           f"`make splits` wrote it); run `make splits` again ({COST}; finished runs in runs/ are "
                           "recorded, not retrained) and commit the two files")
    return t[["model", "seed", "epochs", "best epoch", "val rsum", *CONVERGENCE]].reset_index(drop=True)


def course_runs(feats: dict[str, FeatureSet], budget: str = "cpu", retrain=RETRAIN
                ) -> tuple[dict[str, list[dict]], pd.DataFrame]:
    """Notebook 06's runs, ranked: `course_ranks` for MODELS (their seeds of `retrain` trained, the others read)
    and every seed of `recipes.seeds_for` for the other models (`runs.evaluate_all`) -> ({model: [ranks per
    seed]} in `MODEL_NAMES` order, `course_ranks`' table of the retrained runs)."""
    course, retrained = course_ranks(feats, budget, retrain)
    rest = evaluate_all(feats, [m for m in MODEL_NAMES if m not in course], budget=budget)
    return {m: course[m] if m in course else rest[m] for m in MODEL_NAMES}, retrained


# ----------------------------------------------------------------------------- the table

def _pairs(runs: list[dict]) -> list[tuple]:
    return [(r["img_rank"], r["cap_rank"]) for r in runs]


def comparison_rows(order: int, ranks: dict[str, list[dict]], caption_image, n_boot: int = 1000) -> list[dict]:
    """One split's {model: [ranks per seed]} and its test set's (N_cap,) caption images -> a row per comparison
    of `COMPARISONS` with both models: A - B in rSum points with its 95% interval (`intervals.honest_difference`:
    test images resampled with their captions, plus a Student-t term for each model's seeds) and the verdict."""
    rows = []
    for a, b, what in COMPARISONS:
        if a in ranks and b in ranks:
            d = intervals.honest_difference(_pairs(ranks[a]), _pairs(ranks[b]), caption_image, n_boot=n_boot).loc["rsum"]
            rows.append({"split": order, "test set": "the course's" if order == 0 else f"order {order}",
                         "comparison": f"{a} vs {b}", "what": what, "seeds": f"{len(ranks[a])} + {len(ranks[b])}",
                         "A": d["A"], "B": d["B"], "difference": d["diff"], "lo": d["lo"], "hi": d["hi"],
                         "verdict": metrics.verdict(d["lo"], d["hi"])})
    return rows


def split_table(budget: str = "cpu", course_ranks: dict[str, list[dict]] | None = None, caption_image=None,
                n_boot: int = 1000) -> pd.DataFrame:
    """From the committed files: per split order (the course's, 0, first), the primary and the first secondary
    difference (rSum points, 95% interval); with `course_ranks` ({model: [ranks per seed]}, as 06's runs give
    them) and the course test set's `caption_image`, the course split's rows come from those instead. Rows
    recorded with a recipe other than today's `recipes.train_config` are an error (run `make splits`)."""
    committed = load_committed(budget)
    stale = [f"split {r.split} {r.model} seed {r.seed}" for r in committed.table.itertuples()
             if r.recipe != run_dir(train_config(r.model, budget, int(r.seed))).name]
    if stale:
        raise RuntimeError(f"{len(stale)} committed run(s) were trained with another recipe than today's "
                           f"train_config (first: {stale[0]}): the search's settings changed since; run "
                           f"`make splits` to retrain them ({COST}) and commit the two files")
    rows = []
    if course_ranks is not None:
        if caption_image is None:
            raise ValueError("course_ranks needs the course test set's caption_image (feats['test'].caption_image)")
        rows += comparison_rows(0, course_ranks, caption_image, n_boot)
    for order in sorted(o for o in committed.tests if o or course_ranks is None):
        rows += comparison_rows(order, committed.runs(order), committed.tests[order]["caption_image"], n_boot)
    return pd.DataFrame(rows)
