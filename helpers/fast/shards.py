"""Speed code: features too big for memory, kept as shards on disk and read row by row.

A split's features are W shards per modality, `<split>-images-<r>-of-<W>.safetensors` (regions, pooled,
image_ids) and `<split>-captions-<r>-of-<W>.safetensors` (tokens packed as in `features.FeatureSet`,
offsets, pooled, caption_ids, caption_image), all features float16, with `<split>-index.json` giving
their order, counts and sha256s. Shard r holds the contiguous rows `shard_rows(n, r, W)`.

`open_split` maps the shards into memory without reading them: `ShardedFeatures` answers what
`train.train` asks of a FeatureSet, and a batch reads only its own rows (float16 -> float32). Scoring a
whole split needs a FeatureSet: `ShardedFeatures.load()` reads one into memory (a 5K-image split is
about 0.6 GB of regions). Writing shards is `helpers.pipeline.shards`.
"""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..atomic import file_digest
from ..features import FeatureSet

INDEX_FORMAT = 1
KINDS = ("images", "captions")
_DTYPES = {"F16": np.float16, "F32": np.float32, "I64": np.int64}


def shard_rows(n: int, rank: int, world: int) -> range:
    """Rows of shard `rank` of `world` over n rows: contiguous, sizes differ by at most one."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world}); world must be >= 1 and rank below it")
    return range(n * rank // world, n * (rank + 1) // world)


def shard_name(split: str, kind: str, rank: int, world: int) -> str:
    """'train', 'images', 0, 4 -> 'train-images-0-of-4.safetensors'."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return f"{split}-{kind}-{rank}-of-{world}.safetensors"


def index_path(folder: str | Path, split: str) -> Path:
    return Path(folder) / f"{split}-index.json"


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    return file_digest(path, "sha256")


def mapped_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file -> {name: tensor} memory-mapped copy-on-write: nothing is read until indexed."""
    path = Path(path)
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}; shards hold {sorted(_DTYPES)}")
        dtype, shape = _DTYPES[info["dtype"]], tuple(info["shape"])
        if 0 in shape:
            out[name] = torch.from_numpy(np.zeros(shape, dtype))
            continue
        array = np.memmap(path, dtype=dtype, mode="c", offset=8 + size + info["data_offsets"][0], shape=shape)
        out[name] = torch.from_numpy(array)
    return out


class Rows:
    """Tensors (n_i, ...) stacked along rows without a copy: `rows[index]` reads only the rows asked for."""

    def __init__(self, parts: list[torch.Tensor]):
        self.parts = parts
        sizes = torch.tensor([len(p) for p in parts], dtype=torch.long)
        self.starts = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
        self.shape = torch.Size((int(self.starts[-1]), *parts[0].shape[1:]))
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        """Row indices of any shape S -> (*S, *row shape), in this tensor's dtype."""
        flat = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        part = torch.searchsorted(self.starts, flat, right=True) - 1
        out = torch.empty(len(flat), *self.shape[1:], dtype=self.dtype)
        for p in part.unique().tolist():
            mine = part == p
            out[mine] = self.parts[p][flat[mine] - self.starts[p]]
        return out.reshape(*index.shape, *self.shape[1:])


@dataclass
class ShardedFeatures:
    """A split's features in shards: what `train.train` asks of a `FeatureSet`, reading only the rows asked for.

    regions, pooled, tokens and text_pooled stay on disk (memory-mapped); the ids and the caption
    layout (a few bytes per caption) are in memory. `image_rows` and `caption_rows` say which stored
    rows this set holds, so `select_images` (`features.subsample`) copies no features.
    """

    image_ids: torch.Tensor      # (N_img,) long
    regions: Rows                # (N_stored_img, R, C) float16, on disk
    pooled: Rows                 # (N_stored_img, C) float16, on disk
    image_rows: torch.Tensor     # (N_img,) long, stored row of each image
    caption_ids: torch.Tensor    # (N_cap,) long
    caption_image: torch.Tensor  # (N_cap,) long, row of each caption's image in `image_ids`
    tokens: Rows                 # (N_tok, D) float16 packed tokens of all stored captions, on disk
    starts: torch.Tensor         # (N_cap,) long, each caption's first row in `tokens`
    caption_lengths: torch.Tensor  # (N_cap,) long, tokens of each caption ([CLS] and [SEP] included)
    text_pooled: Rows            # (N_stored_cap, D) float16, on disk
    caption_rows: torch.Tensor   # (N_cap,) long, stored row of each caption
    source: str = ""             # fingerprint of the shards (from their sha256s)

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    @property
    def n_captions(self) -> int:
        return len(self.caption_ids)

    def lengths(self) -> torch.Tensor:
        """(N_cap,) number of tokens of each caption (with [CLS] and [SEP])."""
        return self.caption_lengths

    def image_batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) image rows -> (B, R, C) regions, (B, C) pooled, as float32."""
        stored = self.image_rows[rows]
        return self.regions[stored].float(), self.pooled[stored].float()

    def text_batch(self, rows: torch.Tensor, pad_to: int | None = None):
        """(B,) caption rows -> (B, T, D) tokens (zero at padding), (B, T) bool mask, (B, D) pooled, as float32.

        T is the longest caption in the batch, or `pad_to`; only the real tokens are read."""
        lengths = self.caption_lengths[rows]
        steps = torch.arange(int(lengths.max()) if pad_to is None else pad_to)
        mask = steps[None, :] < lengths[:, None]                                    # (B, T)
        tokens = torch.zeros(*mask.shape, self.tokens.shape[-1])
        tokens[mask] = self.tokens[(self.starts[rows][:, None] + steps[None, :])[mask]].float()
        return tokens, mask, self.text_pooled[self.caption_rows[rows]].float()

    def select_images(self, rows: torch.Tensor) -> "ShardedFeatures":
        """Keep the images at `rows` (and all their captions); captions re-indexed to the new rows. No copy."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        remap = torch.full((self.n_images,), -1, dtype=torch.long)
        remap[rows] = torch.arange(len(rows))
        keep = (remap[self.caption_image] >= 0).nonzero().squeeze(1)
        return replace(self, image_ids=self.image_ids[rows], image_rows=self.image_rows[rows],
                       caption_ids=self.caption_ids[keep], caption_image=remap[self.caption_image[keep]],
                       starts=self.starts[keep], caption_lengths=self.caption_lengths[keep],
                       caption_rows=self.caption_rows[keep])

    def load(self) -> FeatureSet:
        """This set read into memory as a `FeatureSet` (float16), for scoring a whole split."""
        lengths = self.caption_lengths
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        within = torch.arange(int(offsets[-1])) - torch.repeat_interleave(offsets[:-1], lengths)
        token_rows = torch.repeat_interleave(self.starts, lengths) + within
        return FeatureSet(self.image_ids.clone(), self.regions[self.image_rows], self.pooled[self.image_rows],
                          self.caption_ids.clone(), self.caption_image.clone(), self.tokens[token_rows], offsets,
                          self.text_pooled[self.caption_rows], self.source)


