"""The search that chooses each model's learning rate and initial temperature on validation, the same for every model.

`bracketing_search` is the search that brackets its choice: one grid shared by every model (`recipes.START_GRID`,
three values per axis), grown on a side wherever a model's best trial sits on that edge (`extend`), for every
model alike, until each choice is interior (`bracketed`). It is costly (7 models x 20 trials), so it runs outside
the tests (`make search`); `recipes.train_config` reads each model's chosen setting from the committed table, and
notebook 05 re-trains each chosen trial and checks it against its row (`recheck`). It writes every trial with its convergence (stopping
epoch, the validation change over the last three epochs, the learned temperature) to
`notebooks/search-grid-<budget>.csv` after each model's trials, and reuses the rows already there whose
configuration is the same (`recipe_id`), so an interrupted search continues where it stopped, even from a fresh
clone that has only the committed table.
"""
from __future__ import annotations

import itertools
import math

import pandas as pd

from ..atomic import write_csv
from ..checks import TOLERANCES
from ..fast import parallel
from ..train import TrainResult
from .recipes import LADDERS, START_GRID, chosen, grid_table, grid_trials, recipe_id, searched, train_config
from .runs import run_all, train_run, trial_row


def recheck(results: dict[str, TrainResult], budget: str = "cpu") -> pd.DataFrame:
    """{model: TrainResult of its chosen setting, seed 0} -> the search table's row beside the rerun.

    The rerun is the same configuration as the chosen trial, so its best validation rSum must match the
    committed table within the `val_rsum` tolerance of `helpers.checks` (float kernels differ between
    CPUs); a larger gap means the code or the data changed since the search: run `make search` again.
    Also raises if a run's best epoch is its last (it had not converged, or early stopping did not run).
    """
    tolerance = TOLERANCES["val_rsum"].abs
    table = chosen(searched(budget))
    rows, problems = [], []
    for name, r in results.items():
        want = table.loc[name]
        rows.append({"model": name, "lr": want["lr"], "init_temperature": want["init_temperature"],
                     "search: val rsum": want["val rsum"], "rerun: val rsum": round(r.best["rsum"], 2),
                     "search: best epoch": int(want["best epoch"]), "rerun: best epoch": r.best["epoch"],
                     "rerun: epochs run": len(r.history)})
        if abs(r.best["rsum"] - want["val rsum"]) > tolerance:
            problems.append(f"{name}: val rSum {r.best['rsum']:.2f} vs {want['val rsum']:.2f} in {grid_table(budget).name}")
        if r.best["epoch"] >= len(r.history):
            problems.append(f"{name}: best epoch {r.best['epoch']} is its last; it may not have converged")
    if problems:
        raise AssertionError("the chosen settings do not reproduce the search (tolerance "
                             f"{tolerance} rSum points): " + "; ".join(problems)
                             + ". If the code or data changed on purpose, run `make search` and commit the table.")
    return pd.DataFrame(rows).set_index("model")


# ----------------------------------------------------------------------------- the bracketing search

AXES = tuple(START_GRID)          # ("lr", "init_temperature")


def read_grid(path) -> pd.DataFrame:
    """The committed rows of the bracketing search (an empty table if there are none yet)."""
    if not path.is_file():
        return pd.DataFrame(columns=["model", *AXES, "recipe"])
    table = pd.read_csv(path)
    missing = {"model", *AXES, "val rsum", "recipe"} - set(table.columns)
    if missing:
        raise ValueError(f"{path} lacks the columns {sorted(missing)}: it is not a table of the bracketing search; "
                         "move it away and run `make search` to write it again")
    return table


def _key(model: str, trial: dict) -> tuple:
    return (model, *(float(trial[a]) for a in AXES))


def rows_of(table: pd.DataFrame, model_names, grid: dict, budget: str) -> pd.DataFrame:
    """The rows of `table` that are the current recipe's trials of `grid` for `model_names`, in grid order."""
    have = {(_key(r.model, {a: getattr(r, a) for a in AXES}), r.recipe): i for i, r in zip(table.index, table.itertuples())}
    picked = []
    for model in model_names:
        for trial in grid_trials(grid):
            i = have.get((_key(model, trial), recipe_id(train_config(model, budget, seed=0, setting=trial))))
            if i is not None:
                picked.append(i)
    return table.loc[picked]


def extend(grid: dict, best: pd.DataFrame) -> dict:
    """The grid grown by one ladder value on every side where some model's best trial (`best`: one row per
    model) sits on the grid's edge; the same grid if every choice is interior (or the ladder has run out)."""
    wider = {a: set(grid[a]) for a in AXES}
    for axis in AXES:
        ladder, values = LADDERS[axis], sorted(grid[axis])
        for value in best[axis]:
            step = ladder.index(min(ladder, key=lambda v: abs(math.log(v / value))))
            if math.isclose(value, values[0]) and step > 0:
                wider[axis].add(ladder[step - 1])
            if math.isclose(value, values[-1]) and step < len(ladder) - 1:
                wider[axis].add(ladder[step + 1])
    return {a: tuple(sorted(wider[a])) for a in AXES}


