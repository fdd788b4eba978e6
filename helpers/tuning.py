"""The same small search for every model: learning rate x initial temperature, chosen on validation.

Every model gets the same grid (`GRID`: equal trials), seed 0, the budget's early stopping, and
the trial with the best validation rSum is its setting. The search is costly (7 models x 4 trials),
so it runs outside the tests (`make search`, or `python -m helpers.tuning`) and writes
`notebooks/search-<budget>.csv`, which is committed; `reproduce.train_config` reads the chosen
setting from it, and notebook 05 re-trains each chosen trial and checks it against the table.
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import pandas as pd

from .config import PATHS, PROJECT_ROOT

GRID = {"lr": (1e-3, 3e-3), "init_temperature": (0.03, 0.1)}   # the temperature stays learnable
SEARCH_DIR = PROJECT_ROOT / "notebooks"


def table_path(budget: str) -> Path:
    return SEARCH_DIR / f"search-{budget}.csv"


def trials() -> list[dict]:
    """Every combination of `GRID` -> [{'lr': ..., 'init_temperature': ...}, ...] (4 trials)."""
    return [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]


def trial_name(model: str, trial: dict) -> str:
    return f"{model}-lr{trial['lr']:g}-t{trial['init_temperature']:g}"


def search(feats, model_names, budget: str = "cpu") -> pd.DataFrame:
    """Train every model with every trial (seed 0) -> one row per trial: model, lr, init_temperature,
    best epoch, epochs run, best validation rSum, final learned temperature, seconds (training and
    validation, from the run's history: a finished run is reused, not retrained)."""
    from .reproduce import train_config
    from .train import train

    rows = []
    for model in model_names:
        for trial in trials():
            cfg = train_config(model, budget, seed=0, setting=trial)
            r = train(cfg, feats["train"], feats["val"], PATHS.runs / "search" / budget / trial_name(model, trial))
            rows.append({"model": model, **trial, "best epoch": r.best["epoch"], "epochs": len(r.history),
                         "val rsum": round(r.best["rsum"], 2),
                         "learned temperature": round(1 / r.model.logit_scale.exp().item(), 4),
                         "seconds": round(float(r.history.seconds.sum()), 1)})
    return pd.DataFrame(rows)


def chosen(table: pd.DataFrame) -> pd.DataFrame:
    """Per model, the trial with the best validation rSum (the first one on a tie) -> indexed by model."""
    best = table.loc[table.groupby("model", sort=False)["val rsum"].idxmax()]
    return best.set_index("model")


def chosen_setting(model: str, budget: str) -> dict | None:
    """{'lr', 'init_temperature'} chosen for `model` under `budget`, or None without a search table."""
    path = table_path(budget)
    if not path.is_file():
        return None
    table = chosen(pd.read_csv(path))
    if model not in table.index:
        return None
    row = table.loc[model]
    return {"lr": float(row["lr"]), "init_temperature": float(row["init_temperature"])}


def recheck(results: dict, budget: str = "cpu") -> pd.DataFrame:
    """{model: TrainResult of its chosen setting, seed 0} -> the search table's row beside the rerun.

    The rerun is the same configuration as the chosen trial, so its best validation rSum must match the
    committed table within the `val_rsum` tolerance of `helpers.checks` (float kernels differ between
    CPUs); a larger gap means the code or the data changed since the search: run `make search` again.
    Also raises if a run's best epoch is its last (it had not converged, or early stopping did not run).
    """
    from .checks import TOLERANCES

    tolerance = TOLERANCES["val_rsum"].abs
    table = chosen(pd.read_csv(table_path(budget)))
    rows, problems = [], []
    for name, r in results.items():
        want = table.loc[name]
        rows.append({"model": name, "lr": want["lr"], "init_temperature": want["init_temperature"],
                     "search: val rsum": want["val rsum"], "rerun: val rsum": round(r.best["rsum"], 2),
                     "search: best epoch": int(want["best epoch"]), "rerun: best epoch": r.best["epoch"],
                     "rerun: epochs run": len(r.history)})
        if abs(r.best["rsum"] - want["val rsum"]) > tolerance:
            problems.append(f"{name}: val rSum {r.best['rsum']:.2f} vs {want['val rsum']:.2f} in {table_path(budget).name}")
        if r.best["epoch"] >= len(r.history):
            problems.append(f"{name}: best epoch {r.best['epoch']} is its last; it may not have converged")
    if problems:
        raise AssertionError("the chosen settings do not reproduce the search (tolerance "
                             f"{tolerance} rSum points): " + "; ".join(problems)
                             + ". If the code or data changed on purpose, run `make search` and commit the table.")
    return pd.DataFrame(rows).set_index("model")


def main(argv: list[str] | None = None) -> int:
    from .features import load_course_features
    from .reproduce import MODEL_NAMES

    p = argparse.ArgumentParser(prog="python -m helpers.tuning", description=__doc__.split("\n")[0])
    p.add_argument("--budget", default="cpu")
    p.add_argument("--models", nargs="+", default=list(MODEL_NAMES))
    a = p.parse_args(argv)
    table = search(load_course_features(progress=False), a.models, a.budget)
    path = table_path(a.budget)
    if path.is_file():                                   # keep other models' rows from an earlier search
        old = pd.read_csv(path)
        table = pd.concat([old[~old.model.isin(a.models)], table], ignore_index=True)
    table.to_csv(path, index=False)
    print(table.to_string(index=False))
    print(f"\nchosen (best validation rSum per model), written to {path}:")
    print(chosen(table)[list(GRID) + ["best epoch", "val rsum"]].to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
