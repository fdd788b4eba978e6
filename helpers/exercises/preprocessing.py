"""The exercises of notebook 01 · COCO and preprocessing: mentions, normalise, split_by_image."""
from __future__ import annotations

import random
import re

import numpy as np
import pandas as pd
import torch

from .. import data, encoders
from . import solutions
from .core import NOT_WRITTEN, Mistake, NotAttempted, _call, _compare, _register, _tensor


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


def _answers(fn, cases: list[tuple[str, str]]) -> list[bool]:
    """The learner's answer for each (caption, word) as a bool; a re.Match, None or another type is named as such."""
    if not callable(fn):
        raise Mistake(f"expected your function, got {type(fn).__name__}: pass the function itself, without calling it")
    outs = []
    for caption, word in cases:
        try:
            outs.append(fn(caption, word))
        except NotImplementedError:
            raise NotAttempted(NOT_WRITTEN) from None
        except Exception as err:                                 # the learner's bug, reported as a message
            raise Mistake(f"your function raised {type(err).__name__}: {err}") from None
    for (caption, word), out in zip(cases, outs):
        if isinstance(out, re.Match):
            raise Mistake(f"your function returned a re.Match object for {caption!r}, not True or False: "
                          "`re.search` returns a Match or None; return `re.search(...) is not None`")
    for (caption, word), out in zip(cases, outs):
        if out is None:
            raise Mistake(f"your function returned None for {caption!r}, which does not name {word!r}: return "
                          "False there, not nothing (a `return` missing after the `if`?)")
    for (caption, word), out in zip(cases, outs):
        if not isinstance(out, (bool, np.bool_)):
            raise Mistake(f"return True or False; your function returned {type(out).__name__} {out!r} for "
                          f"{caption!r}")
    return [bool(out) for out in outs]


def _check_mentions(fn) -> str:
    cases = _mention_cases()
    frame = pd.DataFrame({"image_id": range(len(cases)), "caption": [c for c, _ in cases]})
    mined = data.mine_labels(frame)                       # the course's rule: whole words, any case
    wrong = [(caption, word, got) for i, ((caption, word), got) in enumerate(zip(cases, _answers(fn, cases)))
             if got != bool(mined.loc[i, word])]
    if not wrong:
        return "whole words only, in any case, as `data.mine_labels` matches them (it also takes plurals and synonyms)."
    traps = [(caption, word, t) for caption, word, got in wrong if got
             for t in _TRAPS[word] if re.search(rf"\b{t}\b", caption.lower())]
    inside = [x for x in traps if not x[2].startswith(x[1]) and not x[2].endswith(x[1])]
    for caption, word, trap in inside or traps:
        if not inside and all(t.startswith(w) for _, w, t in traps):
            raise Mistake(f"'{word}' counted at the start of '{trap}' in {caption!r}: \\b before the word alone is "
                          f"not enough; put \\b after it too (rf\"\\b{{word}}\\b\")")
        if not inside and all(t.endswith(w) for _, w, t in traps):
            raise Mistake(f"'{word}' counted at the end of '{trap}' in {caption!r}: \\b after the word alone is "
                          f"not enough; put \\b before it too (rf\"\\b{{word}}\\b\")")
        raise Mistake(f"substring match: '{word}' counted inside '{trap}' in {caption!r}; "
                      f"match whole words only (a regular expression with \\b on both sides)")
    for caption, word, got in wrong:
        if not got and re.search(rf"\b{word}\b", caption) is None:
            raise Mistake(f"case: {caption!r} names '{word}' with a capital letter; lower-case the caption first")
    for caption, word, got in wrong:
        if not got and re.search(rf"\b{word}[^\w\s]", caption.lower()):
            raise Mistake(f"punctuation: '{word}' followed by punctuation in {caption!r} was missed; "
                          "splitting on spaces keeps the full stop, word boundaries (\\b) do not")
    caption, word, got = wrong[0]
    raise Mistake(f"mentions({caption!r}, {word!r}) returned {got}; the course's rule (data.mine_labels) says {not got}")


