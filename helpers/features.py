"""Cached image and text features for the whole subset, and the batches the models read."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .config import PATHS, course_device, get_device
from .atomic import atomic_path


@dataclass
class FeatureSet:
    """Frozen-encoder features of a set of images and their captions.

    Text features are *packed*: the valid tokens of all captions one after another, with
    `offsets` marking where each caption starts, so no padding is stored and none can leak.
    """

    image_ids: torch.Tensor      # (N_img,) long, COCO image ids
    regions: torch.Tensor        # (N_img, R, C) float16, last conv map as R = h*w regions
    pooled: torch.Tensor         # (N_img, C) float16, global-average-pooled regions
    caption_ids: torch.Tensor    # (N_cap,) long, COCO caption ids
    caption_image: torch.Tensor  # (N_cap,) long, row of each caption's image in `image_ids`
    tokens: torch.Tensor         # (N_tok, D) float16, packed token features
    offsets: torch.Tensor        # (N_cap + 1,) long, caption k is tokens[offsets[k]:offsets[k+1]]
    text_pooled: torch.Tensor    # (N_cap, D) float16, mean of each caption's token features
    source: str = ""             # fingerprint of the features it was cut from ("" when made up)

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    @property
    def n_captions(self) -> int:
        return len(self.caption_ids)

    def lengths(self) -> torch.Tensor:
        """(N_cap,) number of tokens of each caption (with [CLS] and [SEP])."""
        return self.offsets[1:] - self.offsets[:-1]

    def image_batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) image rows -> (B, R, C) regions, (B, C) pooled, as float32."""
        return self.regions[rows].float(), self.pooled[rows].float()

    def text_batch(self, rows: torch.Tensor, pad_to: int | None = None):
        """(B,) caption rows -> (B, T, D) tokens, (B, T) bool mask, (B, D) pooled, as float32.

        T is the longest caption in the batch, or `pad_to` when given (all ranks of a
        distributed step pad to the same T so their tensors can be gathered).
        """
        lengths = self.lengths()[rows]
        steps = torch.arange(int(lengths.max()) if pad_to is None else pad_to)
        mask = steps[None, :] < lengths[:, None]                                    # (B, T)
        index = (self.offsets[rows][:, None] + steps[None, :]).clamp(max=len(self.tokens) - 1)
        return self.tokens[index].float() * mask[..., None], mask, self.text_pooled[rows].float()

    def select_images(self, rows: torch.Tensor) -> "FeatureSet":
        """Keep the images at `rows` (and all their captions); captions re-indexed to the new rows."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        remap = torch.full((self.n_images,), -1, dtype=torch.long)
        remap[rows] = torch.arange(len(rows))
        keep = (remap[self.caption_image] >= 0).nonzero().squeeze(1)
        lengths = self.lengths()[keep]
        token_rows = torch.cat([torch.arange(self.offsets[k], self.offsets[k + 1]) for k in keep.tolist()]) \
            if len(keep) else torch.zeros(0, dtype=torch.long)
        return FeatureSet(
            image_ids=self.image_ids[rows],
            regions=self.regions[rows],
            pooled=self.pooled[rows],
            caption_ids=self.caption_ids[keep],
            caption_image=remap[self.caption_image[keep]],
            tokens=self.tokens[token_rows],
            offsets=torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
            text_pooled=self.text_pooled[keep],
            source=self.source,
        )


def synthetic_featureset(n_images: int = 32, captions_per_image: int = 5, regions: int = 49,
                         image_dim: int = 64, text_dim: int = 32, max_len: int = 12,
                         seed: int = 0) -> FeatureSet:
    """A small random FeatureSet with the real layout, for tests and shape demos.

    Captions share a per-image latent with their image so that a model can learn to match them.
    """
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n_images, 16, generator=g)
    w_img = torch.randn(16, image_dim, generator=g)
    w_txt = torch.randn(16, text_dim, generator=g)
    regions_t = (latent @ w_img)[:, None, :] + 0.5 * torch.randn(n_images, regions, image_dim, generator=g)
    caption_image = torch.arange(n_images).repeat_interleave(captions_per_image)
    lengths = torch.randint(4, max_len + 1, (len(caption_image),), generator=g)
    toks = [(latent[i] @ w_txt)[None, :] + 0.5 * torch.randn(int(n), text_dim, generator=g)
            for i, n in zip(caption_image.tolist(), lengths.tolist())]
    tokens = torch.cat(toks)
    return FeatureSet(
        image_ids=torch.arange(n_images) + 1000,
        regions=regions_t.half(),
        pooled=regions_t.mean(1).half(),
        caption_ids=torch.arange(len(caption_image)) + 50000,
        caption_image=caption_image,
        tokens=tokens.half(),
        offsets=torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
        text_pooled=torch.stack([t.mean(0) for t in toks]).half(),
    )


# ------------------------------------------------------------------------------ batched extraction
#
# The blog extracts one input at a time. The course's pipeline batches, runs the CNN on CPU as one
# fused oneDNN Graph (on CUDA: pinned memory, non-blocking copies, float16 autocast), skips autograd
# (inference_mode), sorts captions by length so a batch carries little padding, and stores float16.
# `python -m helpers.bench extract` times both on the same inputs.

CACHE_FORMAT = 1    # bump when the layout of the cache files changes: every old file becomes stale


class ImageDataset(Dataset):
    """Item i = `transform(subset.load_image(image_ids[i]))`, decoded in whichever process asks."""

    def __init__(self, subset, image_ids: list[int], transform):
        self.subset, self.image_ids, self.transform = subset, list(image_ids), transform

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.subset.load_image(self.image_ids[i]))


def default_num_workers(device: str | torch.device = "cpu") -> int:
    """DataLoader workers that decode JPEGs while the model runs.

    On CUDA the CPU is free: up to 8, one core left for the main process. On CPU the model already
    uses every core, and on 2 cores a decoding process competes with it (`python -m helpers.bench
    extract --sweep`, graph, batch 8: 0 workers 176 images/s, 1 worker 126, 2 workers 122), so none
    there and one above.
    """
    cores = os.cpu_count() or 1
    if torch.device(device).type == "cuda":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 2 else 1


def _amp_on(device: torch.device, amp: bool | None) -> bool:
    """Autocast by default on CUDA only: on CPU it means bfloat16, which loses precision."""
    return (device.type == "cuda") if amp is None else amp


def _amp_context(device: torch.device, amp: bool | None):
    """float16 autocast on CUDA (by default); on CPU only when asked (bfloat16)."""
    if not _amp_on(device, amp):
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def use_graph(device: torch.device, amp: bool | None, graph: bool | None = None) -> bool:
    """Whether image extraction runs the CNN as a fused oneDNN Graph: by default on CPU in float32.

    Not on CUDA (cuDNN already fuses what matters there) nor under autocast (the trace is float32).
    """
    possible = device.type == "cpu" and not _amp_on(device, amp) and torch.backends.mkldnn.is_available()
    return possible if graph is None else (graph and possible)


def default_image_batch(device: str | torch.device = "cpu") -> int:
    """Images per batch: 8 on CPU (4-16 are equally fast for MobileNetV2 on 2 cores, 32-64 slower,
    and a small batch traces faster), 128 on CUDA."""
    return 128 if torch.device(device).type == "cuda" else 8


def _pad_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """(n, ...) -> (size, ...) with zero rows appended, so a fixed-shape graph can run the last batch."""
    return x if len(x) == size else torch.cat([x, x.new_zeros(size - len(x), *x.shape[1:])])


def extract_image_features(subset, image_ids: list[int], encoder, transform, batch_size: int | None = None,
                           num_workers: int | None = None, device: str | None = None, channels_last: bool = True,
                           amp: bool | None = None, fuse_bn: bool = True, graph: bool | None = None,
                           progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """N image ids -> (N, R, C) float16 regions, (N, C) float16 pooled, in the order of `image_ids`.

    On CPU the CNN runs as a oneDNN Graph (`ImageEncoder.graph_copy`, built once per encoder and
    input shape; the last batch is zero-padded to the full size): 176 images/s on the 2-core CPU
    against 104 for the fastest eager setting (`python -m helpers.bench extract --sweep`). With
    `graph=False`, eager kernels with BatchNorm folded into the convs (`fuse_bn`) and channels-last
    memory, both exact up to rounding. bfloat16 autocast on CPU (`amp=True`) is faster on AMX CPUs but
    moves some regions far (cosine down to 0.75), so it is off unless asked; on CUDA float16 is on.
    """
    dev = get_device(device or course_device())
    cuda = dev.type == "cuda"
    batch_size = batch_size or default_image_batch(dev)
    num_workers = default_num_workers(dev) if num_workers is None else num_workers
    graph = use_graph(dev, amp, graph)
    loader = DataLoader(ImageDataset(subset, image_ids, transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=cuda, persistent_workers=False,
                        prefetch_factor=4 if num_workers else None)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if not graph:
        encoder = (encoder.inference_copy() if fuse_bn and hasattr(encoder, "inference_copy") else encoder).eval()
        encoder.to(dev, memory_format=fmt)
    regions, pooled = [], []
    with torch.inference_mode(), _amp_context(dev, amp):
        for x in tqdm(loader, desc=f"images ({getattr(encoder, 'name', 'encoder')})", unit="batch",
                      disable=not progress, leave=False):
            n = len(x)
            x = x.to(dev, non_blocking=cuda).contiguous(memory_format=fmt)
            if graph:
                x = _pad_batch(x, batch_size)
                r, p = _graph_of(encoder, x)(x)
            else:
                r, p = encoder(x)
            regions.append(r[:n].to("cpu", torch.float16))
            pooled.append(p[:n].to("cpu", torch.float16))
    if not regions:
        return torch.zeros(0, 0, 0, dtype=torch.float16), torch.zeros(0, 0, dtype=torch.float16)
    return torch.cat(regions), torch.cat(pooled)


def _graph_of(encoder, x: torch.Tensor):
    """The (frozen) encoder's oneDNN Graph copy for inputs shaped and laid out like `x`, built on first
    use and kept on the encoder, so repeated extractions (the bench, a notebook) pay the 2-3 s once.
    Where tracing fails (a torch without TorchScript, an encoder it cannot trace): a warning, then eager."""
    graphs = encoder.__dict__.setdefault("_graphs", {})
    key = (tuple(x.shape), x.is_contiguous(memory_format=torch.channels_last), x.dtype)
    if key not in graphs:
        try:
            graphs[key] = encoder.graph_copy(x)
        except Exception as e:  # noqa: BLE001 - any failure here only costs speed
            warnings.warn(f"could not build a oneDNN Graph of {getattr(encoder, 'name', 'the encoder')} "
                          f"({type(e).__name__}: {e}); extracting with eager kernels instead", stacklevel=3)
            graphs[key] = encoder
    return graphs[key]


def pack(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) padded tokens, (B, T) bool mask -> (N_tok, D) valid tokens in caption order, (B + 1,) offsets."""
    lengths = mask.sum(1)
    return tokens[mask], torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])


