"""The bracketing search (helpers.pipeline.search): a grid shared by every model, grown on any edge a model's choice
sits on, every trial's convergence recorded, and an interrupted search resumed from the committed rows."""
import math

import pandas as pd
import pytest
import torch

from helpers.config import Paths
from helpers.pipeline import recipes, runs, search
from helpers.train import MAX_LOGIT_SCALE, TrainConfig, TrainResult


def test_the_grid_starts_with_three_values_per_axis_from_the_ladders():
    for axis, values in recipes.START_GRID.items():
        assert len(values) >= 3 and set(values) <= set(recipes.LADDERS[axis])
    assert len(search.grid_trials(recipes.START_GRID)) == 9


def test_the_temperature_ladder_starts_at_the_least_temperature_a_model_may_learn():
    assert min(recipes.LADDERS["init_temperature"]) == pytest.approx(1 / math.exp(MAX_LOGIT_SCALE))


def best_rows(**per_model):
    return pd.DataFrame([{"model": m, "lr": lr, "init_temperature": t} for m, (lr, t) in per_model.items()])


def test_an_interior_choice_leaves_the_grid_as_it_is():
    grid = recipes.START_GRID
    assert search.extend(grid, best_rows(dual=(1e-3, 0.1), joint=(1e-3, 0.1))) == grid


def test_an_edge_grows_the_grid_on_that_side_only_and_for_every_model():
    grid = recipes.START_GRID
    wider = search.extend(grid, best_rows(dual=(3e-4, 0.1), joint=(1e-3, 0.3)))
    assert wider["lr"] == (1e-4, 3e-4, 1e-3, 3e-3)
    assert wider["init_temperature"] == (0.03, 0.1, 0.3, 1.0)
    # the end of a ladder: nothing further to add on that side
    top = {"lr": (1e-2, 3e-2, 1e-1), "init_temperature": (0.3, 1.0, 0.1)}
    assert search.extend(top, best_rows(blog=(1e-1, 1.0)))["lr"] == (1e-2, 3e-2, 1e-1)


def test_bracketed_says_which_choices_are_interior():
    grid = {"lr": (1e-4, 3e-4, 1e-3), "init_temperature": (0.03, 0.1, 0.3)}
    table = pd.DataFrame({"model": ["a", "a", "b", "b"], "lr": [3e-4, 1e-3, 1e-4, 3e-4],
                          "init_temperature": [0.1, 0.1, 0.1, 0.3], "val rsum": [300.0, 290.0, 310.0, 305.0],
                          "best epoch": [5, 4, 6, 3], "epochs": [8, 7, 9, 6], "learned temperature": [0.08] * 4})
    out = search.bracketed(table, grid)
    assert bool(out.loc["a", "lr interior"]) and bool(out.loc["a", "init_temperature interior"])
    assert not bool(out.loc["b", "lr interior"]) and not out["lr at ladder end"].any()
    at_cap = search.bracketed(table.assign(init_temperature=min(recipes.LADDERS["init_temperature"])),
                              {**grid, "init_temperature": (0.01, 0.03, 0.1)})
    assert at_cap["init_temperature at ladder end"].all() and not at_cap["init_temperature interior"].any()


def fake_result(cfg: TrainConfig) -> TrainResult:
    """A made-up trial whose validation peaks at lr 3e-4 and temperature 0.1, so the search must grow downwards."""
    score = 300 - 20 * abs(math.log10(cfg.lr / 3e-4)) - 10 * abs(math.log10(cfg.model_overrides["init_temperature"] / 0.1))
    history = pd.DataFrame({"epoch": range(1, 9), "rsum": [score - 8, score - 4, score - 1, score, score - 1,
                                                           score - 2, score - 2, score - 3], "seconds": [1.0] * 8})
    model = torch.nn.Module()
    model.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.08)))
    return TrainResult(model=model, history=history, best={"epoch": 4, "rsum": score})


