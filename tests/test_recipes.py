"""The recipe (helpers.pipeline.recipes): equal search trials per model, the choice, one folder per configuration;
and the search's re-check against the committed table (helpers.pipeline.search)."""
from dataclasses import replace

import pandas as pd
import pytest

from helpers.config import Paths
from helpers.pipeline import recipes, search
from helpers.train import TrainConfig, TrainResult


def test_chosen_is_the_best_validation_trial_and_feeds_the_train_config(tmp_path, monkeypatch):
    table = pd.DataFrame({"model": ["dual"] * 2 + ["decoupled"] * 2, "lr": [1e-3, 3e-3, 1e-3, 3e-3],
                          "init_temperature": [0.1, 0.03, 0.03, 0.1], "best epoch": [5, 4, 6, 3],
                          "epochs": [8, 7, 9, 6], "val rsum": [300.0, 310.0, 290.0, 280.0]})
    monkeypatch.setattr(recipes, "PATHS", Paths(root=tmp_path))
    (tmp_path / "notebooks").mkdir()
    table["recipe"] = [recipes.recipe_id(recipes.train_config(r.model, "cpu", seed=0, setting={
        "lr": r.lr, "init_temperature": r.init_temperature})) for r in table.itertuples()]
    stale = table.iloc[[0]].assign(recipe="dual-seed0-0000000000:00000000", **{"val rsum": 999.0})
    pd.concat([table, stale]).to_csv(recipes.grid_table("cpu"), index=False)
    assert len(recipes.searched("cpu")) == 4                          # a row whose recipe changed is left out
    assert recipes.chosen(table).loc["dual", "lr"] == 3e-3
    assert recipes.chosen_setting("decoupled", "cpu") == {"lr": 1e-3, "init_temperature": 0.03}
    cfg = recipes.train_config("decoupled", "cpu", seed=2)
    assert cfg.lr == 1e-3 and cfg.model_overrides["init_temperature"] == 0.03 and cfg.patience > 0
    assert recipes.chosen_setting("joint", "cpu") is None                # not searched: the budget's defaults
    assert recipes.train_config("joint", "cpu").lr == TrainConfig().lr

    def result(rsum, best, epochs):
        history = pd.DataFrame({"epoch": range(1, epochs + 1)})
        return TrainResult(model=None, history=history, best={"epoch": best, "rsum": rsum})

    ok = search.recheck({"dual": result(310.4, 4, 7), "decoupled": result(290.0, 6, 9)}, "cpu")
    assert ok.loc["dual", "rerun: val rsum"] == 310.4
    with pytest.raises(AssertionError, match="dual: val rSum 305.00 vs 310.00"):
        search.recheck({"dual": result(305.0, 4, 7)}, "cpu")            # the science moved
    with pytest.raises(AssertionError, match="best epoch 7 is its last"):
        search.recheck({"dual": result(310.0, 7, 7)}, "cpu")            # still improving at the end


def test_the_cpu_budget_is_the_training_defaults_and_the_gpu_budget_changes_only_its_fields(monkeypatch):
    monkeypatch.setattr(recipes, "chosen_setting", lambda model, budget: None)
    cpu, gpu = recipes.train_config("dual", "cpu"), recipes.train_config("dual", "gpu")
    assert replace(cpu, progress=True) == TrainConfig(model="dual")
    changed = {k for k in vars(cpu) if getattr(cpu, k) != getattr(gpu, k)}
    assert changed == set(recipes.BUDGETS["gpu"])


def test_one_folder_per_configuration():
    cfg = recipes.train_config("decoupled", "cpu", seed=1)
    folder = recipes.run_dir(cfg)
    assert folder.parent == recipes.PATHS.runs and folder.name.startswith("decoupled-seed1-")
    assert recipes.run_dir(replace(cfg, progress=not cfg.progress)) == folder        # how it prints: not the run
    assert recipes.run_dir(recipes.train_config("decoupled", "cpu", seed=1)) == folder
    others = [replace(cfg, seed=2), replace(cfg, lr=cfg.lr * 2), replace(cfg, train_fraction=0.5),
              replace(cfg, image_features="imagenet_logits"), replace(cfg, model="no_value"),
              replace(cfg, model_overrides={**cfg.model_overrides, "aux_weight": 1.0}), replace(cfg, epochs=60)]
    assert len({recipes.run_dir(c) for c in others} | {folder}) == len(others) + 1
