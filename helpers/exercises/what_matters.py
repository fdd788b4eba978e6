"""The exercises of notebook 08 · what matters: pointwise_loss, subsample, gap_with_data."""
from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from .. import features, losses
from ..features import FeatureSet, synthetic_featureset
from . import solutions
from .core import Mistake, _call, _check_loss, _choice, _register


def _check_pointwise_loss(fn) -> str:
    def mistakes(scores, scale):
        z = scores * scale.exp()
        pos, neg = z.diag(), z.roll(-1, dims=1).diag()
        off = ~torch.eye(6, dtype=torch.bool)
        sp = F.softplus
        return [("candidates compete: that is InfoNCE (a softmax over the batch); the pointwise loss judges each pair "
                 "alone with a logistic (softplus) loss", losses.info_nce(scores, scale)),
                ("every mismatched pair used as a negative: the course's loss takes one per image, caption i + 1 "
                 "(z.roll(-1, dims=1).diag())", sp(-pos).mean() + sp(z[off]).mean()),
                ("the negative is caption i − 1; the course's is caption i + 1: z.roll(-1, dims=1).diag()",
                 (sp(-pos) + sp(z.roll(1, dims=1).diag())).mean()),
                ("signs swapped: a matched pair costs softplus(−z) (high z is good), a mismatched one softplus(z)",
                 (sp(pos) + sp(-neg)).mean()),
                ("temperature ignored: multiply the scores by logit_scale.exp()",
                 (sp(-scores.diag()) + sp(scores.roll(-1, dims=1).diag())).mean())]

    _check_loss(fn, losses.pointwise, mistakes, seed=13)
    return "each matched pair and one mismatched pair per image judged alone, as `losses.pointwise`."


pointwise_loss = _register(
    "pointwise_loss", "08", "code", "the per-pair logistic loss that judges each pair alone", _check_pointwise_loss,
    "z = scores * logit_scale.exp(); positives z.diag(), negatives z.roll(-1, dims=1).diag() (image i with caption "
    "i + 1); loss = mean of softplus(−positive) + softplus(negative).",
    solutions.pointwise_loss)


def _check_subsample(fn) -> str:
    fs = synthetic_featureset(n_images=20, captions_per_image=3, regions=2, image_dim=4, text_dim=4, max_len=5, seed=14)
    captions_of = {int(fs.image_ids[i]): set(fs.caption_ids[fs.caption_image == i].tolist()) for i in range(fs.n_images)}

    def run(fraction, seed):
        out = _call(fn, fs, fraction, seed)
        if not isinstance(out, FeatureSet):
            raise Mistake(f"expected a FeatureSet (fs.select_images(rows) makes one), got {type(out).__name__}")
        images = [int(i) for i in out.image_ids]
        for i in images:
            kept = set(out.caption_ids[out.caption_image == images.index(i)].tolist())
            if kept != captions_of[i]:
                raise Mistake(f"captions resampled apart from their images: image {i} kept {len(kept)} of its "
                              f"{len(captions_of[i])} captions; keep images, each with all its captions "
                              "(fs.select_images)")
        if set(out.caption_ids.tolist()) - set().union(*(captions_of[i] for i in images)):
            raise Mistake("captions of images that were not kept: select images, and their captions follow")
        want = features.subsample(fs, fraction, seed).n_images
        if len(images) != want:
            counted = " (you counted captions, not images)" if len(images) == round(fraction * fs.n_captions) else ""
            raise Mistake(f"{len(images)} images for fraction {fraction}; expected round({fraction} × {fs.n_images}) "
                          f"= {want}{counted}")
        return set(images)

    quarter, half, whole = run(0.25, 0), run(0.5, 0), run(1.0, 0)
    if not quarter <= half <= whole:
        raise Mistake("not nested: the 25% subset is not inside the 50% one, so the curve would change the images as "
                      "well as their number; draw one order per seed and take its first images")
    if run(0.5, 0) != half:
        raise Mistake("not seeded: two calls with seed 0 gave different images; use torch.Generator().manual_seed(seed)")
    if run(0.5, 1) == half:
        raise Mistake("the seed is ignored: seeds 0 and 1 gave the same images")
    return "nested subsets of images with all their captions, as `features.subsample` draws them."


subsample = _register(
    "subsample", "08", "code", "nested training subsets that keep captions with their images", _check_subsample,
    "One random order of the images per seed (torch.randperm with a seeded torch.Generator); keep its first "
    "round(fraction × N) images, sorted, with fs.select_images: the same order for every fraction makes them nested.",
    solutions.subsample)


_GAP_CHOICES = {"a": "joint's lead over decoupled grows", "b": "it shrinks",
                "c": "no credible change"}


def _check_gap_with_data(answer, gaps: pd.DataFrame) -> str:
    """`gaps`: 08's gap table (`helpers.pipeline.ablations.gap_table`); its word for joint - decoupled
    ("widens", "narrows", "holds") comes from the 95% interval of the gap's change between the smallest
    and the largest training set."""
    word = gaps.set_index("gap").loc["joint - decoupled", "the gap"]
    right = "a" if word.startswith("widens") else "b" if word.startswith("narrows") else "c"
    why = {
        "a": "the change of joint − decoupled from the smallest to the largest training set has a 95% interval "
             "wholly on the side that makes the gap larger: the gap grew",
        "b": "the change of joint − decoupled from the smallest to the largest training set has a 95% interval "
             "wholly on the side that makes the gap smaller: the gap shrank",
        "c": "the 95% interval of the change of joint − decoupled from the smallest to the largest training set "
             "includes zero: more data did not credibly change the gap",
    }
    wrong = {letter: f"{why[right]}; so the answer is ({right})" for letter in _GAP_CHOICES if letter != right}
    return _choice(answer, right, {**wrong, right: why[right]})


gap_with_data = _register(
    "gap_with_data", "08", "predict", "what happens to the gap with 4× the data", _check_gap_with_data,
    "Look at the row `joint - decoupled` of the gap table: the change from the smallest to the largest training set "
    "and its 95% interval.",
    "Read it off the gap table's last column: (a) if the gap widens, (b) if it narrows, (c) if it holds.")