def test_the_search_grows_until_interior_records_convergence_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(recipes, "PATHS", Paths(root=tmp_path))
    (tmp_path / "notebooks").mkdir()
    trained = []
    monkeypatch.setattr(search, "run_all", lambda cfgs, feats, rank: None)
    monkeypatch.setattr(search, "train_run", lambda cfg, feats: trained.append(cfg) or fake_result(cfg))
    table, grid = search.bracketing_search(None, ["dual", "decoupled"], "cpu", log=lambda m: None)
    assert grid["lr"] == (1e-4, 3e-4, 1e-3, 3e-3) and grid["init_temperature"] == (0.03, 0.1, 0.3)
    assert len(table) == 2 * 12 and table.groupby("model").size().tolist() == [12, 12]   # the same trials for each
    best = search.bracketed(table, grid)
    assert best["lr interior"].all() and best["init_temperature interior"].all()
    row = table.iloc[0]
    assert row["epochs"] == 8 and row["best epoch"] == 4 and row["stopped by"] == "patience"
    assert row["change over last 3 epochs"] == pytest.approx(-2.0) and row["learned temperature"] == pytest.approx(0.08)
    assert (tmp_path / "notebooks" / "search-grid-cpu.csv").is_file()
    # a second search trains nothing: every row is reused from the committed table
    n = len(trained)
    again, _ = search.bracketing_search(None, ["dual", "decoupled"], "cpu", log=lambda m: None)
    assert len(trained) == n and len(again) == len(table)
    # a changed recipe makes a row stale: that model's trials train again
    monkeypatch.setitem(recipes.BUDGETS, "cpu", {"epochs": 30})
    search.bracketing_search(None, ["dual"], "cpu", log=lambda m: None)
    assert len(trained) == n + 12


def test_a_table_that_is_not_the_searchs_is_refused(tmp_path):
    path = tmp_path / "search-grid-cpu.csv"
    pd.DataFrame({"model": ["dual"], "lr": [1e-3]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="not a table of the bracketing search"):
        search.read_grid(path)


def test_a_run_that_ends_at_the_cap_but_patience_epochs_after_its_best_stopped_by_patience():
    cfg = TrainConfig(epochs=20, patience=3)
    assert runs.stopped_by(17, 20, cfg) == "patience"
    assert runs.stopped_by(19, 20, cfg) == "epoch cap"
    assert runs.stopped_by(5, 8, cfg) == "patience"


def synthetic_trials():
    grid = {"lr": (1e-4, 3e-4, 1e-3), "init_temperature": (0.01, 0.03, 0.1)}
    rows = []
    for m, best in [("a", (3e-4, 0.03)), ("b", (3e-4, 0.01))]:
        for lr, t in [(x["lr"], x["init_temperature"]) for x in search.grid_trials(grid)]:
            chosen = (lr, t) == best
            rows.append({"model": m, "lr": lr, "init_temperature": t, "best epoch": 5, "epochs": 8 if chosen else 20,
                         "val rsum": 300.0 if chosen else 250.0, "change over last 3 epochs": -1.0 if chosen else 0.5,
                         "stopped by": "patience" if chosen or lr != 1e-4 else "epoch cap", "learned temperature": t})
    return pd.DataFrame(rows), grid


def test_the_convergence_summary_and_the_search_sentence_come_from_the_rows():
    table, grid = synthetic_trials()
    summary = search.convergence_summary(table)
    assert summary.loc["a"].tolist() == [9, 6, 3, "8-20", "-1.0 to +0.5", "0.010-0.100"]
    sentence = search.search_sentence(table, grid)
    assert sentence.startswith("Every model had the same 9 trials (lr {0.0001, 0.0003, 0.001} x init_temperature "
                               "{0.01, 0.03, 0.1}); 1 of 2 choices are interior on both axes; not interior, but "
                               "where the grid cannot grow: `b` (init_temperature at its ladder's end)")
    assert "6 of 18 trials ended at the epoch cap still within patience of their best; none of them" in sentence
    capped = table.assign(**{"stopped by": ["epoch cap"] * len(table)})
    assert search.search_sentence(capped, grid).endswith("of the choices, `a`, `b`.")
