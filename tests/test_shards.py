"""Features at scale: shards written and read back row by row, extraction by shard with resume, and DDP
training on the shards (2 gloo processes = 1 process = the in-memory features)."""
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import checkpoints
from helpers import train as T
from helpers.config import PROJECT_ROOT
from helpers.data import load_subset
from helpers.encoders import blog_transform, load_image_encoder, load_text_encoder
from helpers.fast import shards as F
from helpers.fast.scoring import FAST
from helpers.fast.extraction import extract_image_features, extract_text_features
from helpers.features import subsample, synthetic_featureset, synthetic_split
from helpers.pipeline import recipes
from helpers.pipeline import shards as S

TINY = {"dim": 16}
GRADIENT_FREE = {"attn.key.bias"}      # see tests/test_train.py: its gradient is rounding noise


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def feats():
    return synthetic_featureset(n_images=30, regions=9, image_dim=32, text_dim=24)


@pytest.fixture(scope="module")
def folder(feats, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    S.write_featureset(feats, out, "train", world=3)
    return out


def test_shard_rows_are_contiguous_and_balanced():
    assert [list(F.shard_rows(10, r, 3)) for r in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert [len(F.shard_rows(2, r, 4)) for r in range(4)] == [0, 1, 0, 1]
    assert F.shard_name("train", "images", 1, 4) == "train-images-1-of-4.safetensors"
    with pytest.raises(ValueError, match=r"rank 3 is not in \[0, 3\)"):
        F.shard_rows(10, 3, 3)


def test_sharded_batches_equal_the_in_memory_featureset(feats, folder):
    sf = F.open_split(folder, "train")
    assert (sf.n_images, sf.n_captions) == (feats.n_images, feats.n_captions)
    assert torch.equal(sf.caption_image, feats.caption_image) and torch.equal(sf.lengths(), feats.lengths())
    assert sf.regions.shape[-1] == 32 and sf.tokens.shape[-1] == 24     # what train.model_overrides reads
    rows = torch.tensor([29, 0, 10, 9, 20, 5])                          # across all three shards
    assert same(sf.image_batch(rows), feats.image_batch(rows))
    caps = torch.tensor([149, 0, 50, 49, 100, 77, 3])
    assert same(sf.text_batch(caps), feats.text_batch(caps))
    assert same(sf.text_batch(caps, pad_to=20), feats.text_batch(caps, pad_to=20))
    assert sf.image_batch(rows)[0].dtype == torch.float32
    loaded = sf.load()
    for name in ("image_ids", "regions", "pooled", "caption_ids", "caption_image", "tokens", "offsets", "text_pooled"):
        assert torch.equal(getattr(loaded, name), getattr(feats, name)), name
    part, part_mem = subsample(sf, 0.5), subsample(feats, 0.5)          # select_images, without a copy
    assert torch.equal(part.image_ids, part_mem.image_ids) and torch.equal(part.caption_image, part_mem.caption_image)
    assert same(part.text_batch(torch.arange(part.n_captions)), part_mem.text_batch(torch.arange(part.n_captions)))
    assert same(part.image_batch(torch.arange(part.n_images)), part_mem.image_batch(torch.arange(part.n_images)))
    index = json.loads((folder / "train-index.json").read_text())
    assert [e["rows"] for e in index["images"]["shards"]] == [[0, 10], [10, 20], [20, 30]]
    assert index["captions"]["tokens"] == len(feats.tokens) and index["dtype"] == "float16"
    assert F.verify_split(folder, "train") == []


def _mapped_kib(paths) -> int:
    """KiB of the files at `paths` resident in this process's memory maps (/proc/self/smaps)."""
    total, current = 0, None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", head[0]):        # a mapping's first line
            current = head[5] if len(head) > 5 else None
        elif head and head[0] == "Rss:" and current in paths:
            total += int(head[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_opening_reads_nothing_and_a_batch_reads_only_its_rows(tmp_path):
    fs = synthetic_featureset(n_images=160, regions=49, image_dim=1280, text_dim=24, captions_per_image=1)
    S.write_featureset(fs, tmp_path, "train", world=2)        # 2 x 9.8 MiB of regions, 122 KiB a row
    paths = {str(p) for p in tmp_path.glob("train-images-*")}
    size = sum(os.path.getsize(p) for p in paths) // 1024
    sf = F.open_split(tmp_path, "train")
    opened = _mapped_kib(paths)
    assert opened < 0.05 * size, f"opening made {opened} of {size} KiB resident"
    regions, _ = sf.image_batch(torch.tensor([3, 130]))        # one row of each shard
    assert torch.equal(regions, fs.regions[[3, 130]].float())
    read = _mapped_kib(paths) - opened                        # the kernel maps pages around them too
    assert 2 * 122 < read < 0.25 * size, f"two rows made {read} of {size} KiB resident"


def test_a_changed_or_missing_shard_or_index_is_reported(feats, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no shard index .*train-index.json; extract the split first"):
        F.open_split(tmp_path, "train")
    S.write_featureset(feats, tmp_path, "train", world=2)
    shard = tmp_path / "train-images-1-of-2.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF                                          # same size, other bytes: only verify sees it
    shard.write_bytes(bytes(data))
    assert F.verify_split(tmp_path, "train") == [f"{shard} does not match its sha256 in the index: damaged or rewritten"]
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(RuntimeError, match=r"train-images-1-of-2.safetensors is \d+ bytes but the index says \d+ "
                                           r"bytes: it changed after the index was written; rerun the extraction"):
        F.open_split(tmp_path, "train")
    shard.unlink()
    assert F.verify_split(tmp_path, "train") == [f"{shard} is missing"]


def test_the_full_budget_sits_beside_the_course_budgets(monkeypatch):
    monkeypatch.setattr(recipes, "chosen_setting", lambda model, budget: None)
    cfg = recipes.train_config("decoupled", "full")
    assert (cfg.batch_size, cfg.epochs, cfg.patience, cfg.amp, cfg.device) == (512, 30, 5, True, "auto")
    assert set(recipes.BUDGETS) == {"cpu", "gpu"}             # the notebooks' switch is unchanged
    with pytest.raises(ValueError, match=r"unknown budget 'tpu'; choose one of \['cpu', 'full', 'gpu'\]"):
        recipes.train_config("decoupled", "tpu")


# ----------------------------------------------------------------------------- extraction on the course's data

N_EXTRACT = 12          # the course subset's first 12 training images, 60 captions


@pytest.fixture(scope="module")
def course():
    subset = load_subset()
    return subset, load_image_encoder()[0], load_text_encoder()[0]


def test_extraction_by_shard_matches_one_extraction_and_resumes(course, tmp_path, monkeypatch):
    subset, image_encoder, text_encoder = course
    path = S.extract_split(subset, "train", tmp_path, image_encoder, text_encoder, world=2, limit=N_EXTRACT,
                           device="cpu", graph=False, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "train-captions-0-of-2.safetensors", "train-captions-1-of-2.safetensors", "train-images-0-of-2.safetensors",
        "train-images-1-of-2.safetensors", "train-index.json"] and path == tmp_path / "train-index.json"
    sf = F.open_split(tmp_path, "train")
    ids = subset.split_ids("train")[:N_EXTRACT]
    caps = subset.captions[subset.captions.image_id.isin(ids)]
    assert sf.image_ids.tolist() == ids and sf.caption_ids.tolist() == caps.caption_id.tolist()
    assert [ids[r] for r in sf.caption_image.tolist()] == caps.image_id.tolist()
    index = F.read_index(tmp_path, "train")
    assert index["encoders"] == {"image": "mobilenet_v2", "text": "all-MiniLM-L6-v2"}
    assert (index["images"]["count"], index["captions"]["count"]) == (N_EXTRACT, len(caps))

    # the same features as one extraction of all of them, up to float16 rounding and batch composition
    regions, pooled = extract_image_features(subset, ids, image_encoder, blog_transform(), device="cpu",
                                             graph=False, progress=False)
    tokens, offsets, text_pooled = extract_text_features(caps.caption.tolist(), text_encoder, device="cpu",
                                                         progress=False)
    mem = sf.load()
    assert torch.allclose(mem.regions.float(), regions.float(), atol=2e-2, rtol=1e-2)
    assert torch.allclose(mem.pooled.float(), pooled.float(), atol=2e-3, rtol=1e-2)
    assert torch.equal(mem.offsets, offsets)
    assert torch.allclose(mem.tokens.float(), tokens.float(), atol=2e-3, rtol=1e-2)
    assert torch.allclose(mem.text_pooled.float(), text_pooled.float(), atol=2e-3, rtol=1e-2)

    # resume: shards that verify are kept; a damaged one is rebuilt, and only that one
    calls = []
    monkeypatch.setattr(S, "extract_image_features", lambda *a, **k: calls.append(len(a[1])) or
                        extract_image_features(*a, **k))
    monkeypatch.setattr(S, "extract_text_features", lambda *a, **k: calls.append("text") or
                        extract_text_features(*a, **k))
    S.extract_split(subset, "train", tmp_path, image_encoder, text_encoder, world=2, limit=N_EXTRACT,
                    device="cpu", graph=False, progress=False)
    assert calls == []
    shard = tmp_path / "train-images-1-of-2.safetensors"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"train-images-1-of-2.safetensors is corrupt .*rebuilding it"):
        S.extract_split(subset, "train", tmp_path, image_encoder, text_encoder, world=2, limit=N_EXTRACT,
                        device="cpu", graph=False, progress=False)
    assert calls == [N_EXTRACT - N_EXTRACT // 2]
    assert F.verify_split(tmp_path, "train") == []
    rebuilt = F.open_split(tmp_path, "train").load()         # (sf maps the damaged file: compare with mem)
    assert torch.equal(rebuilt.regions, mem.regions) and torch.equal(rebuilt.pooled, mem.pooled)


def test_extraction_input_errors_say_what_to_do(course, tmp_path):
    subset, image_encoder, text_encoder = course
    with pytest.raises(ValueError, match=r"unknown split 'holdout'"):
        S.extract_split(subset, "holdout", tmp_path, image_encoder, text_encoder, limit=2, progress=False)
    with pytest.raises(ValueError, match=r"split 'train' has no images; nothing to extract"):
        S.extract_split(subset, "train", tmp_path, image_encoder, text_encoder, limit=0, progress=False)
    entry = {"layout": "a", "encoders": {"image": "x"}}
    with pytest.raises(RuntimeError, match=r"the shards of 'train' were made from different inputs or encoders"):
        S.write_index(tmp_path, "train", [entry, {**entry, "layout": "b"}])


# ----------------------------------------------------------------------------- training on the shards

N_TRAIN = 48            # synthetic_split -> 36 train, 12 val images, 5 captions each


def test_torchrun_two_processes_on_shards_match_one_process_and_the_in_memory_run(tmp_path):
    """2 gloo processes (started first: they mostly wait on imports and rendezvous) and 1 process on the
    same shards give the same parameters, losses and metrics; 1 process on the shards gives bit for bit the
    run on the in-memory features (the same batches)."""
    train_fs, val_fs = synthetic_split(N_TRAIN)
    S.write_featureset(train_fs, tmp_path / "shards", "train", world=2)
    S.write_featureset(val_fs, tmp_path / "shards", "val", world=1)
    overrides = {**TINY, "aux_weight": 1.0}
    args = ["train", "--shards", str(tmp_path / "shards"), "--model", "decoupled", "--budget", "cpu", "--epochs", "2",
            "--batch-size", "8", "--device", "cpu", "--model-overrides", json.dumps(overrides), "--no-progress",
            "--run-dir"]
    launch = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "helpers.pipeline.shards", *args, str(tmp_path / "two")],
        cwd=PROJECT_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    assert S.main([*args, str(tmp_path / "one")]) == 0
    cfg = recipes.train_config("decoupled", "cpu", epochs=2, batch_size=8, device="cpu")      # as the command's
    cfg = replace(cfg, model_overrides={**cfg.model_overrides, **overrides})
    T.train(cfg, train_fs, val_fs, tmp_path / "memory", scoring=FAST)                          # as the command's
    _, stderr = launch.communicate(timeout=180)
    assert launch.returncode == 0, stderr[-3000:]

    one, two = (checkpoints.load_checkpoint(tmp_path / n / "last.pt") for n in ("one", "two"))
    mem = checkpoints.load_checkpoint(tmp_path / "memory" / "last.pt")
    for k in one["model"]:
        assert torch.equal(one["model"][k], mem["model"][k]), k
        tol = 1e-3 if k in GRADIENT_FREE else 1e-5
        assert torch.allclose(one["model"][k], two["model"][k], atol=tol, rtol=0), k
    h1, h2, hm = (pd.DataFrame(c["history"]).drop(columns=["seconds", "val_seconds"]) for c in (one, two, mem))
    pd.testing.assert_frame_equal(h1, hm, check_exact=True)
    pd.testing.assert_frame_equal(h1[["train_loss"]], h2[["train_loss"]], check_exact=False, rtol=1e-4)
    assert h1["rsum"].tolist() == h2["rsum"].tolist()
    assert one["data"]["features"] == F.open_split(tmp_path / "shards", "train").source != mem["data"]["features"]

    steps = []
    again = T.train(cfg, F.open_split(tmp_path / "shards", "train"), val_fs, tmp_path / "one", scoring=FAST,
                    on_step=steps.append)
    assert steps == [] and again.best == {k: v for k, v in one["best"].items()}   # finished: reused, not retrained
