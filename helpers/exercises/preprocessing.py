"""The exercises of notebook 01 · COCO and preprocessing: mentions, normalise, split_by_image."""
from __future__ import annotations

import random
import re

import numpy as np
import pandas as pd
import torch

from .. import data, encoders
from . import solutions
from .core import Mistake, _call, _compare, _register, _tensor


# A few target words, each with longer words that contain it (and that name no category of their own).
_TRAPS = {"cat": ["catch", "indicate", "scatter", "category"], "car": ["card", "scar", "carpet", "cart"],
          "bus": ["business", "busy", "abuse", "minibus"], "bed": ["bedroom", "embedded", "flowerbed"],
          "cup": ["cupboard", "hiccup", "cupcake"]}
_FILLER = "a the old red small wooden near on with beside in front of sits stands next to".split()


def _mention_cases(seed: int = 0) -> list[tuple[str, str]]:
    """(caption, word) pairs: the word alone, inside a longer word, capitalised, before punctuation, or absent."""
    rng, cases = random.Random(seed), []
    for _ in range(120):
        word = rng.choice(sorted(_TRAPS))
        parts = rng.sample(_FILLER, 5)
        how = rng.choice(["word", "trap", "both", "none", "first", "punct"])
        if how in ("word", "both"):
            parts.insert(rng.randrange(1, 5), word)
        if how in ("trap", "both"):
            parts.insert(rng.randrange(1, 5), rng.choice(_TRAPS[word]))
        if how == "first":
            parts.insert(0, word)
        caption = " ".join(parts)
        if how == "punct":
            caption += f" {word}{rng.choice(['.', ',', ' .', chr(39) + 's'])}"
        cases.append((caption[0].upper() + caption[1:], word))
    return cases


def _check_mentions(fn) -> str:
    cases = _mention_cases()
    frame = pd.DataFrame({"image_id": range(len(cases)), "caption": [c for c, _ in cases]})
    mined = data.mine_labels(frame)                       # the course's rule: whole words, any case
    for i, (caption, word) in enumerate(cases):
        got, want = bool(_call(fn, caption, word)), bool(mined.loc[i, word])
        if got == want:
            continue
        lower = caption.lower()
        trap = next((t for t in _TRAPS[word] if t in lower), None)
        if got and trap:
            raise Mistake(f"substring match: '{word}' counted inside '{trap}' in {caption!r}; "
                          f"match whole words only (a regular expression with \\b on both sides)")
        if want and re.search(rf"\b{word}\b", caption) is None:
            raise Mistake(f"case: {caption!r} names '{word}' with a capital letter; lower-case the caption first")
        if want and re.search(rf"\b{word}[^\w\s]", lower):
            raise Mistake(f"punctuation: '{word}' followed by punctuation in {caption!r} was missed; "
                          "splitting on spaces keeps the full stop, word boundaries (\\b) do not")
        raise Mistake(f"mentions({caption!r}, {word!r}) returned {got}; the course's rule (data.mine_labels) says {want}")
    return "whole words only, in any case, as `data.mine_labels` matches them (it also takes plurals and synonyms)."


mentions = _register(
    "mentions", "01", "code", "does a caption name a word, as a whole word?", _check_mentions,
    "Lower-case the caption, then search for the word between word boundaries: re.search(rf\"\\b{word}\\b\", ...). "
    "`word in caption` finds 'cat' inside 'indicate'; `caption.split()` misses 'cat.'",
    solutions.mentions)


