"""Training loop: data order, schedule, learning, checkpoints, resume after a kill, reuse, torchrun = 1 process."""
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

from helpers import checkpoints, metrics
from helpers import train as T
from helpers.__main__ import main as command_line
from helpers.config import PROJECT_ROOT
from helpers.features import synthetic_split

TINY = {"dim": 16}
N_IMAGES = 48                        # synthetic_split -> 36 train, 12 val images, 5 captions each


@pytest.fixture(scope="module")
def data():
    return synthetic_split(N_IMAGES)


def tiny_config(**kw) -> T.TrainConfig:
    return T.TrainConfig(**{"model_overrides": TINY, "epochs": 3, "batch_size": 8, "progress": False,
                            "device": "cpu", **kw})


def params(model) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def assert_params_close(a: dict, b: dict, atol: float, skip=()) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if k not in skip:
            assert torch.allclose(a[k], b[k], atol=atol, rtol=0), f"{k}: max diff {(a[k] - b[k]).abs().max()}"


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory):
    """A finished 2-epoch `decoupled` run, shared by the checkpoint tests (copy it before damaging it)."""
    cfg = tiny_config(epochs=2, batch_size=12)
    run_dir = tmp_path_factory.mktemp("finished")
    return cfg, run_dir, T.train(cfg, *data, run_dir)


# ----------------------------------------------------------------------------- pure functions

def test_epoch_order_is_a_permutation_with_one_own_caption_per_image():
    caption_image = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])       # 4 images, 1-3 captions each
    images, captions = T.epoch_order(caption_image, 4, seed=0, epoch=1)
    assert sorted(images.tolist()) == [0, 1, 2, 3]
    assert (caption_image[captions] == images).all()            # each picked caption is its image's
    again = T.epoch_order(caption_image, 4, seed=0, epoch=1)
    assert images.equal(again[0]) and captions.equal(again[1])  # a function of (seed, epoch) only
    orders = {tuple(T.epoch_order(caption_image, 4, seed=0, epoch=e)[1].tolist()) for e in range(1, 9)}
    assert len(orders) > 1                                      # ... that changes with the epoch


def test_epoch_order_rejects_an_image_without_captions():
    with pytest.raises(ValueError, match="1 have none"):
        T.epoch_order(torch.tensor([0, 0, 2]), 3, seed=0, epoch=1)


def test_global_batches_drop_the_incomplete_last_batch():
    batches = list(T.global_batches(torch.arange(10), torch.arange(10) + 100, 4))
    assert [b[0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert batches[1][1].tolist() == [104, 105, 106, 107]


def test_local_batch_takes_the_rank_share_padded_to_the_global_length(data):
    train_fs, _ = data
    images, captions = torch.arange(4), torch.arange(4) * 5       # caption 5k belongs to image k
    lengths = train_fs.lengths()[captions]
    regions, pooled, tokens, mask, text_pooled = T.local_batch(train_fs, images, captions, rank=1, world=2)
    assert regions.equal(train_fs.image_batch(images[2:])[0])   # rank 1 of 2: the second half
    assert tokens.shape[:2] == (2, int(lengths.max()))          # padded to the global longest caption
    assert mask.sum(1).tolist() == lengths[2:].tolist()


def test_lr_schedule_warms_up_linearly_then_decays_to_zero():
    factors = [T.lr_factor(s, total=10, warmup=2) for s in range(10)]
    assert factors[:3] == [0.5, 1.0, 1.0]                       # (s+1)/2, then cos(0) = 1
    assert factors[6] == pytest.approx(0.5)                     # halfway through the 8 decay steps
    assert factors[-1] == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(7 / 8 * torch.pi)).item()))
    assert all(a >= b for a, b in zip(factors[1:], factors[2:]))


def test_config_errors_say_what_to_do(data):
    with pytest.raises(ValueError, match="loss must be one of"):
        T.TrainConfig(loss="mse")
    with pytest.raises(ValueError, match="unknown model_overrides \\['dimm'\\]"):
        T.make_model(tiny_config(model_overrides={"dimm": 3}), data[0])
    with pytest.raises(ValueError, match="image_dim.*drop it"):
        T.make_model(tiny_config(model_overrides={"image_dim": 5}), data[0])


# ----------------------------------------------------------------------------- learning

