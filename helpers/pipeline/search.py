"""The same small search for every model: learning rate x initial temperature, chosen on validation.

Every model gets the same grid (`recipes.GRID`: equal trials), seed 0, the budget's early stopping, and
the trial with the best validation rSum is its setting. The search is costly (7 models x 4 trials), so it
runs outside the tests (`make search`, or `python -m helpers search`) and writes
`notebooks/search-<budget>.csv`, which is committed; `recipes.train_config` reads the chosen setting from
it, and notebook 05 re-trains each chosen trial and checks it against the table (`recheck`).
"""
from __future__ import annotations

import pandas as pd

from ..atomic import write_csv
from ..checks import TOLERANCES
from ..train import TrainResult
from .recipes import GRID, chosen, search_table, train_config, trials
from .runs import train_run


def search(feats, model_names, budget: str = "cpu") -> pd.DataFrame:
    """Train every model with every trial (seed 0) -> one row per trial: model, lr, init_temperature,
    best epoch, epochs run, best validation rSum, final learned temperature, seconds (training and
    validation, from the run's history: a finished run is reused, not retrained)."""
    rows = []
    for model in model_names:
        for trial in trials():
            r = train_run(train_config(model, budget, seed=0, setting=trial), feats)
            rows.append({"model": model, **trial, "best epoch": r.best["epoch"], "epochs": len(r.history),
                         "val rsum": round(r.best["rsum"], 2),
                         "learned temperature": round(1 / r.model.logit_scale.exp().item(), 4),
                         "seconds": round(float(r.history.seconds.sum()), 1)})
    return pd.DataFrame(rows)


def write_search(table: pd.DataFrame, budget: str) -> pd.DataFrame:
    """Write the search's table, keeping other models' rows from an earlier search -> the whole table."""
    path = search_table(budget)
    if path.is_file():
        old = pd.read_csv(path)
        table = pd.concat([old[~old.model.isin(table.model.unique())], table], ignore_index=True)
    write_csv(table, path, index=False)
    return table


def recheck(results: dict[str, TrainResult], budget: str = "cpu") -> pd.DataFrame:
    """{model: TrainResult of its chosen setting, seed 0} -> the search table's row beside the rerun.

    The rerun is the same configuration as the chosen trial, so its best validation rSum must match the
    committed table within the `val_rsum` tolerance of `helpers.checks` (float kernels differ between
    CPUs); a larger gap means the code or the data changed since the search: run `make search` again.
    Also raises if a run's best epoch is its last (it had not converged, or early stopping did not run).
    """
    tolerance = TOLERANCES["val_rsum"].abs
    table = chosen(pd.read_csv(search_table(budget)))
    rows, problems = [], []
    for name, r in results.items():
        want = table.loc[name]
        rows.append({"model": name, "lr": want["lr"], "init_temperature": want["init_temperature"],
                     "search: val rsum": want["val rsum"], "rerun: val rsum": round(r.best["rsum"], 2),
                     "search: best epoch": int(want["best epoch"]), "rerun: best epoch": r.best["epoch"],
                     "rerun: epochs run": len(r.history)})
        if abs(r.best["rsum"] - want["val rsum"]) > tolerance:
            problems.append(f"{name}: val rSum {r.best['rsum']:.2f} vs {want['val rsum']:.2f} in {search_table(budget).name}")
        if r.best["epoch"] >= len(r.history):
            problems.append(f"{name}: best epoch {r.best['epoch']} is its last; it may not have converged")
    if problems:
        raise AssertionError("the chosen settings do not reproduce the search (tolerance "
                             f"{tolerance} rSum points): " + "; ".join(problems)
                             + ". If the code or data changed on purpose, run `make search` and commit the table.")
    return pd.DataFrame(rows).set_index("model")


def chosen_table(table: pd.DataFrame) -> pd.DataFrame:
    """The chosen trial of every model, as `python -m helpers search` prints it."""
    return chosen(table)[list(GRID) + ["best epoch", "val rsum"]]
