"""Features and training at scale: a split extracted in shards by every rank of a torchrun job, then trained
with DDP on the memory-mapped shards and scored. In this order:

    COURSE_DATA=karpathy torchrun --nproc_per_node 8 -m helpers.pipeline.shards extract --split train val test \
        --out data/shards/karpathy          (one process, without torchrun, writes one shard)
    torchrun --nproc_per_node 8 -m helpers.pipeline.shards train --shards data/shards/karpathy --model decoupled --budget full
    python -m helpers.pipeline.shards score --shards data/shards/karpathy --model decoupled --budget full --protocols

`extract_split` splits the images and the captions of a split into W contiguous shards (`fast.shards`); rank r
extracts shard r with the course's extractors and writes it atomically with its full key and checksums
(`feature_cache.save_cache`); a shard already there that verifies is kept, so an interrupted job resumes.
Rank 0 then writes the index. The input is anything shaped like `data.CocoSubset`: `split_ids(split)`,
`captions` (caption_id, image_id, caption), `load_image(id)`, `image_path(id)`.
Training reads the shards (`fast.shards.open_split`), each rank only its share of each global batch;
validation and test load their split into memory (5K images fit).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from .. import intervals, metrics, protocols
from ..config import PATHS, course_device, data_source, get_device
from ..data import load_karpathy, load_subset
from ..encoders import blog_transform, load_image_encoder, load_text_encoder
from ..fast import distributed
from ..fast.extraction import default_num_workers, extract_image_features, extract_text_features, use_graph
from ..fast.scoring import FAST
from ..fast.shards import (INDEX_FORMAT, file_sha256, index_path, open_split, read_index, shard_name, shard_rows,
                           verify_split)
from ..features import FeatureSet
from ..atomic import write_json
from ..metrics import METRICS
from ..train import TrainConfig, TrainResult, load_result, train
from .feature_cache import (CACHE_FORMAT, _check_image, _check_text, _compute_dtype, _digest, image_cache_key,
                            image_md5s, load_cache, save_cache, text_cache_key, tidy_cache)
from .recipes import run_dir as course_run_dir
from .recipes import train_config


# ----------------------------------------------------------------------------- what a split is

def split_inputs(subset, split: str, limit: int | None = None) -> tuple[list[int], list[int], list[str], torch.Tensor]:
    """A split -> image ids (the split's order), caption ids and texts (the data's caption order, those of the
    split's images), (N_cap,) row of each caption's image. `limit`: only the first `limit` images."""
    ids = [int(i) for i in subset.split_ids(split)][:limit]
    if not ids:
        raise ValueError(f"split {split!r} has no images; nothing to extract")
    row = {i: r for r, i in enumerate(ids)}
    caps = subset.captions[subset.captions.image_id.isin(row)]
    if caps.caption_id.duplicated().any():
        raise ValueError(f"split {split!r} lists caption ids twice; each caption needs its own id")
    caption_image = torch.tensor([row[int(i)] for i in caps.image_id], dtype=torch.long)
    return ids, [int(c) for c in caps.caption_id], caps.caption.tolist(), caption_image


def _shard_key(base: dict, split: str, rank: int, world: int, rows: range, layout: str) -> dict:
    """A feature-cache key made a shard's: its split, place and the digest of the whole split's layout."""
    return {**base, "split": split, "shard": [rank, world], "rows": [rows.start, rows.stop], "layout": layout}


def _check_captions(n: int, dim: int | None, caption_ids: list[int], caption_image: torch.Tensor):
    text = _check_text(n, dim)

    def check(t: dict) -> str | None:
        extra = {"caption_ids", "caption_image"}
        if not extra <= set(t):
            return f"tensors {sorted(t)}"
        problem = text({k: v for k, v in t.items() if k not in extra})
        if problem:
            return problem
        if t["caption_ids"].tolist() != caption_ids or not torch.equal(t["caption_image"], caption_image):
            return "caption ids or their images differ"
        return None
    return check


def _entry(path: Path, rows: range, **extra) -> dict:
    return {"file": path.name, "rows": [rows.start, rows.stop], "bytes": path.stat().st_size,
            "sha256": file_sha256(path), **extra}


# ----------------------------------------------------------------------------- extraction

def extract_shard(subset, split: str, out: str | Path, rank: int, world: int, image_encoder="auto",
                  text_encoder="auto", *, limit: int | None = None, device: str | None = None,
                  num_workers: int | None = None, graph: bool | None = None, progress: bool = True) -> dict:
    """Shard `rank` of `world` of the split's images and captions -> {'images': entry, 'captions': entry} for
    the index. Written atomically in float16; kept (not extracted again) when the file there verifies."""
    out, dev = Path(out), get_device(device or course_device())
    ids, caption_ids, captions, caption_image = split_inputs(subset, split, limit)
    layout = _digest({"images": ids, "captions": caption_ids, "texts": captions})
    tidy_cache(out)
    image_model, image_choice = load_image_encoder(image_encoder) if isinstance(image_encoder, str) \
        else (image_encoder, image_encoder.choice)
    text_model, text_choice = load_text_encoder(text_encoder) if isinstance(text_encoder, str) \
        else (text_encoder, text_encoder.choice)
    transform, compute = blog_transform(), _compute_dtype(dev, None)

    rows = shard_rows(len(ids), rank, world)
    mine = ids[rows.start:rows.stop]
    key = _shard_key(image_cache_key(image_choice, transform, mine, image_md5s(subset, mine), compute,
                                     "onednn-graph" if use_graph(dev, None, graph) else "eager"), split, rank, world, rows, layout)
    path = out / shard_name(split, "images", rank, world)
    if load_cache(path, key, _check_image(len(mine), image_model.channels, mine)) is None:
        regions, pooled = extract_image_features(subset, mine, image_model, transform, device=str(dev),
                                                 num_workers=num_workers, graph=graph, progress=progress)
        save_cache(path, {"regions": regions, "pooled": pooled, "image_ids": torch.tensor(mine, dtype=torch.long)},
                   key)
    images = _entry(path, rows)

    rows = shard_rows(len(captions), rank, world)
    mine_ids, mine_image = caption_ids[rows.start:rows.stop], caption_image[rows.start:rows.stop]
    key = _shard_key(text_cache_key(text_choice, captions[rows.start:rows.stop], text_model.max_length, compute),
                     split, rank, world, rows, layout)
    key["caption_rows_sha256"] = _digest([mine_ids, mine_image.tolist()])
    path = out / shard_name(split, "captions", rank, world)
    hit = load_cache(path, key, _check_captions(len(mine_ids), text_model.dim, mine_ids, mine_image))
    if hit is None:
        tokens, offsets, pooled = extract_text_features(captions[rows.start:rows.stop], text_model, device=str(dev),
                                                        progress=progress)
        save_cache(path, {"tokens": tokens, "offsets": offsets, "pooled": pooled, "caption_image": mine_image,
                          "caption_ids": torch.tensor(mine_ids, dtype=torch.long)}, key)
        n_tok = len(tokens)
    else:
        n_tok = len(hit["tokens"])
    return {"images": images, "captions": _entry(path, rows, tokens=n_tok),
            "layout": layout, "encoders": {"image": image_choice.name, "text": text_choice.name},
            "counts": {"images": len(ids), "captions": len(captions)}}


def write_index(out: str | Path, split: str, entries: list[dict]) -> Path:
    """The shards' entries (rank order, from `extract_shard` or `write_featureset`) -> <out>/<split>-index.json."""
    if len({(e["layout"], json.dumps(e["encoders"], sort_keys=True)) for e in entries}) != 1:
        raise RuntimeError(f"the shards of {split!r} were made from different inputs or encoders; "
                           "remove them and extract the split again")
    first, world = entries[0], len(entries)
    index = {"format": INDEX_FORMAT, "cache_format": CACHE_FORMAT, "split": split, "world": world,
             "dtype": "float16", "encoders": first["encoders"], "layout_sha256": first["layout"],
             "order": "images in the split's order; captions in the data's caption order, caption_image = their "
                      "image's row; shard r holds rows [n*r//W, n*(r+1)//W)",
             "images": {"count": first["counts"]["images"], "shards": [e["images"] for e in entries]},
             "captions": {"count": first["counts"]["captions"],
                          "tokens": sum(e["captions"]["tokens"] for e in entries),
                          "shards": [e["captions"] for e in entries]}}
    return write_json(index_path(out, split), index, indent=1)


def workers_per_rank(device: torch.device) -> int:
    """JPEG-decoding workers of one rank: the machine's share of this rank (torchrun's LOCAL_WORLD_SIZE)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local == 1:
        return default_num_workers(device)
    return max(1, (os.cpu_count() or 1) // local - 1) if device.type == "cuda" else 0


def extract_split(subset, split: str, out: str | Path, image_encoder="auto", text_encoder="auto", *,
                  world: int | None = None, limit: int | None = None, device: str | None = None,
                  graph: bool | None = None, progress: bool = True) -> Path:
    """Every shard of a split and its index -> the index's path.

    Under torchrun each rank extracts its own shard (on its GPU, `cuda:LOCAL_RANK`), then rank 0 writes the
    index; in one process, `world` shards (default 1) one after another. `graph`: as `extract_image_features`."""
    with distributed.process(device or course_device()) as process:
        if process.world > 1:
            if world not in (None, process.world):
                raise ValueError(f"world={world} but torchrun started {process.world} processes; leave it out")
            entry = extract_shard(subset, split, out, process.rank, process.world, image_encoder, text_encoder,
                                  limit=limit, device=str(process.device),
                                  num_workers=workers_per_rank(process.device), graph=graph, progress=progress)
            entries = [None] * process.world
            dist.all_gather_object(entries, entry)
            if process.rank == 0:
                write_index(out, split, entries)
            process.barrier()
            return index_path(out, split)
        image_encoder = load_image_encoder(image_encoder)[0] if isinstance(image_encoder, str) else image_encoder
        text_encoder = load_text_encoder(text_encoder)[0] if isinstance(text_encoder, str) else text_encoder
        entries = [extract_shard(subset, split, out, r, world or 1, image_encoder, text_encoder, limit=limit,
                                 device=str(process.device), graph=graph, progress=progress)
                   for r in range(world or 1)]
        return write_index(out, split, entries)


def write_featureset(fs: FeatureSet, out: str | Path, split: str, world: int = 1) -> Path:
    """An in-memory FeatureSet written as `world` shards of `split` and their index (the course's cached
    features at scale, or synthetic ones for tests) -> the index's path."""
    out, entries = Path(out), []
    layout = _digest({"source": fs.source, "images": fs.image_ids.tolist(), "captions": fs.caption_ids.tolist()})
    for rank in range(world):
        img = shard_rows(fs.n_images, rank, world)
        key = {"format": CACHE_FORMAT, "kind": "featureset", "split": split, "shard": [rank, world], "layout": layout}
        path = save_cache(out / shard_name(split, "images", rank, world),
                          {"regions": fs.regions[img.start:img.stop], "pooled": fs.pooled[img.start:img.stop],
                           "image_ids": fs.image_ids[img.start:img.stop]}, key)
        images = _entry(path, img)
        cap = shard_rows(fs.n_captions, rank, world)
        a, b = int(fs.offsets[cap.start]), int(fs.offsets[cap.stop])
        path = save_cache(out / shard_name(split, "captions", rank, world),
                          {"tokens": fs.tokens[a:b], "offsets": fs.offsets[cap.start:cap.stop + 1] - a,
                           "pooled": fs.text_pooled[cap.start:cap.stop], "caption_image": fs.caption_image[cap.start:cap.stop],
                           "caption_ids": fs.caption_ids[cap.start:cap.stop]}, key)
        entries.append({"images": images, "captions": _entry(path, cap, tokens=b - a), "layout": layout,
                        "encoders": {"from": fs.source}, "counts": {"images": fs.n_images, "captions": fs.n_captions}})
    return write_index(out, split, entries)


# ----------------------------------------------------------------------------- training and scoring

def run_folder(cfg: TrainConfig, shards: str | Path) -> Path:
    """runs/<shards folder name>/<the course's run name for cfg>: one run per configuration and feature set."""
    return PATHS.runs / Path(shards).resolve().name / course_run_dir(cfg).name


def train_sharded(cfg: TrainConfig, shards: str | Path, run_dir: str | Path | None = None,
                  train_split: str = "train", val_split: str = "val") -> TrainResult:
    """`train.train` on the shards (one process or a torchrun rank; each reads its share of each batch);
    rank 0 validates on `val_split` read into memory. Checkpoints and resume as for the course's runs."""
    with distributed.process(cfg.device) as process:
        train_fs, val = open_split(shards, train_split), open_split(shards, val_split)
        val_fs = val.load() if process.rank == 0 else val       # only rank 0 validates; the others need its sizes
        return train(cfg, train_fs, val_fs, run_dir or run_folder(cfg, shards), scoring=FAST, process=process)


def score_sharded(run_dir: str | Path, shards: str | Path, split: str = "test", device: str = "cpu") -> dict:
    """The run's best checkpoint on the whole split (read into memory) -> Recall@1/5/10 both ways, rsum, medr."""
    test = open_split(shards, split).load()
    model = load_result(run_dir, device).model
    return metrics.recall_table(FAST.all(model, test, device=device), test.caption_image)


def score_protocols(run_dir: str | Path, shards: str | Path, split: str = "test", device: str = "cpu",
                    n_folds: int = 5, n_boot: int = 1000, seed: int = 0) -> dict:
    """The run's best checkpoint on the whole split, read both published ways (`helpers.protocols`) ->
    {'1k': {'folds': [recalls per fold], 'mean', 'min', 'max', 'std'}, '5k': recalls,
    '5k_interval': {metric: [lo, hi]} (95%, test images resampled with their captions; one seed)}.
    With Karpathy's 5K test split, '1k' is the published COCO 1K figure and '5k' COCO 5K."""
    test = open_split(shards, split).load()
    model = load_result(run_dir, device).model
    scores = FAST.all(model, test, device=device).float().cpu()
    table = protocols.protocol_1k(scores, test.caption_image, n_folds)
    folds = table.iloc[:n_folds]
    ranks = metrics.ranks(scores, test.caption_image)
    spread = intervals.honest_interval([ranks], test.caption_image.numpy(), n_boot=n_boot, seed=seed)
    return {"split": split, "images": test.n_images, "captions": test.n_captions, "n_folds": n_folds,
            "1k": {"folds": [{k: float(v) for k, v in row.items()} for _, row in folds.iterrows()],
                   **{name: {k: float(v) for k, v in table.loc[name].items()} for name in ("mean", "min", "max")},
                   "std": {k: float(v) for k, v in folds.std(ddof=1).items()}},
            "5k": protocols.protocol_5k(scores, test.caption_image),
            "5k_interval": {m: [float(spread.loc[m, "lo"]), float(spread.loc[m, "hi"])] for m in METRICS}}


def protocol_lines(result: dict) -> list[str]:
    """`score_protocols`' result -> readable lines: each 1K fold, the 1K mean with its fold spread, 5K
    with its interval; every number named by its key (`protocols.summary`)."""
    one_k, n = result["1k"], result["n_folds"]
    lines = [protocols.summary(f, f"1K fold {i + 1}") for i, f in enumerate(one_k["folds"])]
    lines.append(protocols.summary(one_k["mean"], f"1K (mean of {n} folds)"))
    lines.append(f"    folds' rSum {one_k['min']['rsum']:.1f} .. {one_k['max']['rsum']:.1f} "
                 f"(std {one_k['std']['rsum']:.1f}); R@1 image→text {one_k['min']['i2t_R@1']:.1f} .. "
                 f"{one_k['max']['i2t_R@1']:.1f}, text→image {one_k['min']['t2i_R@1']:.1f} .. {one_k['max']['t2i_R@1']:.1f}")
    lines.append(protocols.summary(result["5k"], f"5K (all {result['images']} images)"))
    lo, hi = result["5k_interval"]["rsum"]
    lines.append(f"    95% interval over test images: rSum {lo:.1f} .. {hi:.1f}")
    return lines


# ----------------------------------------------------------------------------- command line

def _config(args) -> TrainConfig:
    cfg = train_config(args.model, args.budget, args.seed, progress=not args.no_progress)
    asked = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "patience": args.patience,
             "device": args.device,
             "model_overrides": None if args.model_overrides is None else {**cfg.model_overrides, **args.model_overrides}}
    return replace(cfg, **{k: v for k, v in asked.items() if v is not None})