def read_index(folder: str | Path, split: str) -> dict:
    """The split's index, or FileNotFoundError saying how to make it."""
    path = index_path(folder, split)
    if not path.is_file():
        raise FileNotFoundError(f"no shard index {path}; extract the split first "
                                f"(`python -m helpers.pipeline.shards extract --split {split} --out {folder}`)")
    index = json.loads(path.read_text())
    if index.get("format") != INDEX_FORMAT or index.get("dtype") != "float16":
        raise ValueError(f"{path} is format {index.get('format')} / {index.get('dtype')}; this reader takes format "
                         f"{INDEX_FORMAT} float16: extract the split again")
    return index


def _open_shards(folder: Path, index: dict, kind: str) -> list[dict[str, torch.Tensor]]:
    """Every shard of `kind` named in the index, mapped; a missing or resized file is an error, read nothing."""
    out, expected = [], 0
    for entry in index[kind]["shards"]:
        path = folder / entry["file"]
        size = path.stat().st_size if path.is_file() else None
        if size != entry["bytes"]:
            raise RuntimeError(f"shard {path} is {'missing' if size is None else f'{size} bytes'} but the index says "
                               f"{entry['bytes']} bytes: it changed after the index was written; rerun the extraction "
                               "(it keeps the shards that verify)")
        if entry["rows"][0] != expected:
            raise RuntimeError(f"{index_path(folder, index['split'])}: {kind} shards are not contiguous at {path.name}")
        expected = entry["rows"][1]
        out.append(mapped_tensors(path))
    if expected != index[kind]["count"]:
        raise RuntimeError(f"{index_path(folder, index['split'])}: {kind} shards cover {expected} rows, "
                           f"the index counts {index[kind]['count']}")
    return out


def open_split(folder: str | Path, split: str) -> ShardedFeatures:
    """The shards of `split` in `folder`, memory-mapped (only headers, ids and offsets are read)."""
    folder = Path(folder)
    index = read_index(folder, split)
    images, captions = _open_shards(folder, index, "images"), _open_shards(folder, index, "captions")
    offsets = [c["offsets"] for c in captions]
    token_base = torch.tensor([0] + [int(o[-1]) for o in offsets]).cumsum(0)
    n_img, n_cap = index["images"]["count"], index["captions"]["count"]
    caption_image = torch.cat([c["caption_image"].clone() for c in captions])
    if len(caption_image) and not (0 <= int(caption_image.min()) and int(caption_image.max()) < n_img):
        raise RuntimeError(f"{index_path(folder, split)}: caption_image points outside the {n_img} images")
    digest = hashlib.sha256(" ".join(e["sha256"] for k in KINDS for e in index[k]["shards"]).encode())
    return ShardedFeatures(
        image_ids=torch.cat([i["image_ids"].clone() for i in images]),
        regions=Rows([i["regions"] for i in images]), pooled=Rows([i["pooled"] for i in images]),
        image_rows=torch.arange(n_img), caption_ids=torch.cat([c["caption_ids"].clone() for c in captions]),
        caption_image=caption_image, tokens=Rows([c["tokens"] for c in captions]),
        starts=torch.cat([o[:-1] + base for o, base in zip(offsets, token_base)]),
        caption_lengths=torch.cat([o[1:] - o[:-1] for o in offsets]),
        text_pooled=Rows([c["pooled"] for c in captions]), caption_rows=torch.arange(n_cap),
        source=digest.hexdigest()[:12])


def verify_split(folder: str | Path, split: str) -> list[str]:
    """Read every shard of `split` and compare its sha256 with the index -> the problems ([] when all match)."""
    folder, index = Path(folder), read_index(folder, split)
    problems = []
    for kind in KINDS:
        for entry in index[kind]["shards"]:
            path = folder / entry["file"]
            if not path.is_file():
                problems.append(f"{path} is missing")
            elif file_sha256(path) != entry["sha256"]:
                problems.append(f"{path} does not match its sha256 in the index: damaged or rewritten")
    return problems
