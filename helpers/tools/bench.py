"""How much faster is the course's feature extraction than the blog's one-input-at-a-time loop?

`python -m helpers bench extract [--images 128] [--captions 1024] [--repeats 2] [--sweep]` runs, in
one process and on the same inputs, the blog's loop (one image: open, the blog's transform, forward;
one caption: tokenize, forward with the attention mask) and the course's pipeline (batches, the CNN as one fused oneDNN
Graph on CPU, inference_mode, length-sorted caption batches). Each is run `repeats` times,
alternating, and the fastest run counts, so a busy machine hurts both sides alike. One-off set-up
(loading models, tracing the graph) is paid before timing and reported on its own. `--sweep` also
times the settings the pipeline could use (graph, batch size, workers, channels_last, autocast).

`python -m helpers bench runs` times the same training runs (and their test ranking) one after another
with all threads and side by side with one thread each (`helpers.fast.parallel`).

`python -m helpers bench score` times the 1K-test scoring of each attention model in one run on the
same inputs: the readable chunked code (`model.score` per chunk of captions), the tiled code of
`helpers.fast.scoring`, and the floor: the flops of the model's big products divided by the peak
matrix-multiply rate measured in the same run.

`python -m helpers bench course [--budget cpu|gpu] [--repeats 1] [--plan docs/scale-plan.md]` times every
phase of the course on the same inputs, each beside its floor (`bench_course`): extraction, a training step
of every model (forward, then forward + backward + AdamW), validation and test scoring; the table goes to
results/bench-course-<budget>-<device>.csv, and `--plan` writes the scale plan from it (`helpers.tools.scale_plan`).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from .. import models
from ..config import get_device
from ..data import load_subset
from ..encoders import blog_transform, load_image_encoder, load_text_encoder
from ..fast import parallel
from ..fast import scoring as fast_scoring
from ..pipeline import runs
from ..pipeline.feature_cache import load_course_features
from ..pipeline.recipes import BUDGETS, MODEL_NAMES, train_config
from . import scale_plan
from ..atomic import write_csv, write_json, write_text
from ..config import PATHS
from ..train import ContrastiveStep, Process, epoch_order, global_batches, local_batch, make_model, make_optimizer
from ..train import train_epoch, validate
from ..fast.extraction import (default_image_batch, default_num_workers, extract_image_features, extract_text_features,
                         use_graph)


@dataclass
class ExtractSettings:
    """The course pipeline's settings for one run of the bench (None = the library's defaults)."""

    image_batch: int | None = None     # None: default_image_batch(device): 8 on CPU, 128 on CUDA
    num_workers: int | None = None     # None: default_num_workers(device): 0 on a 2-core CPU
    channels_last: bool = True
    amp: bool | None = None            # None: CUDA only (float16); on CPU True means bfloat16
    text_batch: int = 128
    fuse_bn: bool = True               # eager kernels: fold BatchNorm into the convs (exact in eval mode)
    graph: bool | None = None          # None: the CNN as a fused oneDNN Graph on CPU without autocast

    def describe(self, modality: str, device: str = "cpu") -> str:
        if modality == "captions":
            return f"length-sorted batches of {self.text_batch}, amp={bool(self.amp)}"
        workers = default_num_workers(device) if self.num_workers is None else self.num_workers
        kernels = ("oneDNN Graph" if use_graph(torch.device(device), self.amp, self.graph)
                   else f"eager, BN folded={self.fuse_bn}")
        return (f"batch {self.image_batch or default_image_batch(device)}, {kernels}, {workers} worker(s), "
                f"channels_last={self.channels_last}, amp={bool(self.amp)}")


def timed(fn) -> float:
    """Seconds one call of `fn()` takes (wall clock)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def blog_image_loop(subset, image_ids, encoder) -> None:
    """The blog's way: for each image, open it, apply the blog's transform, run the model on a batch of one."""
    transform = blog_transform()
    encoder.eval()
    for image_id in image_ids:
        x = transform(subset.load_image(image_id)).unsqueeze(0)
        with torch.no_grad():
            encoder(x)


def blog_caption_loop(captions, encoder) -> None:
    """The blog's way: for each caption, tokenize it and run the model on a batch of one
    (`self.model(**inputs)`: input ids and attention mask, as the blog passes them)."""
    encoder.eval()
    for caption in captions:
        inputs = encoder.tokenizer(caption, return_tensors="pt", padding=True, truncation=True,
                                   max_length=encoder.max_length)
        with torch.no_grad():
            encoder.model(**inputs)


