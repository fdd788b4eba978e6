"""Runs trained side by side (helpers.fast.parallel, as helpers.pipeline.runs uses it) are the runs `train.train`
makes, bit for bit."""
import dataclasses

import pytest
import torch

from helpers import train as T
from helpers.fast import parallel
from helpers.features import synthetic_split
from helpers.pipeline import recipes, runs

TINY = {"dim": 16}


def synthetic_features() -> dict:
    """What the workers load in this test (module level, so a spawned worker can import it)."""
    train_fs, val_fs = synthetic_split(40, seed=5)
    return {split: dataclasses.replace(fs, source="synthetic-5")
            for split, fs in (("train", train_fs), ("val", val_fs), ("test", val_fs))}


def config(model: str, seed: int) -> T.TrainConfig:
    return T.TrainConfig(model=model, seed=seed, model_overrides=TINY, epochs=3, batch_size=8,
                         progress=False, device="cpu")


def test_parallel_runs_equal_one_thread_runs_in_this_process(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_WORKERS", "2")
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "par"))        # the spawned workers inherit it
    feats = synthetic_features()
    configs = [config("decoupled", 0), config("joint", 1)]
    jobs = [(cfg, True) for cfg in configs]
    assert all(runs.needs_work(cfg, rank=True) for cfg in configs)
    assert parallel.side_by_side(runs.train_and_rank, jobs, feats, synthetic_features) == 2
    assert not any(runs.needs_work(cfg, rank=True) for cfg in configs)
    there = {cfg.model: (T.load_result(recipes.run_dir(cfg)), runs.rank_run(cfg, feats)) for cfg in configs}

    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                   # what a worker uses
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "here"))
    try:
        for cfg in configs:
            here = runs.train_run(cfg, feats)
            (result, cached) = there[cfg.model]
            assert here.run_dir.parent == tmp_path / "here" and result.run_dir.name == here.run_dir.name
            cols = [c for c in here.history.columns if c not in ("seconds", "val_seconds")]
            assert here.history[cols].equals(result.history[cols]) and here.best == result.best
            for name, p in here.model.state_dict().items():
                assert torch.equal(p, result.model.state_dict()[name]), name
            ranks = runs.rank_run(cfg, feats)
            assert (ranks["img_rank"] == cached["img_rank"]).all() and (ranks["cap_rank"] == cached["cap_rank"]).all()
    finally:
        torch.set_num_threads(threads)


def dies() -> dict:
    """A worker that dies while loading its features (as if killed for memory)."""
    import os
    os._exit(3)


def test_a_dead_worker_gets_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_WORKERS", "2")
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path))
    jobs = [(config("dual", s), False) for s in (0, 1)]
    with pytest.raises(RuntimeError, match="stopped abruptly.*COURSE_WORKERS=1"):
        parallel.side_by_side(runs.train_and_rank, jobs, synthetic_features(), dies)


def test_a_worker_refuses_features_other_than_the_jobs(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "_FEATURES", None)
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path))
    with pytest.raises(parallel.OtherFeatures, match="synthetic-5"):
        parallel._run(runs.train_and_rank, (config("dual", 0), False), "another-source", synthetic_features)
    assert not list(tmp_path.iterdir())


def test_worker_count(monkeypatch):
    monkeypatch.delenv("COURSE_WORKERS", raising=False)
    assert parallel.workers(1) == 1                            # one job: this process
    assert parallel.workers(25) == min(torch.get_num_threads(), parallel.MAX_WORKERS)
    monkeypatch.setenv("COURSE_WORKERS", "3")
    assert parallel.workers(2) == 2 and parallel.workers(25) == 3
    monkeypatch.setenv("COURSE_WORKERS", "1")
    assert parallel.workers(25) == 1
    assert parallel.side_by_side(runs.train_and_rank, [(config("dual", 0), False)] * 2, synthetic_features(),
                                 synthetic_features) == 0        # one worker would do: the caller runs them
    monkeypatch.setenv("COURSE_WORKERS", "two")
    with pytest.raises(ValueError, match="whole number"):
        parallel.workers(25)


def test_unfinished_and_unranked_runs_need_work(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path))
    feats = synthetic_features()
    cfg = config("dual", 0)
    assert runs.needs_work(cfg)                                                     # nothing there

    def stop(step):
        if step == 6:                                                               # before epoch 2 is saved
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, feats["train"], feats["val"], recipes.run_dir(cfg), on_step=stop)
    assert runs.needs_work(cfg)                                                     # 1 of 3 epochs saved
    runs.train_run(cfg, feats)
    assert not runs.needs_work(cfg) and runs.needs_work(cfg, rank=True)
    runs.rank_run(cfg, feats)
    assert not runs.needs_work(cfg, rank=True)
