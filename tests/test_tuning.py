"""The search: equal trials per model, the choice, and the re-check against the committed table."""
import pandas as pd
import pytest

from helpers import reproduce, tuning
from helpers.train import TrainResult


def test_every_model_gets_the_same_four_trials():
    trials = tuning.trials()
    assert len(trials) == 4 and {t["lr"] for t in trials} == {1e-3, 3e-3}
    assert {t["init_temperature"] for t in trials} == {0.03, 0.1}


def test_chosen_is_the_best_validation_trial_and_feeds_the_train_config(tmp_path, monkeypatch):
    table = pd.DataFrame({"model": ["dual"] * 2 + ["decoupled"] * 2, "lr": [1e-3, 3e-3, 1e-3, 3e-3],
                          "init_temperature": [0.1, 0.03, 0.03, 0.1], "best epoch": [5, 4, 6, 3],
                          "epochs": [8, 7, 9, 6], "val rsum": [300.0, 310.0, 290.0, 280.0]})
    monkeypatch.setattr(tuning, "SEARCH_DIR", tmp_path)
    table.to_csv(tuning.table_path("cpu"), index=False)
    assert tuning.chosen(table).loc["dual", "lr"] == 3e-3
    assert tuning.chosen_setting("decoupled", "cpu") == {"lr": 1e-3, "init_temperature": 0.03}
    cfg = reproduce.train_config("decoupled", "cpu", seed=2)
    assert cfg.lr == 1e-3 and cfg.model_overrides["init_temperature"] == 0.03 and cfg.patience > 0
    assert tuning.chosen_setting("joint", "cpu") is None                 # not searched: the budget's defaults
    assert reproduce.train_config("joint", "cpu").lr == reproduce.BUDGETS["cpu"]["lr"]

    def result(rsum, best, epochs):
        history = pd.DataFrame({"epoch": range(1, epochs + 1)})
        return TrainResult(model=None, history=history, best={"epoch": best, "rsum": rsum})

    ok = tuning.recheck({"dual": result(310.4, 4, 7), "decoupled": result(290.0, 6, 9)}, "cpu")
    assert ok.loc["dual", "rerun: val rsum"] == 310.4
    with pytest.raises(AssertionError, match="dual: val rSum 305.00 vs 310.00"):
        tuning.recheck({"dual": result(305.0, 4, 7)}, "cpu")            # the science moved
    with pytest.raises(AssertionError, match="best epoch 7 is its last"):
        tuning.recheck({"dual": result(310.0, 7, 7)}, "cpu")            # still improving at the end