@pytest.mark.parametrize("model", ["dual", "decoupled"])
def test_training_lowers_the_loss_and_raises_val_rsum(model, data, tmp_path):
    train_fs, val_fs = data
    cfg = tiny_config(model=model, epochs=5)
    untrained = T.validate(T.make_model(cfg, train_fs), val_fs, "cpu")["rsum"]
    result = T.train(cfg, train_fs, val_fs, tmp_path)
    h = result.history
    assert h["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert h["step"].tolist() == [4, 8, 12, 16, 20]             # 36 images // 8 = 4 steps per epoch
    assert h["train_loss"].iloc[-1] < 0.6 * h["train_loss"].iloc[0]
    assert result.best["rsum"] == h["rsum"].max() > untrained + 30
    assert h["lr"].iloc[-1] < 0.05 * cfg.lr                     # cosine decay ends near 0
    # the returned model carries the best epoch's weights: it reproduces the recorded rsum
    assert T.validate(result.model, val_fs, "cpu")["rsum"] == pytest.approx(result.best["rsum"])
    assert (tmp_path / "history.csv").exists() and (tmp_path / "config.json").exists()


def test_an_added_term_is_logged_and_vse_keeps_the_temperature(data, tmp_path):
    cfg = tiny_config(model="local_consistency", model_overrides={**TINY, "aux_weight": 1.0}, loss="vse", epochs=2)
    result = T.train(cfg, *data, tmp_path)
    assert "local_consistency" in result.history.columns and (result.history.local_consistency > 0).all()
    start = T.make_model(cfg, data[0]).logit_scale
    assert result.model.logit_scale.item() == pytest.approx(start.item())   # VSE++ uses no temperature


# ----------------------------------------------------------------------------- checkpoints, resume, reuse

def test_checkpoints_load_with_weights_only(finished_run):
    cfg, run_dir, result = finished_run
    for name in ("last.pt", "best.pt"):
        state = torch.load(run_dir / name, weights_only=True)
        assert set(checkpoints.CHECKPOINT_KEYS) <= set(state)
        assert state["train_config"]["batch_size"] == 12 and state["model_config"]["dim"] == 16
    last = torch.load(run_dir / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["step"] == 6 and len(last["history"]) == 2
    assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == [1, 2]
    assert T.load_model(run_dir).state_dict()["logit_scale"].equal(result.model.logit_scale.detach())


def test_a_finished_run_is_reused_without_training(finished_run, data):
    cfg, run_dir, first = finished_run
    steps = []
    again = T.train(cfg, *data, run_dir, on_step=steps.append)
    assert steps == []
    pd.testing.assert_frame_equal(again.history, first.history)
    assert again.best == first.best
    assert_params_close(params(again.model), params(first.model), atol=0)


def test_a_run_dir_with_another_config_is_refused(finished_run, data):
    cfg, run_dir, _ = finished_run
    other = tiny_config(epochs=2, batch_size=12, lr=1e-3)
    with pytest.raises(ValueError, match=r"train_config.lr: saved 0.002, asked 0.001.*delete"):
        T.train(other, *data, run_dir)
    T.train(tiny_config(epochs=2, batch_size=12, progress=True), *data, run_dir)   # cosmetic: accepted


def test_a_run_made_on_other_features_is_refused(finished_run, data):
    cfg, run_dir, _ = finished_run
    rebuilt = [dataclasses.replace(fs, source="0123abcd4567") for fs in data]   # e.g. another backbone
    with pytest.raises(ValueError, match=r"data.features: saved '', asked '0123abcd4567'.*delete"):
        T.train(cfg, *rebuilt, run_dir)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_checkpoint_gives_a_clear_error(finished_run, data, tmp_path, damage):
    cfg, run_dir, _ = finished_run
    copy = shutil.copytree(run_dir, tmp_path / "run")
    last = copy / "last.pt"
    last.write_bytes(b"not a checkpoint" if damage == "garbage" else last.read_bytes()[:2000])
    with pytest.raises(RuntimeError, match=r"checkpoint .*last\.pt is corrupt.*delete it"):
        T.train(cfg, *data, copy)


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from helpers import train as T
    from helpers.features import synthetic_split
    cfg = T.TrainConfig(model_overrides={tiny}, epochs=3, batch_size=8, progress=False, device="cpu")
    T.train(cfg, *synthetic_split({n}), sys.argv[1],
            on_step=lambda step: step == 6 and os.kill(os.getpid(), signal.SIGKILL))
""")


def test_resume_after_a_kill_matches_an_uninterrupted_run(data, tmp_path):
    killed = subprocess.Popen([sys.executable, "-c", KILLED_RUN.format(tiny=TINY, n=N_IMAGES), str(tmp_path / "run")],
                              cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    straight = T.train(tiny_config(), *data, tmp_path / "straight")   # meanwhile, the uninterrupted run
    _, stderr = killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, stderr
    assert checkpoints.load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1   # step 6 = mid-epoch 2

    steps = []
    resumed = T.train(tiny_config(), *data, tmp_path / "run", on_step=steps.append)
    assert steps == [5, 6, 7, 8, 9, 10, 11, 12]                  # epoch 2 redone from its start
    pd.testing.assert_frame_equal(resumed.history.drop(columns=["seconds", "val_seconds"]),
                                  straight.history.drop(columns=["seconds", "val_seconds"]), check_exact=True)
    assert resumed.best == straight.best
    assert_params_close(params(resumed.model), params(straight.model), atol=1e-6)
    last = checkpoints.load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert_params_close(last, checkpoints.load_checkpoint(tmp_path / "straight" / "last.pt")["model"], atol=1e-6)


# ----------------------------------------------------------------------------- torchrun

# DecoupledAttention's key bias adds the same logit to every region of a word, so the softmax
# ignores it: its true gradient is 0, and what it gets is rounding noise, which Adam scales up to
# lr-sized steps. That noise differs between 1 and 2 processes; the scores do not depend on it.
GRADIENT_FREE = {"attn.key.bias"}


def test_torchrun_two_processes_match_one_process(tmp_path):
    """The 2-process runs start together (they mostly wait on imports and rendezvous), then each is
    compared with the same command run in this process: same parameters, losses and metrics."""
    overrides = {**TINY, "aux_weight": 1.0}

    def args(model):
        return ["train", "--model", model, "--epochs", "3", "--batch-size", "8", "--synthetic", str(N_IMAGES),
                "--device", "cpu", "--model-overrides", str(overrides).replace("'", '"'), "--no-progress",
                "--run-dir", str(tmp_path / model)]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launches = {model: subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "helpers", *args(model)[:-1], str(tmp_path / model / "two")],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for model in ("decoupled", "word_diversity")}   # word_diversity: an added term on gathered tensors
    for model, launch in launches.items():
        assert command_line([*args(model)[:-1], str(tmp_path / model / "one")]) == 0
        _, stderr = launch.communicate(timeout=180)
        assert launch.returncode == 0, stderr[-3000:]
        a = checkpoints.load_checkpoint(tmp_path / model / "one" / "last.pt")
        b = checkpoints.load_checkpoint(tmp_path / model / "two" / "last.pt")
        assert_params_close(a["model"], b["model"], atol=1e-5, skip=GRADIENT_FREE)
        assert_params_close(a["model"], b["model"], atol=1e-3)   # noise-sized steps only
        losses = [c for c in a["history"][0] if c in ("train_loss", "word_diversity")]
        h1, h2 = pd.DataFrame(a["history"]), pd.DataFrame(b["history"])
        pd.testing.assert_frame_equal(h1[losses], h2[losses], check_exact=False, rtol=1e-4)
        assert h1["rsum"].tolist() == h2["rsum"].tolist()


def test_early_stopping_ends_a_run_patience_epochs_after_its_best(data, tmp_path, monkeypatch):
    """Validation rSum scripted to peak at epoch 2: with patience 2 the run stops after epoch 4, keeps
    epoch 2's weights, and a second call reuses the stopped run without training."""
    script = iter([10.0, 30.0, 20.0, 25.0, 99.0, 99.0])
    monkeypatch.setattr(T, "validate", lambda model, fs, device, scoring: {**{k: 0.0 for k in metrics.METRICS},
                                                                            "rsum": next(script)})
    cfg = tiny_config(epochs=6, patience=2)
    r = T.train(cfg, *data, tmp_path / "run")
    assert len(r.history) == 4 and r.best["epoch"] == 2 and r.best["epoch"] < len(r.history)
    again = T.train(cfg, *data, tmp_path / "run")                        # stopped: reused, no more epochs
    assert len(again.history) == 4
    assert T.finished(cfg, 4, 2) and not T.finished(cfg, 3, 2) and T.finished(tiny_config(epochs=3), 3, 3)
    with pytest.raises(ValueError, match="patience must be >= 0"):
        tiny_config(patience=-1)


def test_a_run_from_an_earlier_model_config_gets_a_clear_error(data, tmp_path):
    T.train(tiny_config(epochs=1), *data, tmp_path / "run")
    for name in ("best.pt", "last.pt"):
        state = torch.load(tmp_path / "run" / name, weights_only=True)
        state["model_config"]["heads"] = 1                              # a field the course has dropped
        torch.save(state, tmp_path / "run" / name)
    with pytest.raises(RuntimeError, match=r"earlier version of the course .*\['heads'\].*delete"):
        T.load_model(tmp_path / "run")
