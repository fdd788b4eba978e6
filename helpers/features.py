"""The features the models read: `FeatureSet` (one split's cached image and text features, and its
batches) and `load_course_features` (the course's splits, extracted once and cached).

How they are extracted fast is `extraction`; how they are kept on disk is `feature_cache`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .feature_cache import cached_image_features, cached_text_features, fingerprint


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