def course_images(subset, image_ids, encoder, s: ExtractSettings, device: str = "cpu") -> None:
    extract_image_features(subset, image_ids, encoder, blog_transform(), batch_size=s.image_batch,
                           num_workers=s.num_workers, device=device, channels_last=s.channels_last,
                           amp=s.amp, fuse_bn=s.fuse_bn, graph=s.graph, progress=False)


def course_captions(captions, encoder, s: ExtractSettings, device: str = "cpu") -> None:
    extract_text_features(captions, encoder, batch_size=s.text_batch, device=device, amp=s.amp, progress=False)


def _warm_up_models(image_encoder, text_encoder) -> None:
    """One small forward of each model, so one-off set-up costs are not charged to whichever runs first."""
    with torch.no_grad():
        image_encoder(torch.zeros(1, 3, 224, 224))
        text_encoder.encode(["a warm-up caption"])


def _warm_up(subset, image_ids, image_encoder, text_encoder, settings: ExtractSettings) -> float:
    """`_warm_up_models`, then one batch through the course's pipeline -> seconds that batch took
    (the pipeline's one-off set-up: tracing the graph)."""
    _warm_up_models(image_encoder, text_encoder)
    return timed(lambda: course_images(subset, image_ids[:settings.image_batch or default_image_batch("cpu")],
                                        image_encoder, settings))


def bench_extract(n_images: int = 128, n_captions: int = 1024, repeats: int = 2, subset=None,
                  settings: ExtractSettings | None = None, image_encoder="auto", text_encoder="auto",
                  verbose: bool = True) -> pd.DataFrame:
    """The blog's loop vs the course pipeline on the same inputs, on CPU -> one row per (modality, pipeline)."""
    if subset is None:
        subset = load_subset()
    settings = settings or ExtractSettings()
    image_ids = subset.image_ids[:n_images]
    captions = subset.captions.caption.tolist()[:n_captions]
    ienc = load_image_encoder(image_encoder)[0] if isinstance(image_encoder, str) else image_encoder
    tenc = load_text_encoder(text_encoder)[0] if isinstance(text_encoder, str) else text_encoder
    setup_s = _warm_up(subset, image_ids, ienc, tenc, settings)
    if verbose:
        print(f"course pipeline set-up, paid once per process (one batch included): {setup_s:.1f} s", flush=True)
    runs = {k: [] for k in ["images/blog", "images/course", "captions/blog", "captions/course"]}
    for rep in range(repeats):
        runs["images/blog"].append(timed(lambda: blog_image_loop(subset, image_ids, ienc)))
        runs["images/course"].append(timed(lambda: course_images(subset, image_ids, ienc, settings)))
        runs["captions/blog"].append(timed(lambda: blog_caption_loop(captions, tenc)))
        runs["captions/course"].append(timed(lambda: course_captions(captions, tenc, settings)))
        if verbose:
            print(f"repeat {rep + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in runs.items()),
                  flush=True)
    rows = []
    for modality, n, enc in [("images", len(image_ids), ienc.name), ("captions", len(captions), tenc.name)]:
        blog_s, course_s = min(runs[f"{modality}/blog"]), min(runs[f"{modality}/course"])
        how = settings.describe(modality)
        rows.append({"modality": modality, "encoder": enc, "pipeline": "the blog's loop (one at a time)",
                     "inputs": n, "seconds": round(blog_s, 2), "inputs_per_s": round(n / blog_s, 1),
                     "speedup": 1.0, "setup_s": 0.0})
        rows.append({"modality": modality, "encoder": enc, "pipeline": f"course ({how})", "inputs": n,
                     "seconds": round(course_s, 2), "inputs_per_s": round(n / course_s, 1),
                     "speedup": round(blog_s / course_s, 2),
                     "setup_s": round(setup_s, 1) if modality == "images" else 0.0})
    return pd.DataFrame(rows)


