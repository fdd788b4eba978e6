"""The feature cache: each extraction is done once and read back from disk after, and the course's splits
built from it (`load_course_features`; other splits of the subset with `order`).

One safetensors file per (modality, encoder, weights, preprocessing, inputs, precision). The file
name carries a short hash of that key and the file's metadata the full key, so a changed setting
never reads old features. The inputs are the images' md5s (a repaired image is a new key) or the
captions. Each tensor's sha256 is stored with it and checked on load, with an all-finite check; a
damaged, unreadable or stale file is reported by name and rebuilt, never loaded. Temporary files of
a killed write, and files of an older CACHE_FORMAT, are removed when the cache is next used.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import pandas as pd
import torch

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..atomic import atomic_path, md5sum
from ..config import PATHS, TEXT_MAX_LENGTH, course_device, get_device
from ..data import load_subset
from ..encoders import (IMAGE_BACKBONES, MINILM, blog_transform, file_identity, load_image_encoder, load_text_encoder,
                        load_tokenizer, random_text_encoder, resolve_image_backbone, resolve_text_model,
                        tokenize_captions)
from ..fast.extraction import amp_on, extract_image_features, extract_text_features, use_graph
from ..features import FeatureSet
from ..train import text_mark

try:                # flock marks a write in progress: a tidy-up removes only the temp files of dead writes
    import fcntl
except ImportError:  # Windows: a temp file untouched for TEMP_MAX_AGE_S is taken as dead
    fcntl = None

CACHE_FORMAT = 2    # bump when the layout of the cache files changes: every old file becomes stale (and is removed)
TEMP_MAX_AGE_S = 3600
TEMP_GLOB = ".*.safetensors.*.tmp.safetensors"   # atomic_path's temp names: .<final name>.<random>.tmp.safetensors


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _compute_dtype(device: torch.device, amp: bool | None) -> str:
    return "float32" if not amp_on(device, amp) else ("autocast-float16" if device.type == "cuda" else "autocast-bfloat16")


@lru_cache(maxsize=16384)
def _file_md5(path: str, size: int, mtime_ns: int) -> str:
    return md5sum(path)


def file_md5(path: Path) -> str:
    """md5 of a file's bytes, memoised per (path, size, mtime)."""
    st = Path(path).stat()
    return _file_md5(str(path), st.st_size, st.st_mtime_ns)


def manifest_md5(subset) -> dict[int, tuple[str, int]]:
    """{image id: (file_md5, file_bytes)} from the subset's manifest.csv (what `data.verify` checks the files
    against); {} for a subset without one."""
    path = Path(subset.root) / "manifest.csv" if hasattr(subset, "root") else None
    if path is None or not path.is_file():
        return {}
    m = pd.read_csv(path, usecols=lambda c: c in {"image_id", "file_md5", "file_bytes"})
    sizes = m.file_bytes if "file_bytes" in m else [-1] * len(m)
    return {int(i): (str(h), int(b)) for i, h, b in zip(m.image_id, m.file_md5, sizes)}


def image_md5s(subset, image_ids: list[int]) -> list[str]:
    """The md5 of each image's file: the manifest's when the file has the manifest's size, else hashed from
    the file (no manifest, an id it lacks, or a file of another size: damaged or replaced)."""
    known = manifest_md5(subset)
    out = []
    for i in image_ids:
        path = subset.image_path(int(i))
        md5, size = known.get(int(i), (None, -1))
        fits = md5 is not None and (size < 0 or path.stat().st_size == size)
        out.append(md5 if fits else file_md5(path))
    return out


