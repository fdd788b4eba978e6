"""Runs trained side by side (helpers.parallel_runs) are the runs `train.train` makes, bit for bit."""
import dataclasses

import pytest
import torch

from helpers import parallel_runs, reproduce, train as T

TINY = {"dim": 16, "private_dim": 8}


def synthetic_features() -> dict:
    """What the workers load in this test (module level, so a spawned worker can import it)."""
    train_fs, val_fs = T.synthetic_split(40, seed=5)
    return {split: dataclasses.replace(fs, source="synthetic-5")
            for split, fs in (("train", train_fs), ("val", val_fs), ("test", val_fs))}


def config(model: str, seed: int) -> T.TrainConfig:
    return T.TrainConfig(model=model, seed=seed, model_overrides=TINY, epochs=3, batch_size=8,
                         progress=False, device="cpu")


def test_parallel_runs_equal_one_thread_runs_in_this_process(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_WORKERS", "2")
    feats = synthetic_features()
    jobs = [(config("decoupled", 0), tmp_path / "par" / "a"), (config("joint", 1), tmp_path / "par" / "b")]
    assert all(reproduce.needs_work(cfg, folder, rank=True) for cfg, folder in jobs)
    assert parallel_runs.run_missing(jobs, feats, rank=True, load=synthetic_features) == 2
    assert not any(reproduce.needs_work(cfg, folder, rank=True) for cfg, folder in jobs)
    assert parallel_runs.run_missing(jobs, feats, rank=True, load=synthetic_features) == 0   # nothing left

    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                   # what a worker uses
    try:
        for cfg, folder in jobs:
            here = T.train(cfg, feats["train"], feats["val"], tmp_path / "here" / folder.name)
            there = T.load_result(folder)
            cols = [c for c in here.history.columns if c not in ("seconds", "val_seconds")]
            assert here.history[cols].equals(there.history[cols]) and here.best == there.best
            for name, p in here.model.state_dict().items():
                assert torch.equal(p, there.model.state_dict()[name]), name
            ranks = reproduce.rank_folder(here.run_dir, feats["test"])
            cached = reproduce.rank_folder(folder, feats["test"])           # written by the worker
            assert (ranks["img_rank"] == cached["img_rank"]).all() and (ranks["cap_rank"] == cached["cap_rank"]).all()
    finally:
        torch.set_num_threads(threads)


def dies() -> dict:
    """A worker that dies while loading its features (as if killed for memory)."""
    import os
    os._exit(3)


def test_a_dead_worker_gets_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_WORKERS", "2")
    jobs = [(config("dual", s), tmp_path / str(s)) for s in (0, 1)]
    with pytest.raises(RuntimeError, match="stopped abruptly.*COURSE_WORKERS=1"):
        parallel_runs.run_missing(jobs, synthetic_features(), load=dies)


def test_a_worker_refuses_features_other_than_the_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel_runs, "_FEATURES", None)
    with pytest.raises(parallel_runs.OtherFeatures, match="synthetic-5"):
        parallel_runs._run(config("dual", 0), str(tmp_path / "run"), False, "another-source", synthetic_features)
    assert not (tmp_path / "run").exists()


def test_worker_count(monkeypatch):
    monkeypatch.delenv("COURSE_WORKERS", raising=False)
    assert parallel_runs.workers(1) == 1                       # one job: this process
    assert parallel_runs.workers(25) == min(torch.get_num_threads(), parallel_runs.MAX_WORKERS)
    monkeypatch.setenv("COURSE_WORKERS", "3")
    assert parallel_runs.workers(2) == 2 and parallel_runs.workers(25) == 3
    monkeypatch.setenv("COURSE_WORKERS", "1")
    assert parallel_runs.workers(25) == 1
    monkeypatch.setenv("COURSE_WORKERS", "two")
    with pytest.raises(ValueError, match="whole number"):
        parallel_runs.workers(25)


def test_unfinished_and_unranked_runs_need_work(tmp_path):
    feats = synthetic_features()
    cfg = config("dual", 0)
    assert reproduce.needs_work(cfg, tmp_path / "run")                               # nothing there
    def stop(step):
        if step == 6:                                                                # before epoch 2 is saved
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, feats["train"], feats["val"], tmp_path / "run", on_step=stop)
    assert reproduce.needs_work(cfg, tmp_path / "run")                               # 1 of 3 epochs saved
    T.train(cfg, feats["train"], feats["val"], tmp_path / "run")
    assert not reproduce.needs_work(cfg, tmp_path / "run") and reproduce.needs_work(cfg, tmp_path / "run", rank=True)
    reproduce.rank_folder(tmp_path / "run", feats["test"])
    assert not reproduce.needs_work(cfg, tmp_path / "run", rank=True)