def sweep_extract(n_images: int = 128, n_captions: int = 1024, subset=None, device: str = "auto",
                  verbose: bool = True) -> pd.DataFrame:
    """Time the course pipeline under each candidate setting (on CUDA: batch sizes with mixed precision)."""
    if subset is None:
        subset = load_subset()
    dev = get_device(device)
    image_ids = subset.image_ids[:n_images]
    captions = subset.captions.caption.tolist()[:n_captions]
    ienc, tenc = load_image_encoder()[0], load_text_encoder()[0]
    _warm_up_models(ienc, tenc)
    if dev.type == "cuda":
        image_grid = [ExtractSettings(image_batch=b, amp=True, channels_last=True) for b in (32, 64, 128, 256)]
        text_grid = [ExtractSettings(text_batch=b, amp=True) for b in (128, 256, 512)]
    else:
        image_grid = [ExtractSettings(image_batch=b, num_workers=w, fuse_bn=f, channels_last=c, amp=a, graph=g)
                      for b, w, f, c, a, g in [(8, 0, False, False, False, False), (8, 0, False, True, False, False),
                                               (8, 0, True, False, False, False), (8, 0, True, True, False, False),
                                               (16, 0, True, True, False, False), (64, 0, True, True, False, False),
                                               (8, 0, True, True, True, False), (4, 0, True, True, False, True),
                                               (8, 0, True, True, False, True), (16, 0, True, True, False, True),
                                               (32, 0, True, True, False, True), (8, 1, True, True, False, True),
                                               (8, 2, True, True, False, True)]]
        text_grid = [ExtractSettings(text_batch=b, amp=a) for b, a in [(32, False), (128, False), (512, False),
                                                                     (128, True)]]
    rows = []
    for s in image_grid:
        setup = timed(lambda: course_images(subset, image_ids[:s.image_batch or 1], ienc, s, device))
        t = timed(lambda: course_images(subset, image_ids, ienc, s, device))
        rows.append({"modality": "images", "device": dev.type, "batch": s.image_batch or default_image_batch(dev),
                     "workers": s.num_workers if s.num_workers is not None else default_num_workers(dev),
                     "graph": use_graph(dev, s.amp, s.graph), "bn_folded": s.fuse_bn,
                     "channels_last": s.channels_last, "amp": bool(s.amp),
                     "inputs_per_s": round(len(image_ids) / t, 1), "setup_s": round(setup, 1)})
        if verbose:
            print(rows[-1], flush=True)
    for s in text_grid:
        t = timed(lambda: course_captions(captions, tenc, s, device))
        rows.append({"modality": "captions", "device": dev.type, "batch": s.text_batch, "workers": 0,
                     "graph": None, "bn_folded": None, "channels_last": None, "amp": bool(s.amp),
                     "inputs_per_s": round(len(captions) / t, 1), "setup_s": 0.0})
        if verbose:
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ scoring

def timed_on(device: torch.device | str, fn) -> float:
    """`timed`, waiting for a GPU's queued work before and after (on CPU the same as `timed`)."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    return timed(lambda: (fn(), sync()))


def peak_matmul_rate(n: int = 2048, repeats: int = 5, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of the best of `repeats` (n, n) @ (n, n) products (float32 on the CPU by default): a
    cache-friendly GEMM, the device's practical ceiling for the big products of scoring."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b                                                       # warm-up (threads, packing buffers)
    return 2 * n ** 3 / min(timed_on(device, lambda: a @ b) for _ in range(repeats))


def scoring_flops(model, fs) -> float:
    """Floating-point operations of a model's big products when scoring all of `fs` (real words only):
    `fast.scoring.scoring_flops_for` of the model's configuration and the sizes of `fs`."""
    return fast_scoring.scoring_flops_for(model.cfg, len(fs.tokens), fs.n_captions, fs.n_images, fs.regions.shape[1])


