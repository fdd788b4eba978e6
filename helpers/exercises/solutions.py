"""The reference solutions of the coded exercises (`helpers.exercises`), one function per exercise.

These are the lines between `### BEGIN SOLUTION` and `### END SOLUTION` in the instructor notebooks,
with the same name, signature and docstring (a test keeps the two identical); `exercises.<name>.solution()`
prints them. The checks do not trust these: they compare answers with the course's own functions
(`models.masked_mean`, `metrics.ranks`, `losses.info_nce`, ...) wherever the course has one.
"""
from __future__ import annotations

import math
import re

import numpy as np
import torch
import torch.nn.functional as F

from .. import encoders


# ------------------------------------------------------------------ 01 · COCO and preprocessing

def mentions(caption, word):
    """str, str -> True when `word` appears in `caption` as a whole word, ignoring case."""
    return re.search(rf"\b{re.escape(word)}\b", caption.lower()) is not None


def normalise(images):
    """(B, 3, H, W) images in [0, 1] -> (B, 3, H, W), each channel minus its ImageNet mean, over its std."""
    mean = torch.tensor(encoders.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(encoders.IMAGENET_STD).view(3, 1, 1)
    return (images - mean) / std


def split_by_image(captions, n_test, seed):
    """Captions (image_id, caption) -> (train, test) DataFrames: n_test random images, all their captions in test."""
    rng = np.random.default_rng(seed)
    test_images = rng.choice(captions.image_id.unique(), size=n_test, replace=False)
    in_test = captions.image_id.isin(test_images)
    return captions[~in_test], captions[in_test]


# ------------------------------------------------------------------ 02 · image features

def regions_from_map(fmap):
    """(B, C, h, w) feature map -> (B, h*w, C) regions (row by row), (B, C) pooled (their mean)."""
    regions = fmap.flatten(2).transpose(1, 2)
    return regions, regions.mean(1)


def nearest_neighbours(vectors, k):
    """(N, D) vectors -> (N, k) long: each row's k most cosine-similar other rows, most similar first."""
    unit = F.normalize(vectors, dim=-1)
    sim = unit @ unit.t()
    sim.fill_diagonal_(float("-inf"))
    return sim.topk(k, dim=1).indices


# ------------------------------------------------------------------ 03 · text features

def pad_packed(tokens, offsets, rows):
    """(N_tok, D) packed tokens, (N_cap + 1,) offsets, (B,) caption rows -> (B, T, D) padded with zeros, (B, T) bool mask."""
    lengths = offsets[rows + 1] - offsets[rows]                            # (B,)
    steps = torch.arange(int(lengths.max()))                               # (T,)
    mask = steps[None, :] < lengths[:, None]                               # (B, T)
    index = (offsets[rows][:, None] + steps[None, :]).clamp(max=len(tokens) - 1)
    return tokens[index] * mask[..., None], mask


def masked_mean(tokens, mask):
    """(B, T, D) tokens, (B, T) bool mask -> (B, D): the mean of each caption's real tokens."""
    m = mask.unsqueeze(-1).float()
    return (tokens * m).sum(1) / m.sum(1)


# ------------------------------------------------------------------ 04 · decoupled attention

def region_attention(q, k, region_mask):
    """(B, T, d) queries, (B, R, d) keys, (B, R) bool mask -> (B, T, R) weights: softmax over regions of q·k/√d."""
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])              # (B, T, R)
    logits = logits.masked_fill(~region_mask[:, None, :], float("-inf"))
    return logits.softmax(dim=-1)


# ------------------------------------------------------------------ 05 · joint training

def info_nce(scores, logit_scale):
    """(B, B) scores (row i: image i, column j: caption j), scalar log-temperature -> symmetric InfoNCE loss."""
    logits = scores * logit_scale.exp()
    target = torch.arange(len(scores))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def should_stop(rsums, patience):
    """Validation rSum of epochs 1..n, patience (0 = off) -> True when training should stop after epoch n."""
    best_epoch = rsums.index(max(rsums)) + 1          # the first epoch that reached the best rSum
    return patience > 0 and len(rsums) - best_epoch >= patience


# ------------------------------------------------------------------ 06 · evaluation

def recall_at_k(scores, caption_image, k):
    """(N_img, N_cap) scores, (N_cap,) caption images, K -> (i2t R@K, t2i R@K) in percent, ties against the model."""
    n_img, n_cap = scores.shape
    own = caption_image[None, :] == torch.arange(n_img)[:, None]           # (N_img, N_cap): caption j is image i's
    best_own = scores.masked_fill(~own, float("-inf")).amax(1, keepdim=True)
    i2t_rank = ((scores >= best_own) & ~own).sum(1)                        # wrong captions scored at least as high
    correct = scores[caption_image, torch.arange(n_cap)]                   # (N_cap,) each caption with its image
    t2i_rank = ((scores >= correct) & ~own).sum(0)                         # wrong images scored at least as high
    return 100 * (i2t_rank < k).float().mean().item(), 100 * (t2i_rank < k).float().mean().item()


def bootstrap_interval(hits, caption_image, n_boot=1000, seed=0):
    """(N_cap,) 0/1 hits, (N_cap,) caption images -> 95% interval (percent) of the hit rate, images resampled."""
    rng = np.random.default_rng(seed)
    n_img = caption_image.max() + 1
    captions_of = [np.flatnonzero(caption_image == i) for i in range(n_img)]
    rates = []
    for _ in range(n_boot):
        drawn = rng.integers(0, n_img, n_img)                              # images, with replacement
        rows = np.concatenate([captions_of[i] for i in drawn])             # each with all its captions
        rates.append(100 * hits[rows].mean())
    lo, hi = np.percentile(rates, [2.5, 97.5])
    return float(lo), float(hi)


# ------------------------------------------------------------------ 07 · what the features keep

def peak_centres(weights, width, height):
    """(T, R) attention of T words over a square grid of R regions (row-major), the image's width and height in
    pixels -> (T, 2) x, y in pixels of the centre of each word's most attended cell."""
    side = math.isqrt(weights.shape[-1])
    peak = weights.argmax(-1)                                # (T,) cell index, row-major: row * side + col
    row, col = peak // side, peak % side
    return torch.stack([(col + 0.5) / side * width, (row + 0.5) / side * height], -1)


# ------------------------------------------------------------------ 08 · what matters

def pointwise_loss(scores, logit_scale):
    """(B, B) scores, scalar log-temperature -> logistic loss on each matched pair and on one mismatched pair per
    image (image i with caption i + 1), each judged alone."""
    z = scores * logit_scale.exp()
    positive, negative = z.diag(), z.roll(-1, dims=1).diag()
    return (F.softplus(-positive) + F.softplus(negative)).mean()


def subsample(fs, fraction, seed=0):
    """FeatureSet, fraction in (0, 1] -> the first round(fraction * N_img) images of one seeded order, with all
    their captions (so smaller fractions are subsets of larger ones)."""
    order = torch.randperm(fs.n_images, generator=torch.Generator().manual_seed(seed))
    keep = order[:max(1, round(fraction * fs.n_images))]
    return fs.select_images(keep.sort().values)


def interaction_terms(contrast, encoder, base="minilm"):
    """(A, B) models, an encoder -> [(weight, (encoder, model)), ...]: the terms of
    (A - B on `encoder`) - (A - B on `base`), the change of the contrast when the encoder changes."""
    a, b = contrast
    return [(1, (encoder, a)), (-1, (encoder, b)), (-1, (base, a)), (1, (base, b))]