def bracketed(table: pd.DataFrame, grid: dict) -> pd.DataFrame:
    """Per model: its chosen trial (best validation rSum) and, per axis, whether the choice is interior to the grid
    and, where it is not, whether it sits at the end of its ladder (the grid cannot grow there: for the
    temperature, 0.01 is the least the model may learn, CLIP's cap on the logit scale)."""
    best = chosen(table)
    out = best[[*AXES, "val rsum", "best epoch", "epochs", "learned temperature"]].copy()
    for axis in AXES:
        lo, hi = min(grid[axis]), max(grid[axis])
        ends = (min(LADDERS[axis]), max(LADDERS[axis]))
        out[f"{axis} interior"] = [not (math.isclose(v, lo) or math.isclose(v, hi)) for v in best[axis]]
        out[f"{axis} at ladder end"] = [any(math.isclose(v, e) for e in ends) for v in best[axis]]
    return out


def bracketing_search(feats, model_names, budget: str = "cpu", log=print) -> tuple[pd.DataFrame, dict]:
    """Grow the shared grid until every model's choice is interior -> (every trial's row, the final grid).

    Trials already in the committed table with the same configuration are reused; the others train a model at a
    time, side by side on a CPU (`runs.run_all`), and the table is written after every set that trains together,
    so a stopped search loses at most the runs in training."""
    path = grid_table(budget)
    table, grid = read_grid(path), {a: tuple(START_GRID[a]) for a in AXES}
    for round_ in itertools.count(1):
        for model in model_names:
            todo = [train_config(model, budget, seed=0, setting=t) for t in grid_trials(grid)]
            done = {r for r in table.recipe} if len(table) else set()
            todo = [cfg for cfg in todo if recipe_id(cfg) not in done]
            if not todo:
                continue
            log(f"round {round_}: {model}, {len(todo)} trials to train")
            step = parallel.workers(len(todo), todo[0].device)   # the table is written after every `step` runs
            for start in range(0, len(todo), step):
                together = todo[start:start + step]
                run_all(together, feats, rank=False)
                new = pd.DataFrame([trial_row(cfg, train_run(cfg, feats)) for cfg in together])
                keep = table[~table.recipe.isin(new.recipe)] if len(table) else table.iloc[0:0]
                table = pd.concat([keep, new], ignore_index=True) if len(keep) else new
                write_csv(table, path, index=False)
        wider = extend(grid, chosen(rows_of(table, model_names, grid, budget)))
        if wider == grid:
            return rows_of(table, model_names, grid, budget), grid
        log(f"round {round_}: a choice sits on an edge; the grid grows to {wider}")
        grid = wider


def convergence_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Every trial's convergence (`trial_row`'s columns), per model: trials, how many stopped by patience and by
    the epoch cap, the range of stopping epochs and of the validation change over the last three epochs, and the
    learned temperature's range (of the best epoch's weights)."""
    g = table.groupby("model", sort=False)
    return pd.DataFrame({
        "trials": g.size(),
        "stopped by patience": g["stopped by"].apply(lambda v: int((v == "patience").sum())),
        "stopped by epoch cap": g["stopped by"].apply(lambda v: int((v == "epoch cap").sum())),
        "epochs": g["epochs"].apply(lambda v: f"{int(v.min())}-{int(v.max())}"),
        "change over last 3 epochs": g["change over last 3 epochs"].apply(lambda v: f"{v.min():+.1f} to {v.max():+.1f}"),
        "learned temperature": g["learned temperature"].apply(lambda v: f"{v.min():.3f}-{v.max():.3f}"),
    })


def search_sentence(table: pd.DataFrame, grid: dict) -> str:
    """One sentence, from the rows: trials per model, the final grid, how many choices are interior, which sit
    at a ladder's end, and how many trials ended at the epoch cap (none of them chosen, or which)."""
    best, n = bracketed(table, grid), table.groupby("model").size()
    same = n.nunique() == 1
    interior = best[[f"{a} interior" for a in AXES]].all(axis=1)
    at_end = [f"`{m}` ({', '.join(a for a in AXES if best.loc[m, f'{a} at ladder end'])} at its ladder's end)"
              for m in best.index if not interior[m] and any(best.loc[m, f"{a} at ladder end"] for a in AXES)]
    capped = table[table["stopped by"] == "epoch cap"]
    capped_chosen = [m for m in best.index if ((capped.model == m) & (capped.lr == best.loc[m, "lr"]) &
                                               (capped.init_temperature == best.loc[m, "init_temperature"])).any()]
    axes = " x ".join(f"{a} {{{', '.join(f'{v:g}' for v in sorted(grid[a]))}}}" for a in AXES)
    out = (f"Every model had {'the same ' + str(int(n.iloc[0])) if same else 'these numbers of'} trials ({axes}); "
           f"{int(interior.sum())} of {len(best)} choices are interior on both axes")
    out += f"; not interior, but where the grid cannot grow: {', '.join(at_end)}" if at_end else ""
    out += (f". {len(capped)} of {len(table)} trials ended at the epoch cap still within patience of their best; "
            + (f"of the choices, {', '.join(f'`{m}`' for m in capped_chosen)}." if capped_chosen
               else "none of them is a model's choice."))
    return out