def bench_score(model_names=("decoupled", "joint", "joint_words"), fs=None, repeats: int = 1,
                verbose: bool = True) -> pd.DataFrame:
    """1K-test scoring of each attention model: the readable chunked path, the tiled path, and the floor
    (big-product flops / the peak rate measured in this run) -> one row per model."""
    if fs is None:
        fs = load_course_features(progress=False)["test"]
    peak = peak_matmul_rate()
    if verbose:
        print(f"peak matrix-multiply rate (2048² float32, {torch.get_num_threads()} threads): "
              f"{peak / 1e9:.0f} GFLOP/s", flush=True)
    rows = []
    for name in model_names:
        torch.manual_seed(0)
        model = models.build_model(name, image_dim=fs.regions.shape[-1], text_dim=fs.tokens.shape[-1]).eval()
        out = {}
        before = min(timed(lambda: out.update(readable=models.score_all(model, fs))) for _ in range(repeats))
        after = min(timed(lambda: out.update(tiled=fast_scoring.score_all(model, fs))) for _ in range(repeats))
        diff = float((out["readable"] - out["tiled"]).abs().max())
        floor = scoring_flops(model, fs) / peak
        rows.append({"model": name, "readable_s": round(before, 1), "tiled_s": round(after, 1),
                     "floor_s": round(floor, 1), "speedup": round(before / after, 2),
                     "tiled_vs_floor": round(after / floor, 2), "max_abs_diff": diff})
        if verbose:
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def bench_runs(model_names=("decoupled", "joint"), seeds=(0, 1), epochs: int = 3, budget: str = "cpu") -> pd.DataFrame:
    """The same training runs (the course's settings, `epochs` epochs, then the 1K-test ranking) one after
    another in this process with all its threads, and side by side in `fast.parallel` workers with one
    thread each -> one row per way, with the wall time and the speed-up. The runs go to temporary folders
    (COURSE_RUNS_DIR), not to runs/."""
    feats = load_course_features(progress=False)
    configs = [train_config(m, budget, s, epochs=epochs, patience=0) for m in model_names for s in seeds]
    jobs = [(cfg, True) for cfg in configs]
    before = os.environ.get("COURSE_RUNS_DIR")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["COURSE_RUNS_DIR"] = str(Path(tmp, "one-after-another"))
            seq = timed(lambda: [runs.train_and_rank(feats, *job) for job in jobs])
            os.environ["COURSE_RUNS_DIR"] = str(Path(tmp, "side-by-side"))   # spawned workers inherit it
            par = timed(lambda: parallel.side_by_side(runs.train_and_rank, jobs, feats, runs.course_features))
    finally:
        if before is None:
            os.environ.pop("COURSE_RUNS_DIR", None)
        else:
            os.environ["COURSE_RUNS_DIR"] = before
    n = parallel.workers(len(configs))
    return pd.DataFrame([
        {"way": f"one after another, {torch.get_num_threads()} threads", "runs": len(configs), "seconds": round(seq, 1),
         "speed-up": 1.0},
        {"way": f"side by side, {n} workers x 1 thread (incl. start-up)", "runs": len(configs),
         "seconds": round(par, 1), "speed-up": round(seq / par, 2)}])


# ------------------------------------------------------------------------------------ the course, phase by phase

