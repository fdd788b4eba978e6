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
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .. import models
from ..config import get_device
from ..data import load_subset
from ..encoders import blog_transform, load_image_encoder, load_text_encoder
from ..fast import parallel
from ..fast import scoring as fast_scoring
from ..pipeline import runs
from ..pipeline.feature_cache import load_course_features
from ..pipeline.recipes import train_config
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

def peak_matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` (n, n) @ (n, n) float32 products: a cache-friendly GEMM, the CPU's
    practical ceiling for the big products of scoring."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b                                                       # warm-up (threads, packing buffers)
    return 2 * n ** 3 / min(timed(lambda: a @ b) for _ in range(repeats))


def scoring_flops(model, fs) -> float:
    """Floating-point operations of a model's big products when scoring all of `fs` (real words only).

    Every attention model: the word-region logits, 2·N_tok·N_img·R·D. Per-word text -> image heads
    (decoupled, blog) add the word-region similarities (2·N_tok·N_img·R·D) and αᵀGα
    (2·N_tok·N_img·R²); the pooled one adds the attended regions per caption (2·N_cap·N_img·R·D).
    Both ways (joint) adds the attended regions per caption (2·N_cap·N_img·R·D; per word with the
    per-word head, 2·N_tok·N_img·R·D) and the attended words per image (2·N_tok·N_img·D).
    """
    n_tok, n_cap, n_img, r = len(fs.tokens), fs.n_captions, fs.n_images, fs.regions.shape[1]
    d = model.cfg.dim
    logits = 2.0 * n_tok * n_img * r * d
    flow, head = model.cfg.flow, model.cfg.head
    if flow == "none":
        return 2.0 * n_tok * d + 2.0 * n_cap * n_img * d
    if flow == "both":
        attended = (n_tok if head == "words" else n_cap) * 2.0 * n_img * r * d
        return logits + attended + 2.0 * n_tok * n_img * d
    if head == "pooled":
        return logits + 2.0 * n_cap * n_img * r * d
    return 2 * logits + 2.0 * n_tok * n_img * r * r


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
    args = parser.parse_args(argv)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 90)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CUDA: {torch.cuda.is_available()}")
    if args.command == "runs":
        print(bench_runs(tuple(args.models), tuple(range(args.seeds)), args.epochs).to_string(index=False))
        return 0
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
