"""The feature cache: each extraction is done once and read back from disk after, and the course's splits
built from it (`load_course_features`).

One safetensors file per (modality, encoder, weights, preprocessing, inputs, precision). The file
name carries a short hash of that key and the file's metadata the full key, so a changed setting
never reads old features; a damaged or stale file is reported and rebuilt, never loaded.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..atomic import atomic_path
from ..config import PATHS, TEXT_MAX_LENGTH, course_device, get_device
from ..data import load_subset
from ..encoders import (IMAGE_BACKBONES, blog_transform, file_identity, load_image_encoder, load_text_encoder,
                        resolve_image_backbone, resolve_text_model)
from ..fast.extraction import amp_on, extract_image_features, extract_text_features, use_graph
from ..features import FeatureSet

CACHE_FORMAT = 1    # bump when the layout of the cache files changes: every old file becomes stale


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _compute_dtype(device: torch.device, amp: bool | None) -> str:
    return "float32" if not amp_on(device, amp) else ("autocast-float16" if device.type == "cuda" else "autocast-bfloat16")


def image_cache_key(choice, transform, image_ids: list[int], compute_dtype: str = "float32",
                    kernels: str = "eager") -> dict:
    """Everything the image features depend on: backbone, weights file (name, size, md5), transform, ids,
    dtypes, and the kernels ('onednn-graph' or 'eager': equal up to rounding, but not bit for bit)."""
    return {"format": CACHE_FORMAT, "kind": "image", "backbone": choice.name,
            "weights": file_identity(choice.weights_file), "transform": repr(transform),
            "ids_sha256": _digest([int(i) for i in image_ids]), "n": len(image_ids),
            "compute_dtype": compute_dtype, "kernels": kernels, "dtype": "float16"}


def text_cache_key(choice, captions: list[str], max_length: int, compute_dtype: str = "float32") -> dict:
    """Everything the text features depend on: model, weights and tokenizer files, max length, captions, dtypes."""
    folder = choice.weights_file.parent
    tok = next((folder / n for n in ("tokenizer.json", "vocab.txt") if (folder / n).is_file()), None)
    return {"format": CACHE_FORMAT, "kind": "text", "model": choice.name,
            "weights": file_identity(choice.weights_file), "tokenizer": file_identity(tok),
            "max_length": max_length, "captions_sha256": _digest(list(captions)), "n": len(captions),
            "compute_dtype": compute_dtype, "dtype": "float16"}


def cache_file(key: dict, cache_dir: Path | None = None) -> Path:
    """data/cache/<kind>-<encoder>-<12 hex of the key's sha256>.safetensors"""
    name = key.get("backbone") or key.get("model")
    return Path(cache_dir or PATHS.cache) / f"{key['kind']}-{name}-{_digest(key)[:12]}.safetensors"


def save_cache(path: Path, tensors: dict[str, torch.Tensor], key: dict) -> Path:
    """Write `tensors` + the full key to `path` (atomically: `atomic.atomic_path`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={"key": json.dumps(key, sort_keys=True)})
    return path


def load_cache(path: Path, key: dict, check) -> dict[str, torch.Tensor] | None:
    """The tensors in `path` if it exists, reads, carries `key` and passes `check`; else None (with a warning
    when a file was there but unusable)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = (f.metadata() or {}).get("key")
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated/garbled files
        warnings.warn(f"feature cache {path.name} is corrupt ({type(e).__name__}: {e}); rebuilding it", stacklevel=3)
        return None
    if stored != json.dumps(key, sort_keys=True):
        warnings.warn(f"feature cache {path.name} is stale (it was built with other settings); rebuilding it",
                      stacklevel=3)
        return None
    problem = check(tensors)
    if problem:
        warnings.warn(f"feature cache {path.name} is corrupt ({problem}); rebuilding it", stacklevel=3)
        return None
    return tensors


def _check_image(n: int, channels: int | None, ids: list[int]):
    def check(t: dict) -> str | None:
        if set(t) != {"regions", "pooled", "image_ids"}:
            return f"tensors {sorted(t)}"
        r, p = t["regions"], t["pooled"]
        c = channels or r.shape[-1]
        if r.dim() != 3 or r.shape[0] != n or r.shape[2] != c or tuple(p.shape) != (n, c):
            return f"shapes regions {tuple(r.shape)}, pooled {tuple(p.shape)}; expected ({n}, R, {c}), ({n}, {c})"
        if r.dtype != torch.float16 or p.dtype != torch.float16:
            return f"dtypes {r.dtype}, {p.dtype}"
        if t["image_ids"].tolist() != [int(i) for i in ids]:
            return "image ids differ"
        return None
    return check


def _check_text(n: int, dim: int | None):
    def check(t: dict) -> str | None:
        if set(t) != {"tokens", "offsets", "pooled"}:
            return f"tensors {sorted(t)}"
        tok, off, p = t["tokens"], t["offsets"], t["pooled"]
        d = dim or tok.shape[-1]
        if tok.dim() != 2 or tok.shape[1] != d or tuple(off.shape) != (n + 1,) or tuple(p.shape) != (n, d):
            return f"shapes tokens {tuple(tok.shape)}, offsets {tuple(off.shape)}, pooled {tuple(p.shape)}"
        if int(off[0]) != 0 or int(off[-1]) != tok.shape[0] or bool((off[1:] < off[:-1]).any()):
            return "offsets do not index the tokens"
        if tok.dtype != torch.float16 or p.dtype != torch.float16:
            return f"dtypes {tok.dtype}, {p.dtype}"
        return None
    return check