mentions = _register(
    "mentions", "01", "code", "does a caption name a word, as a whole word?", _check_mentions,
    ["A whole word: `word in caption` finds 'cat' inside 'indicate', and `caption.split()` misses 'cat.' before a "
     "full stop. Which tool matches a word only between word boundaries, in any case?",
     "Lower-case the caption, then use a regular expression with \\b on both sides of the word; return a bool.",
     "return re.search(rf\"\\b{word}\\b\", caption.lower()) is not None  (re.search alone returns a Match or None)"],
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
        ], "the normalised batch")
    return "each channel minus its ImageNet mean, over its std, as `encoders.blog_transform` normalises."


normalise = _register(
    "normalise", "01", "code", "ImageNet normalisation, channel by channel", _check_normalise,
    ["Channel c of every pixel becomes (x - mean[c]) / std[c], with ImageNet's mean and std "
     "(encoders.IMAGENET_MEAN, encoders.IMAGENET_STD), not this batch's.",
     "Broadcasting lines shapes up from the last axis: a (3,) tensor meets W, not the channels. Give the mean "
     "and std the shape (3, 1, 1).",
     "mean = torch.tensor(encoders.IMAGENET_MEAN).view(3, 1, 1), the same for std; return (images - mean) / std"],
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
    captions = _caption_frame()
    n_images = captions.image_id.nunique()

    def split(n_test, seed):
        out = _call(fn, captions.copy(), n_test, seed)
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(x, pd.DataFrame) for x in out)):
            raise Mistake(f"expected (train, test), two DataFrames; got {type(out).__name__}")
        if not all({"image_id", "caption"} <= set(x.columns) for x in out):
            raise Mistake("train and test must keep the columns image_id and caption; select rows, not columns")
        return out

    for n_test in (10, 33, n_images):                     # the last: every image in test, so repeats cannot hide
        train, test = split(n_test, 0)
        rows = sorted([*train.caption, *test.caption])
        if rows != sorted(captions.caption):
            repeated = len(rows) > len(set(rows))
            raise Mistake(f"captions lost or duplicated: train and test hold {len(rows)} captions, the input "
                          f"{len(captions)}" + ("; some appear twice" if repeated else "") +
                          "; every caption must land on exactly one side")
        both = sorted(set(train.image_id) & set(test.image_id))
        if both:
            i = both[0]
            raise Mistake(f"captions resampled apart from their images: {len(both)} images have captions on both "
                          f"sides (image {i}: {int((train.image_id == i).sum())} in train, "
                          f"{int((test.image_id == i).sum())} in test); a test caption would have near-copies in "
                          "training. Draw images, then take all their captions")
        got = test.image_id.nunique()
        if got == n_test:
            continue
        if len(test) == n_test:
            raise Mistake(f"test holds {got} images; asked for n_test = {n_test} images (n_test counted captions, "
                          "not images)")
        if got == n_images - n_test and train.image_id.nunique() == n_test:
            raise Mistake(f"train and test swapped: the second DataFrame holds {got} images, the first {n_test}; "
                          "return (train, test)")
        if got in (n_test // 5, n_test // 6, round(n_test / 5), round(n_test / 6)):
            raise Mistake(f"test holds {got} images; asked for n_test = {n_test} images (n_test counted captions, "
                          "not images): do not divide it by the captions per image")
        if got < n_test:
            raise Mistake(f"test holds {got} images; asked for n_test = {n_test}: the draw repeated some images "
                          "(sampling with replacement); draw with replace=False")
        raise Mistake(f"test holds {got} images; asked for n_test = {n_test} images")
    test = split(10, 0)[1]
    if set(split(10, 0)[1].image_id) != set(test.image_id):
        raise Mistake("not seeded: two calls with seed 0 gave different splits; draw with np.random.default_rng(seed)")
    if set(split(10, 1)[1].image_id) == set(test.image_id):
        raise Mistake("the seed is ignored: seeds 0 and 1 gave the same test images")
    return "every image's captions on one side, n_test test images, the same split for the same seed."


split_by_image = _register(
    "split_by_image", "01", "code", "an image-level split: all captions of an image on one side", _check_split_by_image,
    ["Draw images, not captions: every caption of a test image goes to test, and n_test counts images.",
     "Seed a generator (rng = np.random.default_rng(seed)) and draw n_test distinct ids from "
     "captions.image_id.unique() (replace=False), then split the rows with captions.image_id.isin(...).",
     "test_images = rng.choice(captions.image_id.unique(), size=n_test, replace=False); "
     "in_test = captions.image_id.isin(test_images); return captions[~in_test], captions[in_test]"],
    solutions.split_by_image)
