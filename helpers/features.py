"""The features the models read: `FeatureSet` (one split's image and text features, and its batches), a
synthetic one for tests, and two ways notebook 08 changes them (`subsample`, `logits_features`).

How the course's are extracted fast is `helpers.fast.extraction`; how they are kept on disk, and loaded
as the course's splits, is `helpers.pipeline.feature_cache`."""
from __future__ import annotations

from dataclasses import dataclass

import torch


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


SYNTHETIC_SHAPE = {"image_dim": 32, "text_dim": 24, "regions": 9}   # small enough for a CPU test


def synthetic_split(n_images: int, val_fraction: float = 0.25, seed: int = 0,
                    **shape) -> tuple[FeatureSet, FeatureSet]:
    """A synthetic FeatureSet of `n_images` split into train and val images (the last `val_fraction`)."""
    fs = synthetic_featureset(n_images=n_images, seed=seed, **{**SYNTHETIC_SHAPE, **shape})
    n_val = max(1, round(val_fraction * n_images))
    if n_val >= n_images:
        raise ValueError(f"n_images={n_images} leaves no training images; use at least 2")
    return fs.select_images(torch.arange(n_images - n_val)), fs.select_images(torch.arange(n_images - n_val, n_images))


def subsample(fs: FeatureSet, fraction: float, seed: int = 0) -> FeatureSet:
    """The first `fraction` of the images in one fixed random order, with all their captions: smaller
    fractions are subsets of larger ones, so a data-scale curve adds data and changes nothing else."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    order = torch.randperm(fs.n_images, generator=torch.Generator().manual_seed(seed))
    return fs.select_images(order[:max(1, round(fraction * fs.n_images))].sort().values)


def logits_features(fs: FeatureSet, classifier: torch.nn.Module) -> FeatureSet:
    """The blog's image "features": each image's pooled vector through the backbone's ImageNet classifier
    -> a FeatureSet whose regions are (N_img, 1, 1000) logits (one region per image); text unchanged."""
    with torch.inference_mode():
        logits = classifier(fs.pooled.float()).to(fs.regions.dtype)
    return FeatureSet(fs.image_ids, logits[:, None].clone(), logits.clone(), fs.caption_ids, fs.caption_image,
                      fs.tokens, fs.offsets, fs.text_pooled, f"{fs.source}|imagenet-logits")