def count_flops(fn) -> float:
    """Floating-point operations of the matrix products and convolutions `fn()` runs, as torch counts them
    (`torch.utils.flop_counter`): 2·m·n·k per (m, k) @ (k, n) product (mm, addmm, bmm, matmul, einsum and
    linear layers all reach one), 2·(output elements)·(kernel elements per output) per convolution, and the
    products of a backward pass when `fn` runs one. Softmax, norms, LayerNorm and other elementwise work are
    not counted, so flops / peak rate is a floor: no kernel can beat it."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward pass while `fn()` runs forward: the
    activation memory of a training step (parameters the products save are included; they are small here)."""
    seen = {}

    def keep(t):
        seen[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        fn()
    return sum(seen.values())


def phase_dtype(phase: str, device: torch.device) -> torch.dtype:
    """The precision a phase's big products run in: on CUDA, extraction in float16 and training in bfloat16
    (autocast), scoring in float32; on the CPU everything in float32 (autocast is off there by default)."""
    if device.type != "cuda":
        return torch.float32
    return {"extract": torch.float16, "train": torch.bfloat16}.get(phase.split()[0], torch.float32)


def first_batch(cfg, fs):
    """The first global batch of epoch 1 of `cfg` on `fs` -> (B,) image rows, (B,) caption rows."""
    return next(global_batches(*epoch_order(fs.caption_image, fs.n_images, cfg.seed, 1), cfg.batch_size))


def bench_course(budget: str = "cpu", n_images: int = 16, n_captions: int = 256, val_images: int = 50,
                 test_images: int = 100, repeats: int = 1, model_names=MODEL_NAMES, feats=None, subset=None,
                 image_encoder="auto", text_encoder="auto", device: str = "cpu",
                 verbose: bool = True) -> pd.DataFrame:
    """Every phase of the course, timed on the same inputs in one run, each beside its floor -> one row per
    (phase, model): seconds (the best of `repeats`), the big products' flops (`count_flops`, or
    `scoring_flops` for scoring), floor_s = flops / the peak matrix-product rate of the phase's precision
    measured in this run (the best of a measurement before and one after), and vs_floor = seconds / floor_s,
    which a busy machine moves less than the seconds (both sides slow down alike for the GEMM-bound phases).

    Phases: "decode images" (open + the transform, no products), "extract images" and "extract captions"
    (the course's pipeline, `course_images` / `course_captions`, on the first `n_images` images and
    `n_captions` captions); per model of `model_names`, with the budget's batch size and the course's fast
    scores (`helpers.fast.scoring.FAST`), "train forward" (`ContrastiveStep`: encode, the (B, B) scores, the
    loss) and "train step" (`train.train_epoch` over exactly one batch: forward, backward, clipping, AdamW),
    then "validate" (`train.validate` on the first `val_images` validation images and their captions) and
    "score test" (`FAST.all` on the first `test_images` test images and their captions; 1000: the 1K test).
    What the products are, per model (B images of R regions and C channels, B captions padded to T,
    joint width D; FAST's training scores): every model projects regions and words (2·B·R·C·D + 2·B·T·Dt·D);
    `dual`, `dual_words` add the value projection and one (B, B) product; the text -> image models
    (`decoupled`, `decoupled_pooled`, `blog`) add queries, keys and values and the word-region logits
    2·B·R·D·(B·T), and per-word heads the word-region similarities (the same again) and αᵀGα
    (2·B·R²·(B·T)); the both-ways models (`joint`, `joint_words`) add the words' values and the β side.
    The counter sees them as torch runs them, so the count is exact for the code that runs.
    Scoring's flops are `scoring_flops` (the tiled code's products, real words only).
    Untrained models (the course's initialisation, seed 0): timing does not depend on the weights.
    """
    dev = get_device(device)
    if feats is None:
        feats = load_course_features(progress=False)
    if subset is None and n_images:
        subset = load_subset()
    dtypes = {phase_dtype(p, dev) for p in ("extract", "train", "score")}
    peaks = {dt: peak_matmul_rate(device=dev, dtype=dt) for dt in dtypes}
    if verbose:
        print("peak matrix-product rate: " + ", ".join(f"{str(dt).split('.')[1]} {r / 1e9:,.0f} GFLOP/s"
                                                     for dt, r in peaks.items()), flush=True)
    rows = []

    def row(phase, model, batch, inputs, seconds, flops, **extra):
        rate = peaks[phase_dtype(phase, dev)]
        rows.append({"phase": phase, "model": model, "batch": batch, "inputs": inputs, "seconds": seconds,
                     "gflops": None if flops is None else flops / 1e9,
                     "floor_s": None if flops is None else flops / rate,
                     "vs_floor": None if flops is None else seconds / (flops / rate), **extra})
        if verbose:
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)

    def best(fn):
        return min(timed_on(dev, fn) for _ in range(repeats))

    if n_images:
        ienc = load_image_encoder(image_encoder)[0] if isinstance(image_encoder, str) else image_encoder
        tenc = load_text_encoder(text_encoder)[0] if isinstance(text_encoder, str) else text_encoder
        ids, captions = subset.image_ids[:n_images], subset.captions.caption.tolist()[:n_captions]
        s = ExtractSettings()
        transform = blog_transform()
        row("decode images", "", 1, len(ids), best(lambda: [transform(subset.load_image(i)) for i in ids]), None)
        _warm_up_models(ienc, tenc)
        course_images(subset, ids, ienc, s, dev)                           # one-off: the graph is traced
        flops = count_flops(lambda: course_images(subset, ids, ienc, replace(s, graph=False), dev))
        row("extract images", ienc.name, s.image_batch or default_image_batch(dev), len(ids),
            best(lambda: course_images(subset, ids, ienc, s, dev)), flops)
        flops = count_flops(lambda: course_captions(captions, tenc, s, dev))
        row("extract captions", tenc.name, s.text_batch, len(captions),
            best(lambda: course_captions(captions, tenc, s, dev)), flops)
    train_fs, val_fs, test_fs = feats["train"], feats["val"], feats["test"]
    val_fs = val_fs.select_images(torch.arange(min(val_images, val_fs.n_images)))
    test_fs = test_fs.select_images(torch.arange(min(test_images, test_fs.n_images)))
    for name in model_names:
        cfg = train_config(name, budget, 0, device=str(dev), progress=False)
        model = make_model(cfg, train_fs).to(dev).train()
        process = Process(dev)
        step_fn = ContrastiveStep(model, cfg.loss, fast_scoring.FAST, process)
        images, captions = first_batch(cfg, train_fs)
        batch = [t.to(dev) for t in local_batch(train_fs, images, captions, 0, 1)]
        one = train_fs.select_images(images.sort().values)               # exactly one batch per epoch
        optimizer, scheduler = make_optimizer(cfg, model, 1000)
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if cfg.amp and dev.type == "cuda" else nullcontext()

        def forward():
            with amp:
                step_fn(*batch)

        def step():
            train_epoch(step_fn, model, optimizer, scheduler, cfg, one, 1, 0, process, _NO_BAR)

        activations = saved_bytes(forward)                               # also the warm-up
        row("train forward", name, cfg.batch_size, cfg.batch_size, best(forward), count_flops(forward),
            activation_mb=activations / 2 ** 20)
        row("train step", name, cfg.batch_size, cfg.batch_size, best(step), count_flops(step))
        model.eval()
        row("validate", name, val_fs.n_images, val_fs.n_captions,
            best(lambda: validate(model, val_fs, dev, fast_scoring.FAST)), scoring_flops(model, val_fs))
        model.eval()
        row("score test", name, test_fs.n_images, test_fs.n_captions,
            best(lambda: fast_scoring.FAST.all(model, test_fs, device=dev)), scoring_flops(model, test_fs))
    after = {dt: peak_matmul_rate(device=dev, dtype=dt) for dt in dtypes}
    table = pd.DataFrame(rows)
    for dt in dtypes:                                    # the better of the two peaks: the floor is a floor
        if after[dt] > peaks[dt]:
            mine = table.phase.map(lambda p: phase_dtype(p, dev) == dt) & table.gflops.notna()
            table.loc[mine, "floor_s"] *= peaks[dt] / after[dt]
            table.loc[mine, "vs_floor"] = table.seconds[mine] / table.floor_s[mine]
            peaks[dt] = after[dt]
    table.attrs["peaks"] = {str(dt).split(".")[1]: r for dt, r in peaks.items()}
    return table