def extract_text_features(captions: list[str], encoder, batch_size: int = 128, device: str | None = None,
                          amp: bool | None = None, progress: bool = True
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """N captions -> (N_tok, D) float16 packed tokens, (N + 1,) offsets, (N, D) float16 mean of valid tokens.

    Caption k's tokens ([CLS] ... [SEP]) are rows offsets[k]:offsets[k+1]. Batches are formed in
    order of token count, so each is padded only to its own longest caption; results come back in
    the original order. On the 2-core CPU batches of 32-128 are fastest (512: 1.5x slower);
    bfloat16 autocast (`amp=True`) is ~1.7x faster on AMX CPUs at token cosine >= 0.9999, but off
    by default on CPU so features do not depend on the machine's instruction set.
    """
    dev = get_device(device or course_device())
    captions = list(captions)
    n = len(captions)
    lengths = torch.tensor([len(ids) for ids in encoder.tokenize(captions, padding=False)["input_ids"]],
                           dtype=torch.long)
    order = torch.argsort(lengths, stable=True)
    encoder = encoder.eval().to(dev)
    packed_sorted, pooled = [], torch.zeros(n, encoder.dim, dtype=torch.float16)
    with torch.inference_mode(), _amp_context(dev, amp):
        for start in tqdm(range(0, n, batch_size), desc=f"captions ({getattr(encoder, 'name', 'encoder')})",
                          unit="batch", disable=not progress, leave=False):
            rows = order[start:start + batch_size]
            batch = encoder.tokenize([captions[i] for i in rows.tolist()])
            tok, mask = encoder(batch["input_ids"].to(dev), batch["attention_mask"].to(dev))
            tok = tok.float()                                             # padded positions are zero
            pooled[rows] = (tok.sum(1) / mask.sum(1, keepdim=True)).to("cpu", torch.float16)
            packed_sorted.append(pack(tok, mask)[0].to("cpu", torch.float16))
    if n == 0:
        return torch.zeros(0, encoder.dim, dtype=torch.float16), torch.zeros(1, dtype=torch.long), pooled
    packed_sorted = torch.cat(packed_sorted)
    # Un-sort: caption k (original order) sits at sorted position pos[k], from start_sorted[pos[k]].
    sorted_lengths = lengths[order]
    start_sorted = torch.cat([torch.zeros(1, dtype=torch.long), sorted_lengths.cumsum(0)[:-1]])
    pos = torch.empty_like(order)
    pos[order] = torch.arange(n)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    within = torch.arange(int(offsets[-1])) - torch.repeat_interleave(offsets[:-1], lengths)
    index = torch.repeat_interleave(start_sorted[pos], lengths) + within
    return packed_sorted[index], offsets, pooled


# ------------------------------------------------------------------------------------ the cache
#
# One safetensors file per (modality, encoder, weights, preprocessing, inputs, precision). The file
# name carries a short hash of that key and the file's metadata the full key, so a changed setting
# never reads old features; a damaged or stale file is reported and rebuilt, never loaded.

def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _compute_dtype(device: torch.device, amp: bool | None) -> str:
    return "float32" if not _amp_on(device, amp) else ("autocast-float16" if device.type == "cuda" else "autocast-bfloat16")


def image_cache_key(choice, transform, image_ids: list[int], compute_dtype: str = "float32",
                    kernels: str = "eager") -> dict:
    """Everything the image features depend on: backbone, weights file (name, size, md5), transform, ids,
    dtypes, and the kernels ('onednn-graph' or 'eager': equal up to rounding, but not bit for bit)."""
    from .encoders import file_identity

    return {"format": CACHE_FORMAT, "kind": "image", "backbone": choice.name,
            "weights": file_identity(choice.weights_file), "transform": repr(transform),
            "ids_sha256": _digest([int(i) for i in image_ids]), "n": len(image_ids),
            "compute_dtype": compute_dtype, "kernels": kernels, "dtype": "float16"}


def text_cache_key(choice, captions: list[str], max_length: int, compute_dtype: str = "float32") -> dict:
    """Everything the text features depend on: model, weights and tokenizer files, max length, captions, dtypes."""
    from .encoders import file_identity

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
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={"key": json.dumps(key, sort_keys=True)})
    return path


def load_cache(path: Path, key: dict, check) -> dict[str, torch.Tensor] | None:
    """The tensors in `path` if it exists, reads, carries `key` and passes `check`; else None (with a warning
    when a file was there but unusable)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

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
    from .encoders import IMAGE_BACKBONES, blog_transform, load_image_encoder, resolve_image_backbone

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
    from .encoders import TEXT_MAX_LENGTH, load_text_encoder, resolve_text_model

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
    if subset is None:
        from .data import load_subset

        subset = load_subset()
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
