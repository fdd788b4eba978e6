"""Cached image and text features for the whole subset, and the batches the models read."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .config import PATHS, get_device


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
        T = int(lengths.max()) if pad_to is None else pad_to
        out = torch.zeros(len(rows), T, self.tokens.shape[1])
        mask = torch.arange(T)[None, :] < lengths[:, None]
        for i, r in enumerate(rows.tolist()):
            seg = self.tokens[self.offsets[r] : self.offsets[r + 1]]
            out[i, : len(seg)] = seg.float()
        return out, mask, self.text_pooled[rows].float()

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
# The seed extracts one input at a time. The course's pipeline batches, decodes JPEGs in DataLoader
# worker processes while the model runs, skips autograd (inference_mode), sorts captions by length
# so a batch carries little padding, and stores float16. `python -m helpers.bench extract` times
# both on the same inputs.

CACHE_FORMAT = 1    # bump when the layout of the cache files changes: every old file becomes stale


class ImageDataset(Dataset):
    """Item i = `transform(subset.load_image(image_ids[i]))`, decoded in whichever process asks."""

    def __init__(self, subset, image_ids: list[int], transform):
        self.subset, self.image_ids, self.transform = subset, list(image_ids), transform

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.subset.load_image(self.image_ids[i]))


def default_num_workers() -> int:
    """DataLoader workers: one per spare core, at least 1 so decoding overlaps the model (measured by the bench)."""
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def _amp_context(device: torch.device, amp: bool | None):
    """float16 autocast on CUDA (by default); on CPU only when asked (bfloat16), as it loses precision."""
    use = (device.type == "cuda") if amp is None else amp
    if not use:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def extract_image_features(subset, image_ids: list[int], encoder, transform, batch_size: int = 64,
                           num_workers: int | None = None, device: str = "auto", channels_last: bool | None = None,
                           amp: bool | None = None, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """N image ids -> (N, R, C) float16 regions, (N, C) float16 pooled, in the order of `image_ids`.

    channels_last and amp default to on for CUDA only (on the course's 2-core CPU neither helped; see
    `helpers.bench`).
    """
    dev = get_device(device)
    cuda = dev.type == "cuda"
    channels_last = cuda if channels_last is None else channels_last
    num_workers = default_num_workers() if num_workers is None else num_workers
    loader = DataLoader(ImageDataset(subset, image_ids, transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=cuda, persistent_workers=False,
                        prefetch_factor=4 if num_workers else None)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    encoder = encoder.eval().to(dev, memory_format=fmt)
    regions, pooled = [], []
    with torch.inference_mode(), _amp_context(dev, amp):
        for x in tqdm(loader, desc=f"images ({getattr(encoder, 'name', 'encoder')})", unit="batch",
                      disable=not progress, leave=False):
            r, p = encoder(x.to(dev, non_blocking=cuda).contiguous(memory_format=fmt))
            regions.append(r.to("cpu", torch.float16))
            pooled.append(p.to("cpu", torch.float16))
    if not regions:
        return torch.zeros(0, 0, 0, dtype=torch.float16), torch.zeros(0, 0, dtype=torch.float16)
    return torch.cat(regions), torch.cat(pooled)


def pack(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) padded tokens, (B, T) bool mask -> (N_tok, D) valid tokens in caption order, (B + 1,) offsets."""
    lengths = mask.sum(1)
    return tokens[mask], torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])


def extract_text_features(captions: list[str], encoder, batch_size: int = 256, device: str = "auto",
                          amp: bool | None = None, progress: bool = True
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """N captions -> (N_tok, D) float16 packed tokens, (N + 1,) offsets, (N, D) float16 mean of valid tokens.

    Caption k's tokens ([CLS] ... [SEP]) are rows offsets[k]:offsets[k+1]. Batches are formed in
    order of token count, so each is padded only to its own longest caption; results come back in
    the original order.
    """
    dev = get_device(device)
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
            tok, mask = tok.float(), mask.to(tok.device)
            pooled[rows] = (tok.sum(1) / mask.sum(1, keepdim=True)).to("cpu", torch.float16)
            packed_sorted.append(tok[mask].to("cpu", torch.float16))
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