class _NoBar:
    """What `train_epoch` updates when there is no progress bar to show."""

    disable = True

    def update(self, n):
        pass


_NO_BAR = _NoBar()


def course_stats(feats) -> dict:
    """The sizes of the course's features the scale plan needs: regions per image, channels, text width,
    captions per image and real tokens per caption (both measured over all splits)."""
    fs = feats["all"] if "all" in feats else feats["train"]
    return {"regions": int(fs.regions.shape[1]), "image_dim": int(fs.regions.shape[-1]),
            "text_dim": int(fs.tokens.shape[-1]), "captions_per_image": fs.n_captions / fs.n_images,
            "tokens_per_caption": len(fs.tokens) / fs.n_captions, "images": fs.n_images, "captions": fs.n_captions}


def machine() -> dict:
    """This machine, as the bench's table records it: CPU model (lscpu), cores, torch, threads, GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), cpu)
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def course_table_path(budget: str, device: str) -> Path:
    """Where `bench course` keeps its table: results/bench-course-<budget>-<device>.csv (and .json beside it)."""
    return PATHS.results / f"bench-course-{budget}-{device}.csv"


def write_course_table(table: pd.DataFrame, stats: dict, budget: str, device: str,
                       path: Path | None = None, repeats: int = 1) -> Path:
    """The table as CSV, and beside it (same name, .json) the machine, peaks, budget, repeats and feature sizes."""
    path = Path(path or course_table_path(budget, device))
    write_csv(table, path, index=False)
    write_json(path.with_suffix(".json"), {"machine": machine(), "peaks": table.attrs.get("peaks", {}),
                                           "budget": budget, "device": device, "repeats": repeats, "stats": stats,
                                           "date": time.strftime("%Y-%m-%d")}, indent=1)
    return path


def course_command(args) -> int:
    """`bench course`: measure (or read `--from`), print and save the table; with `--plan`, write the plan."""
    if args.source is not None:
        if args.plan is None:
            raise SystemExit("--from only writes a plan: give --plan PATH too")
        table, meta = scale_plan.read_table(args.source)
    else:
        feats = load_course_features(progress=False)
        table = bench_course(args.budget, args.images, args.captions, args.val_images, args.test_images,
                             args.repeats, tuple(args.models), feats=feats, device=args.device, verbose=False)
        path = write_course_table(table, course_stats(feats), args.budget, args.device, args.out, args.repeats)
        table, meta = scale_plan.read_table(path)
        print(table.round(4).to_string(index=False))
        print(f"peak float32 matrix-product rate {meta['peaks']['float32'] / 1e9:,.1f} GFLOP/s; table: {path}")
    if args.plan is not None:
        write_text(args.plan, scale_plan.plan_markdown(table, meta))
        print(f"scale plan: {args.plan}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("extract", help="the blog's loop vs course pipeline, images and captions")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--captions", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--image-batch", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--text-batch", type=int, default=128)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--fuse-bn", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--graph", action=argparse.BooleanOptionalAction, default=None,
                   help="run the CNN as a fused oneDNN Graph (default: on CPU without --amp)")
    p.add_argument("--sweep", action="store_true", help="also time each candidate setting (and CUDA if present)")
    s = sub.add_parser("score", help="1K-test scoring of each attention model: readable vs tiled vs the floor")
    s.add_argument("--models", nargs="+", default=["decoupled", "joint", "joint_words"])
    s.add_argument("--repeats", type=int, default=1)
    r = sub.add_parser("runs", help="training runs one after another vs side by side (helpers.fast.parallel)")
    r.add_argument("--models", nargs="+", default=["decoupled", "joint"])
    r.add_argument("--seeds", type=int, default=2, help="seeds per model")
    r.add_argument("--epochs", type=int, default=3)
    c = sub.add_parser("course", help="every phase of the course (extraction, training, validation, test "
                                      "scoring) per model, beside its floor; --plan writes the scale plan")
    c.add_argument("--budget", choices=sorted(BUDGETS), default="cpu", help="the training batch size's budget "
                   "(the scale plan needs gpu)")
    c.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    c.add_argument("--repeats", type=int, default=1, help="timed repeats per row (the fastest counts)")
    c.add_argument("--images", type=int, default=16, help="images to extract (0: skip extraction)")
    c.add_argument("--captions", type=int, default=256, help="captions to extract")
    c.add_argument("--val-images", type=int, default=50, help="validation images (with their captions) to score")
    c.add_argument("--test-images", type=int, default=100, help="test images to score (1000: the 1K test)")
    c.add_argument("--models", nargs="+", default=list(MODEL_NAMES))
    c.add_argument("--out", type=Path, help="the table's CSV (default results/bench-course-<budget>-<device>.csv)")
    c.add_argument("--plan", type=Path, help="also write the scale plan (markdown) from the table, e.g. "
                   "docs/scale-plan.md")
    c.add_argument("--from", dest="source", type=Path, help="write --plan from this saved table; measure nothing")
    args = parser.parse_args(argv)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 90)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CUDA: {torch.cuda.is_available()}")
    if args.command == "runs":
        print(bench_runs(tuple(args.models), tuple(range(args.seeds)), args.epochs).to_string(index=False))
        return 0
    if args.command == "course":
        return course_command(args)
    if args.command == "score":
        print(bench_score(tuple(args.models), repeats=args.repeats).to_string(index=False))
        return 0
    table = bench_extract(args.images, args.captions, args.repeats,
                          settings=ExtractSettings(args.image_batch, args.workers, args.channels_last, args.amp,
                                                   args.text_batch, args.fuse_bn, args.graph))
    print(table.to_string(index=False))
    if args.sweep:
        print(sweep_extract(args.images, args.captions, device="cpu", verbose=False).to_string(index=False))
        if torch.cuda.is_available():
            cuda = sweep_extract(args.images, args.captions, device="cuda", verbose=False)
            print(cuda.to_string(index=False))
            best = cuda[cuda.modality == "images"].sort_values("inputs_per_s").iloc[-1]
            print(f"CUDA, mixed precision: {best.inputs_per_s} images/s at batch {best.batch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
