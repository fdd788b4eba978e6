"""The course's runs (helpers.pipeline.runs) and 06's tables (helpers.pipeline.evaluation): runs reused, rankings
cached, claim verdicts computed from intervals."""
import numpy as np
import pandas as pd
import pytest
import torch

from helpers.features import synthetic_featureset
from helpers.pipeline import evaluation, recipes, runs, verdicts


@pytest.fixture
def feats(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("COURSE_WORKERS", "1")
    monkeypatch.setitem(recipes.BUDGETS, "tiny", dict(epochs=2, batch_size=16, lr=2e-3, model_overrides={"dim": 16}))
    fs = synthetic_featureset(n_images=56, image_dim=32, text_dim=24, regions=9)
    return {"train": fs.select_images(torch.arange(32)), "val": fs.select_images(torch.arange(32, 44)),
            "test": fs.select_images(torch.arange(44, 56))}


def test_runs_and_rankings_are_reused(feats, tmp_path):
    ranks = runs.evaluate_all(feats, ("dual", "decoupled"), seeds=(0, 1), budget="tiny")
    assert len(ranks["dual"]) == 2 and ranks["dual"][0]["img_rank"].shape == (12,)
    folder = recipes.run_dir(recipes.train_config("decoupled", "tiny", 1))
    cached = folder / "test_ranks.npz"
    assert folder.parent == tmp_path / "runs" and cached.is_file()
    assert not runs.needs_work(recipes.train_config("decoupled", "tiny", 1), rank=True)
    before = cached.stat().st_mtime_ns
    again = runs.evaluate_all(feats, ("dual", "decoupled"), seeds=(0, 1), budget="tiny")
    assert cached.stat().st_mtime_ns == before
    assert np.array_equal(again["decoupled"][1]["cap_rank"], ranks["decoupled"][1]["cap_rank"])


def test_claims_and_comparison_tables_follow_the_intervals():
    rng = np.random.default_rng(0)
    caption_image = np.repeat(np.arange(100), 5)
    good = [(np.zeros(100, dtype=int), np.zeros(500, dtype=int))] * 3           # every query right at rank 0
    bad = [(rng.integers(0, 50, 100), rng.integers(0, 50, 500)) for _ in range(3)]
    ranks = {name: [{"img_rank": i, "cap_rank": c} for i, c in runs]
             for name, runs in {"decoupled": good, "joint_words": bad, "joint": bad, "dual_words": good,
                                "blog": bad}.items()}
    claims = evaluation.claims_table(ranks, caption_image, n_boot=200)
    assert len(claims) == 2 * len(evaluation.READINGS) and claims.primary.sum() == 1
    primary = claims[claims.primary].iloc[0]
    assert (primary.A, primary.B, primary.metric, primary.reading) == ("decoupled", "joint_words", "rsum", "relative %")
    assert primary["lo"] > evaluation.CLAIMED_GAIN and primary["verdict"] == "supported"
    assert set(claims[claims.B == "joint"].pair) == {"the blog's sentence: flow and head"}
    without = evaluation.claims_table({k: v for k, v in ranks.items() if k != "joint"}, caption_image, n_boot=50)
    assert len(without) == len(evaluation.READINGS)                     # a pair lacking a model is left out
    comparisons = verdicts.family_table(ranks, caption_image, n_boot=200)
    by = comparisons.set_index("comparison")
    assert by.loc["decoupled vs dual_words", "difference"] == 0
    assert by.loc["decoupled vs dual_words", "verdict"] == "no credible difference"
    assert by.loc["blog vs decoupled", "verdict"] == "A credibly worse"
    results = evaluation.results_table(ranks, caption_image, n_boot=50)
    table = evaluation.markdown_table(results, claims, comparisons)
    assert "decoupled vs joint_words, rsum, relative % (the primary test)" in table and "blog vs decoupled" in table
    assert "Holm within the family" in table


def test_unknown_budget_is_rejected():
    with pytest.raises(ValueError, match="unknown budget 'tpu'"):
        recipes.train_config("dual", "tpu")


def test_intervals_read_as_one_string_per_cell():
    assert evaluation.with_interval(-1.234, -2.5, 0.04) == "-1.2 [-2.5, +0.0]"
    results = pd.DataFrame({"model": ["joint", "dual"], "metric": ["rsum", "rsum"], "mean": [183.71, 167.94],
                            "std": [4.1, 4.0], "lo": [176.0, 160.5], "hi": [191.2, 174.8]})
    table = evaluation.results_for_reading(results)
    assert table.index.tolist() == ["dual", "joint"]                       # the course's model order
    assert table.loc["joint", "rsum"] == "183.7 ± 4.1  [176.0, 191.2]"


def test_a_run_stopped_early_is_resumed_and_a_ranking_older_than_its_run_is_redone(feats):
    cfg = recipes.train_config("decoupled", "tiny", 0)
    assert runs.needs_work(cfg)                                      # nothing trained yet
    runs.train_and_rank(feats, cfg, rank=True)
    assert not runs.needs_work(cfg, rank=True)
    folder = recipes.run_dir(cfg)
    (folder / "test_ranks.npz").touch()
    import os
    os.utime(folder / "test_ranks.npz", (0, 0))                      # older than best.pt
    assert runs.needs_work(cfg, rank=True) and not runs.needs_work(cfg)
    assert not runs.ranking_is_fresh(folder)