def image_cache_key(choice, transform, image_ids: list[int], image_md5: list[str], compute_dtype: str = "float32",
                    kernels: str = "eager") -> dict:
    """Everything the image features depend on: backbone, weights file (name, size, md5), transform, the ids
    and md5s of the images, dtypes, and the kernels ('onednn-graph' or 'eager': equal up to rounding, but
    not bit for bit)."""
    if len(image_md5) != len(image_ids):
        raise ValueError(f"{len(image_ids)} image ids but {len(image_md5)} md5s; pass one md5 per image")
    return {"format": CACHE_FORMAT, "kind": "image", "backbone": choice.name,
            "weights": file_identity(choice.weights_file), "transform": repr(transform),
            "images_sha256": _digest([[int(i), str(h)] for i, h in zip(image_ids, image_md5)]), "n": len(image_ids),
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


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes."""
    h = hashlib.sha256(f"{t.dtype} {tuple(t.shape)} ".encode())
    h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN or inf in a floating tensor: its min and max are finite (both propagate NaN; one pass, no copy)."""
    if not t.is_floating_point() or t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def _lock(tmp: Path):
    """An open file holding an exclusive flock on `tmp` (None without fcntl): a tidy-up leaves it alone."""
    if fcntl is None:
        return None
    f = open(tmp, "rb")
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    return f


def save_cache(path: Path, tensors: dict[str, torch.Tensor], key: dict) -> Path:
    """Write `tensors`, the full key and each tensor's sha256 to `path` (atomically: `atomic.atomic_path`;
    the temp file is locked while it is written, so a killed write's leftover is told from a live one)."""
    path, lock = Path(path), None
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    meta = {"key": json.dumps(key, sort_keys=True),
            "sha256": json.dumps({k: tensor_sha256(v) for k, v in tensors.items()}, sort_keys=True)}
    try:
        with atomic_path(path) as tmp:
            lock = _lock(tmp)
            save_file(tensors, tmp, metadata=meta)
    finally:
        if lock is not None:
            lock.close()
    return path


def _dead(tmp: Path) -> bool:
    """True (and `tmp` removed) when no live write holds `tmp`."""
    if fcntl is None:
        try:
            old = time.time() - tmp.stat().st_mtime > TEMP_MAX_AGE_S
        except FileNotFoundError:
            return False
        if old:
            tmp.unlink(missing_ok=True)
        return old
    try:
        f = open(tmp, "rb")
    except FileNotFoundError:       # finished (renamed) or removed since the listing
        return False
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:             # a live write holds it
            return False
        tmp.unlink(missing_ok=True)
        return True


def _stored_format(path: Path) -> int | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            return int(json.loads((f.metadata() or {})["key"])["format"])
    except Exception:   # unreadable or no key: left for load_cache to report when its key is asked for
        return None


def tidy_cache(cache_dir: Path | None = None) -> list[Path]:
    """Remove, from the cache folder, the temp files of killed writes (with a warning) and the cache files
    of an older CACHE_FORMAT (never read again) -> the paths removed."""
    folder = Path(cache_dir or PATHS.cache)
    if not folder.is_dir():
        return []
    dead = []
    for tmp in sorted(folder.glob(TEMP_GLOB)):
        size = tmp.stat().st_size if tmp.exists() else 0
        if _dead(tmp):
            dead.append(tmp)
            warnings.warn(f"removed {tmp} ({size / 2**20:.0f} MiB), the temporary file of a feature-cache write "
                          "that was interrupted (killed, or the machine stopped)", stacklevel=3)
    old = [p for p in sorted(folder.glob("*.safetensors"))
           if (fmt := _stored_format(p)) is not None and fmt < CACHE_FORMAT]
    for p in old:
        p.unlink(missing_ok=True)
    return dead + old


def _verify(tensors: dict[str, torch.Tensor], meta: dict) -> str | None:
    """What is wrong with loaded tensors against their stored checksums, or None."""
    try:
        sums = json.loads(meta["sha256"])
    except (KeyError, ValueError):
        return "it carries no checksums"
    if set(sums) != set(tensors):
        return f"its checksums name tensors {sorted(sums)}, the file holds {sorted(tensors)}"
    for name, t in tensors.items():
        if tensor_sha256(t) != sums[name]:
            return f"the bytes of tensor '{name}' do not match their sha256: the file was damaged on disk"
    for name, t in tensors.items():
        if not _all_finite(t):
            return f"tensor '{name}' holds NaN or inf values"
    return None


def _rebuild(path: Path, what: str):
    warnings.warn(f"feature cache {path} {what}; rebuilding it", stacklevel=4)


def load_cache(path: Path, key: dict, check) -> dict[str, torch.Tensor] | None:
    """The tensors in `path` if it exists, reads, carries `key`, matches its checksums, is all finite and
    passes `check`; else None (with a warning that names the file and what is wrong when a file was there)."""
    path = Path(path)
    if not path.is_file():
        return None
    if path.stat().st_size == 0:
        return _rebuild(path, "is empty (0 bytes: its write was cut off)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated/garbled files
        return _rebuild(path, f"is unreadable, truncated or not a safetensors file ({type(e).__name__}: {e})")
    if meta.get("key") != json.dumps(key, sort_keys=True):
        return _rebuild(path, "is stale (it was built with other settings)")
    problem = _verify(tensors, meta) or check(tensors)
    if problem:
        return _rebuild(path, f"is corrupt ({problem})")
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
    name, the model is loaded only when the cache misses. `transform` defaults to the blog's. The key
    holds each image's md5; features built from a file that differs from its manifest md5 are returned
    with a warning but never cached.
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
    md5s = image_md5s(subset, ids)
    key = image_cache_key(choice, transform, ids, md5s, _compute_dtype(dev, amp), kernels)
    path = cache_file(key, cache_dir)
    tidy_cache(cache_dir)
    channels = model.channels if model is not None else IMAGE_BACKBONES[choice.name].channels
    hit = load_cache(path, key, _check_image(len(ids), channels, ids))
    if hit is not None:
        return hit["regions"], hit["pooled"]
    if model is None:
        model, _ = load_image_encoder(choice.name)
    regions, pooled = extract_image_features(subset, ids, model, transform, batch_size=batch_size,
                                             num_workers=num_workers, device=device,
                                             channels_last=channels_last, amp=amp, graph=graph, progress=progress)
    differ = [(i, h) for i, h in zip(ids, md5s) if file_md5(subset.image_path(i)) != h]
    if differ:   # the key would name bytes the features were not built from: never cache them
        i, h = differ[0]
        warnings.warn(f"{len(differ)} image file(s) differ from the md5 in the subset's manifest (first: image {i} "
                      f"at {subset.image_path(i)}, expected md5 {h}): damaged or replaced, so their features "
                      f"are returned but not cached; `python -m helpers.data verify` lists them and "
                      f"`python -m helpers.data prepare` repairs them", stacklevel=2)
    else:
        save_cache(path, {"regions": regions, "pooled": pooled, "image_ids": torch.tensor(ids, dtype=torch.long)},
                   key)
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
    tidy_cache(cache_dir)
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


def split_mark(order: int) -> str:
    """What the FeatureSets of split `order` add to their `source`: '' for the course's split (0), else '|split<k>'."""
    return f"|split{order}" if order else ""


def check_split(fs: FeatureSet, order: int) -> None:
    """Raise unless `fs` was cut for split `order` (its `source` carries `split_mark(order)` and no other)."""
    found = re.search(r"\|split(\d+)", fs.source)
    have = int(found.group(1)) if found else 0
    if have != order:
        raise ValueError(f"these features were cut for split {have} (source {fs.source!r}), not split {order}; "
                         f"pass load_course_features(order={order})")


def course_splits(everything: FeatureSet, ids: dict[str, list[int]], order: int = 0) -> dict[str, FeatureSet]:
    """The whole subset's FeatureSet and {'train', 'val', 'test'}: image ids -> {'all', 'train', 'val', 'test'}
    FeatureSets; those of split `order` > 0 carry its mark in their `source` (`split_mark`)."""
    row = {int(image_id): r for r, image_id in enumerate(everything.image_ids.tolist())}
    out = {"all": everything}
    for split in ("train", "val", "test"):
        fs = everything.select_images(torch.tensor([row[int(i)] for i in ids[split]]))
        out[split] = replace(fs, source=fs.source + split_mark(order)) if order else fs
    return out


def load_course_features(image_encoder="auto", text_encoder="auto", device: str | None = None, subset=None,
                         transform=None, cache_dir: Path | None = None, progress: bool = True, order: int = 0
                         ) -> dict[str, FeatureSet]:
    """The whole subset's features (built once, then read from data/cache) -> {'all', 'train', 'val', 'test'};
    `order` > 0: the sets of another split of the subset (`data.make_split_order`), cut from the same 'all'."""
    subset = subset if subset is not None else load_subset()
    ids = [int(i) for i in subset.image_ids]
    regions, pooled = cached_image_features(subset, ids, image_encoder, transform, device=device,
                                            cache_dir=cache_dir, progress=progress)
    caps = subset.captions
    tokens, offsets, text_pooled = cached_text_features(caps.caption.tolist(), text_encoder, device=device,
                                                        cache_dir=cache_dir, progress=progress)
    row = {image_id: r for r, image_id in enumerate(ids)}
    everything = FeatureSet(
        image_ids=torch.tensor(ids, dtype=torch.long), regions=regions, pooled=pooled,
        caption_ids=torch.tensor(caps.caption_id.to_numpy(), dtype=torch.long),
        caption_image=torch.tensor([row[int(i)] for i in caps.image_id], dtype=torch.long),
        tokens=tokens, offsets=offsets, text_pooled=text_pooled, source=fingerprint(pooled, text_pooled))
    split = {s: subset.split_ids(s) for s in ("train", "val", "test")} if order == 0 else subset.split(order)
    return course_splits(everything, split, order)


# ----------------------------------------------------------------------------- notebook 08's text encoders (its encoder prior)

RANDOM_SEED = 0       # the random MiniLM's weights: one draw, frozen for every run (as MiniLM's are)
_ENCODER_FEATURES: dict = {}   # this process's encoder features, built once per (encoder, features)


def cached_random_text_features(captions: list[str], seed: int = RANDOM_SEED, cache_dir: Path | None = None,
                                progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`cached_text_features` for MiniLM with random weights (`encoders.random_text_encoder(seed)`): keyed on
    the sha256 of those weights (they come from code, not a file) and of the tokenizer's vocabulary."""
    encoder = random_text_encoder(seed)
    weights = _digest([[n, tensor_sha256(t)] for n, t in sorted(encoder.model.state_dict().items())])
    key = {"format": CACHE_FORMAT, "kind": "text", "model": encoder.name, "weights": f"sha256 {weights}",
           "tokenizer": _digest(sorted(encoder.tokenizer.get_vocab().items())), "max_length": encoder.max_length,
           "captions_sha256": _digest(list(captions)), "n": len(captions), "compute_dtype": "float32",
           "dtype": "float16"}
    path = cache_file(key, cache_dir)
    tidy_cache(cache_dir)
    hit = load_cache(path, key, _check_text(len(captions), encoder.dim))
    if hit is not None:
        return hit["tokens"], hit["offsets"], hit["pooled"]
    tokens, offsets, pooled = extract_text_features(list(captions), encoder, device="cpu", amp=False,
                                                    progress=progress)
    save_cache(path, {"tokens": tokens, "offsets": offsets, "pooled": pooled}, key)
    return tokens, offsets, pooled


def wordpiece_ids(captions: list[str], chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """N captions -> (N_tok, 1) float32 packed WordPiece ids (MiniLM's tokenization, exact in float32), (N + 1,)
    offsets: the "features" a model with a text tower reads (its `text_batch` pads them with id 0, [PAD])."""
    tokenizer, ids, lengths = load_tokenizer(MINILM), [], []
    for start in range(0, len(captions), chunk):
        batch_ids, mask = tokenize_captions(tokenizer, list(captions[start:start + chunk]))
        ids.append(batch_ids[mask.bool()])
        lengths.append(mask.sum(1))
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cat(lengths).cumsum(0)])
    return torch.cat(ids).float()[:, None], offsets


def encoder_features(text_features: str, feats: dict[str, FeatureSet], order: int = 0, subset=None
                     ) -> dict[str, FeatureSet]:
    """The course's splits (`load_course_features(order=order)`) with the text side of another encoder: 'minilm'
    as given; 'gru' the WordPiece ids a model with a tower reads (`wordpiece_ids`); 'random_minilm' the frozen
    random MiniLM's features (`cached_random_text_features`). Images, captions and splits are unchanged; each
    FeatureSet's `source` carries `train.text_mark(text_features)`. Built once per process."""
    if text_features == "minilm":
        return feats
    check_split(feats["train"], order)
    memo = (text_features, feats["train"].source)
    if memo not in _ENCODER_FEATURES:
        everything = feats["all"]
        captions = (subset if subset is not None else load_subset()).captions
        if not torch.equal(torch.tensor(captions.caption_id.to_numpy()), everything.caption_ids):
            raise ValueError("these features are not the subset's captions in its order; pass load_course_features()")
        text = captions.caption.tolist()
        if text_features == "gru":
            tokens, offsets = wordpiece_ids(text)
            pooled = torch.zeros(len(text), 1)               # a tower model pools its own features
        elif text_features == "random_minilm":
            tokens, offsets, pooled = cached_random_text_features(text)
        else:
            raise ValueError(f"unknown text_features {text_features!r}; choose 'minilm', 'gru' or 'random_minilm'")
        if not torch.equal(offsets, everything.offsets):
            raise ValueError(f"{text_features}'s captions tokenize to other lengths than the course's features: "
                             "both must use MiniLM's tokenizer and TEXT_MAX_LENGTH")
        other = replace(everything, tokens=tokens, offsets=offsets, text_pooled=pooled,
                        source=everything.source + text_mark(text_features))
        _ENCODER_FEATURES[memo] = course_splits(
            other, {s: feats[s].image_ids.tolist() for s in ("train", "val", "test")}, order)
    return _ENCODER_FEATURES[memo]