def _load_data(name: str | None, root: Path | None = None):
    """--data -> the data to extract: 'course' (the COCO subset), 'karpathy' (full COCO at `root`, default
    PATHS.karpathy); None follows COURSE_DATA."""
    name = name or ("karpathy" if data_source() == "karpathy" else "course")
    if name == "karpathy":
        return load_karpathy(root)
    if name != "course":
        raise ValueError(f"unknown --data {name!r}; 'course' is the course's COCO subset (data.load_subset), "
                         "'karpathy' full COCO with Karpathy's split (data.load_karpathy); call "
                         "extract_split(subset, ...) from Python for another loader")
    return load_subset()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.pipeline.shards", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("extract", help="extract a split as shards (under torchrun: one per rank) and its index")
    e.add_argument("--split", required=True, nargs="+", help="one or more of train, val, test")
    e.add_argument("--out", type=Path, default=PATHS.shards)
    e.add_argument("--data", help="'course': the course's COCO subset; 'karpathy': full COCO (default: as COURSE_DATA)")
    e.add_argument("--data-dir", type=Path, help="--data karpathy: where it was prepared (default: COURSE_KARPATHY_DIR)")
    e.add_argument("--world", type=int, help="without torchrun: this many shards, one after another")
    e.add_argument("--limit", type=int, help="only the split's first N images (a trial run)")
    e.add_argument("--device", help="cpu, cuda or auto (default: COURSE_DEVICE)")
    e.add_argument("--no-progress", action="store_true")
    v = sub.add_parser("verify", help="compare every shard of a split with the sha256 in its index")
    v.add_argument("--split", required=True, nargs="+")
    v.add_argument("--shards", type=Path, default=PATHS.shards)
    for name in ("train", "score"):
        t = sub.add_parser(name, help="train a run on the shards (under torchrun: DDP)" if name == "train"
                           else "the run's best checkpoint on the test split")
        t.add_argument("--shards", type=Path, default=PATHS.shards)
        t.add_argument("--model", default="decoupled")
        t.add_argument("--budget", default="full")
        t.add_argument("--seed", type=int, default=0)
        t.add_argument("--epochs", type=int)
        t.add_argument("--batch-size", type=int, help="global batch")
        t.add_argument("--lr", type=float)
        t.add_argument("--patience", type=int)
        t.add_argument("--device")
        t.add_argument("--model-overrides", type=json.loads, help='JSON, e.g. \'{"dim": 32}\'')
        t.add_argument("--run-dir", type=Path, help="default: runs/<shards folder>/<run name>")
        t.add_argument("--no-progress", action="store_true")
    t.add_argument("--protocols", action="store_true", help="both published protocols: 1K (five folds, each "
                   "shown, mean and spread) and 5K with its 95%% interval")
    t.add_argument("--json", type=Path, help="with --protocols: also write them to this JSON file")
    args = parser.parse_args(argv)

    if args.command == "extract":
        subset = _load_data(args.data, args.data_dir)
        encoders = (load_image_encoder("auto")[0], load_text_encoder("auto")[0])    # loaded once for every split
        # one process group for all the splits: a second group on torchrun's store would meet the first's addresses
        with distributed.process(args.device or course_device()):
            for split in args.split:
                path = extract_split(subset, split, args.out, *encoders, world=args.world, limit=args.limit,
                                     device=args.device, progress=not args.no_progress)
                if int(os.environ.get("RANK", "0")) == 0:
                    index = read_index(args.out, split)
                    print(f"{path}: {index['images']['count']} images, {index['captions']['count']} captions "
                          f"in {index['world']} shard(s)")
        return 0
    if args.command == "verify":
        failed = False
        for split in args.split:
            problems = verify_split(args.shards, split)
            print("\n".join(problems) or f"all shards of {split!r} match their index")
            failed |= bool(problems)
        return 1 if failed else 0
    cfg = _config(args)
    folder = args.run_dir or run_folder(cfg, args.shards)
    if args.command == "train":
        result = train_sharded(cfg, args.shards, folder)
        if int(os.environ.get("RANK", "0")) == 0:
            print(result.history.round(4).to_string(index=False))
            print(f"best epoch {result.best['epoch']} (val rsum {result.best['rsum']:.1f}); checkpoints in {folder}")
            print(f"trained by {os.environ.get('WORLD_SIZE', '1')} process(es)")
        return 0
    if args.protocols:
        result = score_protocols(folder, args.shards, device=str(get_device(cfg.device)))
        print("\n".join(protocol_lines(result)))
        if args.json:
            write_json(args.json, result, indent=1)
        return 0
    table = score_sharded(folder, args.shards, device=str(get_device(cfg.device)))
    print(json.dumps({k: round(v, 2) for k, v in table.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