def cached_image_features(subset, image_ids: list[int], encoder="auto", transform=None, *,
                          batch_size: int | None = None, num_workers: int | None = None, device: str | None = None,
                          channels_last: bool = True, amp: bool | None = None, graph: bool | None = None,
                          cache_dir: Path | None = None, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Like `extract_image_features`, read from data/cache when the same features were built before.

    `encoder` is a backbone name ('auto', 'mobilenet_v2', 'resnet50') or a loaded ImageEncoder; by
    name, the model is loaded only when the cache misses. `transform` defaults to the blog's.
    """
    dev = get_device(device or course_device())
    transform = transform if transform is not None else blog_transform()
    ids = [int(i) for i in image_ids]
    model = None if isinstance(encoder, str) else encoder
    choice = resolve_image_backbone(encoder) if model is None else model.choice
    if choice.weights_file is None:
        raise ValueError("random-weight features are not cached (they change with every build); call "
                         "extract_image_features directly")
    if not choice.weights_file.is_file():     # a download was allowed: fetch it before hashing it
        model, choice = load_image_encoder(choice.name)
    kernels = "onednn-graph" if use_graph(dev, amp, graph) else "eager"
    key = image_cache_key(choice, transform, ids, _compute_dtype(dev, amp), kernels)
    path = cache_file(key, cache_dir)
    channels = model.channels if model is not None else IMAGE_BACKBONES[choice.name].channels
    hit = load_cache(path, key, _check_image(len(ids), channels, ids))
    if hit is not None:
        return hit["regions"], hit["pooled"]
    if model is None:
        model, _ = load_image_encoder(choice.name)
    regions, pooled = extract_image_features(subset, ids, model, transform, batch_size=batch_size,
                                             num_workers=num_workers, device=device,
                                             channels_last=channels_last, amp=amp, graph=graph, progress=progress)
    save_cache(path, {"regions": regions, "pooled": pooled, "image_ids": torch.tensor(ids, dtype=torch.long)}, key)
    return regions, pooled


def cached_text_features(captions: list[str], encoder="auto", *, batch_size: int = 128, device: str | None = None,
                         amp: bool | None = None, cache_dir: Path | None = None, progress: bool = True
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Like `extract_text_features`, read from data/cache when the same features were built before.

    `encoder` is a model name ('auto', 'all-MiniLM-L6-v2', 'bert-base-uncased') or a loaded TextEncoder.
    """
    dev = get_device(device or course_device())
    captions = list(captions)
    model = None if isinstance(encoder, str) else encoder
    choice = resolve_text_model(encoder) if model is None else model.choice
    if choice.weights_file is None:
        model, choice = load_text_encoder(choice.name)
    if choice.weights_file is None:
        raise ValueError(f"text model {choice.name} has no weights file to key the cache on; call "
                         "extract_text_features directly")
    max_length = model.max_length if model is not None else TEXT_MAX_LENGTH
    key = text_cache_key(choice, captions, max_length, _compute_dtype(dev, amp))
    path = cache_file(key, cache_dir)
    hit = load_cache(path, key, _check_text(len(captions), model.dim if model is not None else None))
    if hit is not None:
        return hit["tokens"], hit["offsets"], hit["pooled"]
    if model is None:
        model, _ = load_text_encoder(choice.name)
    tokens, offsets, pooled = extract_text_features(captions, model, batch_size=batch_size, device=device,
                                                    amp=amp, progress=progress)
    save_cache(path, {"tokens": tokens, "offsets": offsets, "pooled": pooled}, key)
    return tokens, offsets, pooled


def fingerprint(*tensors: torch.Tensor) -> str:
    """12 hex digits of the sha256 of the tensors' bytes: which features a training run was made on."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def load_course_features(image_encoder="auto", text_encoder="auto", device: str | None = None, subset=None,
                         transform=None, cache_dir: Path | None = None, progress: bool = True
                         ) -> dict[str, FeatureSet]:
    """The whole subset's features (built once, then read from data/cache) -> {'all', 'train', 'val', 'test'}."""
    subset = subset if subset is not None else load_subset()
    ids = [int(i) for i in subset.image_ids]
    regions, pooled = cached_image_features(subset, ids, image_encoder, transform, device=device,
                                            cache_dir=cache_dir, progress=progress)
    caps = subset.captions
    tokens, offsets, text_pooled = cached_text_features(caps.caption.tolist(), text_encoder, device=device,
                                                        cache_dir=cache_dir, progress=progress)
    row = {image_id: r for r, image_id in enumerate(ids)}
    source = fingerprint(pooled, text_pooled)
    everything = FeatureSet(
        image_ids=torch.tensor(ids, dtype=torch.long), regions=regions, pooled=pooled,
        caption_ids=torch.tensor(caps.caption_id.to_numpy(), dtype=torch.long),
        caption_image=torch.tensor([row[int(i)] for i in caps.image_id], dtype=torch.long),
        tokens=tokens, offsets=offsets, text_pooled=text_pooled, source=source)
    out = {"all": everything}
    for split in ("train", "val", "test"):
        out[split] = everything.select_images(torch.tensor([row[int(i)] for i in subset.split_ids(split)]))
    return out