def _check_normalise(fn) -> str:
    reference = encoders.blog_transform().transforms[-1]          # the course's Normalize(IMAGENET_MEAN, IMAGENET_STD)
    mean, std = torch.tensor(encoders.IMAGENET_MEAN), torch.tensor(encoders.IMAGENET_STD)
    g = torch.Generator().manual_seed(1)
    for shape in [(4, 3, 6, 5), (2, 3, 4, 3)]:                     # the second has W = 3: a wrong axis runs silently
        images = torch.rand(*shape, generator=g)
        try:
            out = _call(fn, images.clone())
        except Mistake as m:
            if "must match the size" in str(m):
                raise Mistake("the mean and std did not broadcast over the channels: shape them (3, 1, 1) so they "
                              f"line up with (B, 3, H, W) ({m})") from None
            raise
        out = _tensor(out, shape, "images")
        by_channel = (0, 2, 3)
        _compare(out, reference(images), [
            ("mean and std applied along the last axis (width), not the channels: shape them (3, 1, 1)",
             (images - mean) / std if shape[-1] == 3 else None),
            ("normalised with this batch's own statistics, not ImageNet's mean and std",
             (images - images.mean(by_channel, keepdim=True)) / images.std(by_channel, keepdim=True)),
            ("normalised with this batch's own statistics, not ImageNet's mean and std",
             (images - images.mean()) / images.std()),
            ("the mean is subtracted but the division by the std is missing", images - mean.view(3, 1, 1)),
            ("mean and std swapped: subtract the mean, then divide by the std",
             (images - std.view(3, 1, 1)) / mean.view(3, 1, 1)),
            ("that undoes a normalisation (x * std + mean); normalising is (x - mean) / std",
             images * std.view(3, 1, 1) + mean.view(3, 1, 1)),
        ], "the normalised images")
    return "each channel minus its ImageNet mean, over its std, as `encoders.blog_transform` normalises."


normalise = _register(
    "normalise", "01", "code", "ImageNet normalisation, channel by channel", _check_normalise,
    "Make the mean and std tensors of shape (3, 1, 1) (`.view(3, 1, 1)`) so they broadcast over (B, 3, H, W): "
    "channel c of every pixel gets (x - mean[c]) / std[c].",
    solutions.normalise)


def _caption_frame(seed: int = 2) -> pd.DataFrame:
    """40 images with 5 or 6 captions each, rows shuffled, as `subset.captions` has them."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.arange(100, 10_000), 40, replace=False)
    counts = np.where(rng.random(40) < 0.2, 6, 5)
    image_id = np.repeat(ids, counts)
    frame = pd.DataFrame({"image_id": image_id, "caption": [f"caption {k} of image {i}" for k, i in enumerate(image_id)]})
    return frame.sample(frac=1, random_state=seed).reset_index(drop=True)


def _check_split_by_image(fn) -> str:
    captions, n_test = _caption_frame(), 10

    def split(seed):
        out = _call(fn, captions.copy(), n_test, seed)
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(x, pd.DataFrame) for x in out)):
            raise Mistake(f"expected (train, test), two DataFrames; got {type(out).__name__}")
        return out

    train, test = split(0)
    rows = sorted([*train.caption, *test.caption])
    if rows != sorted(captions.caption):
        raise Mistake(f"captions lost or duplicated: train and test hold {len(rows)} captions, the input "
                      f"{len(captions)}; every caption must land on exactly one side")
    both = sorted(set(train.image_id) & set(test.image_id))
    if both:
        i = both[0]
        raise Mistake(f"captions resampled apart from their images: {len(both)} images have captions on both sides "
                      f"(image {i}: {int((train.image_id == i).sum())} in train, {int((test.image_id == i).sum())} in "
                      "test); a test caption would have near-copies in training. Draw images, then take all their captions")
    n_images = test.image_id.nunique()
    if n_images != n_test:
        counted = " (n_test counted captions, not images)" if len(test) == n_test else ""
        raise Mistake(f"test holds {n_images} images; asked for n_test = {n_test} images{counted}")
    if set(split(0)[1].image_id) != set(test.image_id):
        raise Mistake("not seeded: two calls with seed 0 gave different splits; draw with np.random.default_rng(seed)")
    if set(split(1)[1].image_id) == set(test.image_id):
        raise Mistake("the seed is ignored: seeds 0 and 1 gave the same test images")
    return "every image's captions on one side, n_test test images, the same split for the same seed."


split_by_image = _register(
    "split_by_image", "01", "code", "an image-level split: all captions of an image on one side", _check_split_by_image,
    "Draw the test *images* (rng = np.random.default_rng(seed); rng.choice(captions.image_id.unique(), n_test, "
    "replace=False)), then split the rows with captions.image_id.isin(...).",
    solutions.split_by_image)
