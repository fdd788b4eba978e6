"""Exercises with automatic checks, Kaggle Learn's pattern: `exercises.<name>.check(answer)`, `.hint()`, `.solution()`.

Three kinds, placed in notebooks 01-07 where each idea is taught:
- "code": write the core lines of a function yourself. `check(your_function)` runs it on fresh random
  inputs (seeded, so every message is the same on every run) and compares it with the course's own
  reference (`models.masked_mean`, `metrics.ranks`, `losses.info_nce`, ...). When the answer is wrong, the
  message names the mistake ("padding counted in the mean", "ties counted in the model's favour", "wrong
  shape: expected (B, D), got ...") rather than only saying that something is.
- "predict": predict a number or pick a letter first, then run; `check(prediction)` explains the answer.
- "change": change one thing in a cell, rerun it, and say what happened; `check(letter)` explains why.

A wrong answer raises AssertionError carrying that message, so a broken solution in the instructor
notebooks fails nbval and the tests, and a learner's "Run all" stops at the first exercise left to do.
A right answer prints one fixed line that starts with "✓" (nbval compares it exactly). A check never
touches the global random state: the cells after an exercise draw the same numbers with it or without it.

The reference solutions, which `.solution()` prints, are in `helpers.exercise_solutions`.
"""
from __future__ import annotations

import inspect
import math
import random
import re
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import exercise_solutions

NOT_WRITTEN = "not written yet: replace `raise NotImplementedError()` with your code"
NOT_PREDICTED = "not written yet: put your prediction in place of `...` (`prediction = ...`)"


class Mistake(Exception):
    """What is wrong with an answer, in words; `Exercise.check` turns it into an AssertionError."""


class Exercise:
    """One exercise: `check(answer)` prints a "✓" line or raises AssertionError naming the mistake;
    `hint()` prints a nudge; `solution()` prints the reference solution (or the answer, explained)."""

    def __init__(self, name: str, notebook: str, kind: str, title: str, checker: Callable[..., str],
                 hint: str, solution: Callable | str):
        if kind not in ("code", "predict", "change"):
            raise ValueError(f"kind must be 'code', 'predict' or 'change', got {kind!r}")
        self.name, self.notebook, self.kind, self.title = name, notebook, kind, title
        self._checker, self._hint, self._solution = checker, hint, solution

    def __repr__(self) -> str:
        return f"<exercise {self.name} ({self.notebook}, {self.kind}): {self.title}>"

    def check(self, answer, *context) -> None:
        """Print "✓ Correct: ..." or raise AssertionError with what is wrong. `context`: measured data the
        answer depends on (only `gap_with_data` takes some)."""
        __tracebackhide__ = True                     # pytest and IPython show the message, not this frame
        try:
            if answer is None or answer is Ellipsis:
                raise Mistake(NOT_WRITTEN if self.kind == "code" else NOT_PREDICTED)
            with torch.random.fork_rng(devices=[]):  # a check must not shift the notebook's random numbers
                message = self._checker(answer, *context)
        except Mistake as mistake:
            raise AssertionError(f"✗ {self.name}: {mistake}\n  (a hint: exercises.{self.name}.hint())") from None
        print(f"✓ Correct: {message}")

    def hint(self) -> None:
        print(f"Hint ({self.name}): {self._hint}")

    def solution(self) -> None:
        if callable(self._solution):
            print(inspect.getsource(self._solution).rstrip())
        else:
            print(f"Solution ({self.name}): {self._solution}")


EXERCISES: dict[str, Exercise] = {}


def _register(*args, **kwargs) -> Exercise:
    ex = Exercise(*args, **kwargs)
    EXERCISES[ex.name] = ex
    return ex


# ------------------------------------------------------------------ shared by the checks

def _call(fn, *args):
    """Run the learner's function; what goes wrong becomes a Mistake that says what happened."""
    if not callable(fn):
        raise Mistake(f"expected your function, got {type(fn).__name__}: pass the function itself, without calling it")
    try:
        out = fn(*args)
    except NotImplementedError:
        raise Mistake(NOT_WRITTEN) from None
    except Exception as err:                                     # the learner's bug, reported as a message
        raise Mistake(f"your function raised {type(err).__name__}: {err}") from None
    if out is None:
        raise Mistake("not written yet: your function returned None (is a `return` missing?)")
    return out


def _tensor(out, shape: tuple, what: str) -> torch.Tensor:
    """The learner's output as a float tensor of `shape`, or a Mistake naming the wrong type or shape."""
    if not isinstance(out, torch.Tensor):
        raise Mistake(f"expected {what} as a torch tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise Mistake(f"wrong shape: expected {what} {tuple(shape)}, got {tuple(out.shape)}")
    return out.detach().float()


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol, rtol=1e-4, equal_nan=True)


def _compare(out: torch.Tensor, expected: torch.Tensor, mistakes: list[tuple[str, torch.Tensor]], what: str) -> None:
    """Pass if `out` equals `expected`; else name the first typical mistake it equals, or say how far off it is."""
    if _close(out, expected):
        return
    for message, wrong in mistakes:
        if wrong is not None and _close(out, wrong):
            raise Mistake(message)
    if torch.isnan(out).any():
        raise Mistake(f"{what} contains NaN (a division by zero, or a softmax over only -inf?)")
    diff = (out - expected).abs().max().item()
    raise Mistake(f"{what} differs from the course's reference (largest difference {diff:.3g})")


def _number(answer, what: str) -> float:
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, (int, float, np.number)):
        raise Mistake(f"expected {what} as a number, got {type(answer).__name__} {answer!r}")
    return float(answer)


def _share(answer) -> float:
    share = _number(answer, "a share")
    if not 0 <= share <= 1:
        raise Mistake(f"give a share between 0 and 1 (0.25 for 25%), got {share:g}")
    return share


def _letter(answer, choices: str) -> str:
    letter = str(answer).strip().lower().strip("()")
    if letter not in choices:
        raise Mistake(f"answer with one of the letters {', '.join(choices)}; got {answer!r}")
    return letter


def _choice(answer, right: str, why: dict[str, str]) -> str:
    """Multiple choice: the right letter -> why[right]; another -> a Mistake with why[that letter]."""
    letter = _letter(answer, "".join(why))
    if letter != right:
        raise Mistake(f"not ({letter}): {why[letter]}")
    return f"({right}) {why[right]}"


# ================================================================== 01 · COCO and preprocessing

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
    from . import data

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
    exercise_solutions.mentions)


def _check_normalise(fn) -> str:
    from . import encoders

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
    exercise_solutions.normalise)


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
    exercise_solutions.split_by_image)


# ================================================================== 02 · image features

def _check_regions_from_map(fn) -> str:
    from torch import nn

    from . import encoders

    g = torch.Generator().manual_seed(3)
    for shape in [(2, 16, 7, 7), (1, 16, 3, 5)]:
        fmap = torch.randn(*shape, generator=g)
        b, c, h, w = shape
        encoder = encoders.ImageEncoder("feature map", nn.Identity(), nn.Linear(c, 1), ["-"])   # the course's forward
        regions, pooled = encoder(fmap)
        out = _call(fn, fmap.clone())
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise Mistake(f"expected two tensors, (regions, pooled); got {type(out).__name__}")
        if isinstance(out[0], torch.Tensor) and tuple(out[0].shape) == (b, c) and out[1].dim() == 3:
            raise Mistake("regions and pooled swapped: return (regions, pooled)")
        got_regions = _tensor(out[0], (b, h * w, c), "regions (B, h*w, C)")
        _compare(got_regions, regions, [
            ("reshape without permute: each 'region' mixes channels of several cells; move C last first "
             "(fmap.flatten(2).transpose(1, 2))", fmap.reshape(b, h * w, c)),
            ("regions in column-major order: number them row by row (region r is row r // w, column r % w)",
             fmap.transpose(2, 3).flatten(2).transpose(1, 2)),
        ], "regions")
        got_pooled = _tensor(out[1], (b, c), "pooled (B, C)")
        _compare(got_pooled, pooled, [
            ("pooled is the sum of the regions, not their mean", regions.sum(1)),
            ("pooled is the max over the regions, not their mean", regions.amax(1)),
        ], "pooled")
    return "regions row by row with channels last, pooled = their mean, as `encoders.ImageEncoder` does."


regions_from_map = _register(
    "regions_from_map", "02", "code", "regions and a pooled vector from a (B, C, h, w) map", _check_regions_from_map,
    "Flatten the grid (fmap.flatten(2) -> (B, C, h*w)), then put channels last with .transpose(1, 2); a plain "
    ".reshape(B, h*w, C) keeps the memory order and mixes cells. Pooled is the mean over the region axis.",
    exercise_solutions.regions_from_map)


def _check_n_regions(answer) -> str:
    n = _number(answer, "a number of regions")
    why = {7: "7 is the side of the grid (224 / 32); count the cells of the 7 × 7 grid",
           1280: "1280 is the number of channels, the length of each region's vector",
           2048: "2048 is ResNet-50's number of channels, the length of each region's vector",
           1000: "1000 is the number of ImageNet classes, what the blog's extractor returns",
           1568: "224 × 224 / 32 shrinks the area by 32; each *side* shrinks by 32"}
    if n != 49:
        raise Mistake(why.get(int(n), f"not {n:g}: each side shrinks from 224 to 224 / 32 = 7 cells") if n == int(n)
                      else f"not {n:g}: a count of grid cells is a whole number")
    return "224 / 32 = 7 cells a side, 7 × 7 = 49 regions, each a 1280-d vector (2048-d for ResNet-50)."


n_regions = _register(
    "n_regions", "02", "predict", "how many regions does a 224 × 224 image give?", _check_n_regions,
    "The backbone shrinks each side 32×: how many cells does the last feature map have?",
    "49: a 224 × 224 input gives a 7 × 7 map (224 / 32 = 7), so 49 regions of C = 1280 channels for MobileNetV2.")


def _check_nearest_neighbours(fn) -> str:
    g = torch.Generator().manual_seed(4)
    vectors = torch.randn(24, 8, generator=g) * torch.randn(24, 1, generator=g).mul(1.5).exp()   # norms 0.05x to 20x
    k = 3
    expected = exercise_solutions.nearest_neighbours(vectors.clone(), k)
    out = _call(fn, vectors.clone(), k)
    if not isinstance(out, torch.Tensor):
        raise Mistake(f"expected an (N, k) tensor of row indices, got {type(out).__name__}")
    if tuple(out.shape) != (24, k):
        raise Mistake(f"wrong shape: expected (N, k) = (24, {k}), got {tuple(out.shape)}")
    if out.is_floating_point():
        raise Mistake("expected row indices (.indices of topk), got the similarities (.values)")
    out = out.long()
    if (out == expected).all():
        return "the k most cosine-similar other rows, most similar first."
    if (out[:, 0] == torch.arange(24)).all():
        raise Mistake("the query is its own nearest neighbour (cosine 1 with itself): set the diagonal to -inf "
                      "before topk")
    unit = F.normalize(vectors, dim=-1)
    dot = vectors @ vectors.t()
    if (out == dot.fill_diagonal_(float("-inf")).topk(k).indices).all():
        raise Mistake("dot products, not cosines: normalise the vectors first (F.normalize), or vectors with a "
                      "large norm become everyone's neighbour")
    if (out == (unit @ unit.t()).fill_diagonal_(float("inf")).topk(k, largest=False).indices).all():
        raise Mistake("the least similar rows: topk takes the largest values by default")
    if (out.sort(1).values == expected.sort(1).values).all():
        raise Mistake("the right neighbours in the wrong order: most similar first")
    raise Mistake("not the k most cosine-similar other rows (the course's reference differs)")


nearest_neighbours = _register(
    "nearest_neighbours", "02", "code", "nearest neighbours by cosine, the query excluded", _check_nearest_neighbours,
    "Normalise the rows (F.normalize(v, dim=-1)), take all cosines with one product, put -inf on the diagonal "
    "(sim.fill_diagonal_), then .topk(k, dim=1).indices.",
    exercise_solutions.nearest_neighbours)


# ================================================================== 03 · text features

def _check_pad_packed(fn) -> str:
    from .features import synthetic_featureset

    fs = synthetic_featureset(n_images=6, captions_per_image=2, regions=2, image_dim=4, text_dim=6, max_len=9, seed=3)
    lengths = fs.lengths()
    shorter = (lengths < lengths.max()).nonzero().squeeze(1)      # so "the longest of all captions" is wrong here
    rows = shorter[torch.randperm(len(shorter), generator=torch.Generator().manual_seed(5))[:4]]
    tokens = fs.tokens.float()
    want_tokens, want_mask, _ = fs.text_batch(rows)               # the course's padding
    out = _call(fn, tokens.clone(), fs.offsets.clone(), rows.clone())
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise Mistake(f"expected two tensors, (padded tokens, mask); got {type(out).__name__}")
    got_tokens, mask = out
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise Mistake(f"the mask must be a bool tensor (True = real token), got "
                      f"{mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__}")
    b, t = want_mask.shape
    first_rows = fs.text_batch(torch.arange(b))[1]
    if mask.shape == first_rows.shape and torch.equal(mask, first_rows) and not torch.equal(mask, want_mask):
        raise Mistake("you padded captions 0..B-1, not the captions in `rows`")
    if tuple(mask.shape) == (b, int(lengths.max())):
        raise Mistake(f"wrong shape: T is the longest caption *of the batch* ({t}), not of all captions "
                      f"({int(lengths.max())})")
    if tuple(mask.shape) != (b, t):
        raise Mistake(f"wrong shape: expected the mask (B, T) = {(b, t)}, got {tuple(mask.shape)}")
    steps = torch.arange(t)
    if torch.equal(mask, steps[None] <= lengths[rows][:, None]):
        raise Mistake("the mask marks one position too many per caption (`<=` instead of `<`)")
    if not torch.equal(mask, want_mask):
        raise Mistake("the mask does not mark each caption's first `length` positions as real")
    got_tokens = _tensor(got_tokens, tuple(want_tokens.shape), "padded tokens (B, T, D)")
    index = (fs.offsets[rows][:, None] + steps[None]).clamp(max=len(tokens) - 1)
    _compare(got_tokens, want_tokens, [
        ("padding not zeroed: the padded rows hold the next caption's tokens; multiply by the mask", tokens[index]),
    ], "the padded tokens")
    return "each caption's tokens, zeros after its end, and a mask that says which are real (as FeatureSet.text_batch)."


pad_packed = _register(
    "pad_packed", "03", "code", "from packed tokens back to a padded batch and its mask", _check_pad_packed,
    "lengths = offsets[rows + 1] - offsets[rows]; T = lengths.max(); position t of caption b is real when "
    "t < lengths[b]; its token row is offsets[rows[b]] + t (clamp it to stay inside `tokens`), and padded rows must be 0.",
    exercise_solutions.pad_packed)


def _check_masked_mean(fn) -> str:
    from . import models

    g = torch.Generator().manual_seed(6)
    tokens = torch.randn(4, 7, 5, generator=g)                    # padded positions hold non-zero vectors, as the blog's do
    mask = torch.arange(7)[None, :] < torch.tensor([7, 3, 1, 5])[:, None]
    try:
        out = _call(fn, tokens.clone(), mask.clone())
    except Mistake as m:
        if "must match the size" in str(m):
            raise Mistake(f"the (B, T) mask did not broadcast against the (B, T, D) tokens: give it a last axis, "
                          f"mask.unsqueeze(-1) ({m})") from None
        raise
    out = _tensor(out, (4, 5), "(B, D)")
    m = mask.unsqueeze(-1).float()
    _compare(out, models.masked_mean(tokens, mask), [
        ("padding counted in the mean: average the real tokens only (sum them, divide by their number)",
         tokens.mean(1)),
        ("padded positions summed: multiply the tokens by the mask before summing", tokens.sum(1) / m.sum(1)),
        ("divided by T, every position; divide by each caption's number of real tokens, m.sum(1)",
         (tokens * m).sum(1) / 7),
        ("divided by the real tokens of the whole batch; divide by each caption's own count, m.sum(1)",
         (tokens * m).sum(1) / m.sum()),
    ], "the mean")
    return "the mean of each caption's real tokens, as `models.masked_mean` computes it."


masked_mean = _register(
    "masked_mean", "03", "code", "masked mean pooling: average only the real words", _check_masked_mean,
    "Turn the mask into a (B, T, 1) float (mask.unsqueeze(-1).float()), multiply, sum over T, and divide by the "
    "mask's sum over T: the number of real tokens of each caption.",
    exercise_solutions.masked_mean)


_PADDING_SHARE = 1 - 13.8 / 59


def _check_padding_share(answer) -> str:
    share = _share(answer)
    explain = (f"a batch padded to 59 positions per caption whose captions hold 13.8 real tokens on average is "
               f"1 − 13.8 / 59 = {_PADDING_SHARE:.0%} padding")
    if abs(share - _PADDING_SHARE) > 0.08:
        raise Mistake(f"{'far more' if share < _PADDING_SHARE else 'less'} than {share:.0%}: {explain}")
    return (f"{explain}. Without a mask, most of what the blog's attention averages is padding; the course sorts "
            "captions by length and carries the mask.")


padding_share = _register(
    "padding_share", "03", "predict", "what share of a padded batch is padding?", _check_padding_share,
    "Every caption gets 59 positions; on average 13.8 of them are real.",
    f"{_PADDING_SHARE:.2f}: 1 − 13.8 / 59. The longest caption sets T for the whole batch.")


# ================================================================== 04 · decoupled attention

def _check_uniform_keys(answer) -> str:
    from . import attention

    share = _share(answer)
    r, d = 49, 8
    attn = attention.DecoupledAttention(d, d, d)
    g = torch.Generator().manual_seed(7)
    one_region = torch.randn(1, 1, d, generator=g).expand(1, r, d)        # every region alike: every key alike
    _, weights = attn(torch.randn(1, 5, d, generator=g), one_region)
    if not torch.allclose(weights, torch.full_like(weights, 1 / r)):      # what the course's module gives
        raise RuntimeError("attention.DecoupledAttention no longer gives uniform weights for identical keys")
    if abs(share - 1 / r) > 0.003:
        why = ("1 would put all the weight on one region; with equal keys no region can stand out"
               if share > 0.5 else "the weights of each word still sum to 1 over the 49 regions")
        raise Mistake(f"not {share:g}: {why}. Equal keys give equal logits q·k/√d, and a softmax of equal logits "
                      f"is uniform: 1/49 ≈ {1 / r:.4f}")
    return "equal keys give equal logits, and the softmax of equal logits is uniform: 1/49 ≈ 0.0204 per region."


uniform_keys = _register(
    "uniform_keys", "04", "predict", "what weights do identical keys give?", _check_uniform_keys,
    "If every region has the same key, every logit q·k/√d of a word is the same number.",
    "1/49 ≈ 0.0204: equal logits, and a softmax of equal numbers is uniform over the 49 regions.")

_SCALING_CHOICES = {
    "a": "about 1/49: the weights stay spread over the regions",
    "b": "close to 1: each word puts nearly all its weight on a single region",
    "c": "close to 0: the weights vanish",
}


def _check_drop_scaling(answer) -> str:
    return _choice(answer, "b", {
        "a": "that is what the division by √d buys; without it the logits of width 1024 spread far wider "
             "(standard deviation about √1024 times larger) and one region wins",
        "b": "undivided, the logits' spread grows like √d; at d = 1024 the softmax saturates, one region takes "
             "nearly all of each word's weight, and the gradient through the others vanishes",
        "c": "the weights of a word always sum to 1: they cannot all vanish",
    })


drop_scaling = _register(
    "drop_scaling", "04", "change", "remove the division by √d at d = 1024", _check_drop_scaling,
    "The logits are sums of d products: their spread grows with d. What does a softmax do to widely spread numbers?",
    "(b): without / √d the logits' standard deviation grows like √d, the softmax saturates and each word looks "
    "at one region (the table below: 0.96 at d = 1024).")


def _check_region_attention(fn) -> str:
    from . import attention

    g = torch.Generator().manual_seed(8)
    b, t, r, d = 3, 5, 7, 16
    q, k = torch.randn(b, t, d, generator=g), torch.randn(b, r, d, generator=g)
    mask = torch.rand(b, r, generator=g) < 0.6
    mask[:, 0] = True                                                       # every image keeps a region
    module = attention.DecoupledAttention(d, d, d, use_value=False)        # the course's module, projections
    with torch.no_grad():                                                  # set to the identity: its softmax alone
        for lin in (module.query, module.key):
            lin.weight.copy_(torch.eye(d))
            lin.bias.zero_()
        expected = module(q, k, image_mask=mask)[1][:, 0]                  # (B, T, R)
    out = _tensor(_call(fn, q.clone(), k.clone(), mask.clone()), (b, t, r), "weights (B, T, R)")
    logits = q @ k.transpose(-2, -1)
    blocked = ~mask[:, None, :]
    scaled = (logits / math.sqrt(d)).masked_fill(blocked, float("-inf"))
    after = (logits / math.sqrt(d)).softmax(-1).masked_fill(blocked, 0)
    _compare(out, expected, [
        ("no 1/√d scaling: divide the logits by √d (d = q.shape[-1]) before the softmax",
         logits.masked_fill(blocked, float("-inf")).softmax(-1)),
        ("divided by d, not by √d", (logits / d).masked_fill(blocked, float("-inf")).softmax(-1)),
        ("softmax over the wrong axis: each word's weights over the regions must sum to 1 (softmax(dim=-1))",
         scaled.softmax(1)),
        ("softmax over the wrong axis: each word's weights over the regions must sum to 1 (softmax(dim=-1))",
         (logits / math.sqrt(d)).softmax(1)),
        ("mask ignored: masked regions got weight; fill their logits with -inf before the softmax",
         (logits / math.sqrt(d)).softmax(-1)),
        ("mask inverted: True marks a region that may be attended to",
         (logits / math.sqrt(d)).masked_fill(mask[:, None, :], float("-inf")).softmax(-1)),
        ("masked regions zeroed after the softmax: the weights no longer sum to 1; fill their logits with -inf "
         "before it", after),
    ], "the weights")
    return "softmax over the regions of q·k/√d, masked regions at exactly 0, as `attention.DecoupledAttention`."


region_attention = _register(
    "region_attention", "04", "code", "masked, scaled dot-product attention over the regions", _check_region_attention,
    "logits = q @ k.transpose(-2, -1) / math.sqrt(d): (B, T, R). Set the logits of masked regions to -inf "
    "(masked_fill with ~mask[:, None, :]), then softmax over the last axis, the regions.",
    exercise_solutions.region_attention)


# ================================================================== 05 · joint training

def _loss_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(6, 6, generator=g) * 2 - 1 + torch.eye(6) * 0.5   # cosines, matches a little higher
    return scores, torch.tensor(math.log(1 / 0.07))


def _check_loss(fn, reference, mistakes: Callable[[torch.Tensor, torch.Tensor], list], seed: int) -> None:
    """Value and gradient of a loss over (B, B) scores and a log-temperature against the course's function."""
    scores, scale = _loss_inputs(seed)
    s, ls = scores.clone().requires_grad_(), scale.clone().requires_grad_()
    out = _call(fn, s, ls)
    if not isinstance(out, torch.Tensor):
        raise Mistake(f"return the loss as a tensor (training calls .backward() on it), got {type(out).__name__}")
    if out.dim() != 0:
        raise Mistake(f"expected one number, a scalar tensor, got shape {tuple(out.shape)} (average over the batch)")
    _compare(out.detach(), reference(scores, scale), mistakes(scores, scale), "the loss")
    if not out.requires_grad:
        raise Mistake("the loss is cut from the graph (.item(), .detach() or numpy): no gradient can reach the model")
    out.backward()
    rs, rls = scores.clone().requires_grad_(), scale.clone().requires_grad_()
    reference(rs, rls).backward()
    if ls.grad is None:
        raise Mistake("no gradient reaches logit_scale: the temperature would never be learned")
    if not (_close(s.grad, rs.grad) and _close(ls.grad, rls.grad)):
        raise Mistake("the right value with the wrong gradient (is part of the computation detached?)")


def _check_info_nce(fn) -> str:
    from . import losses

    def mistakes(scores, scale):
        t, logits = torch.arange(6), scores * scale.exp()
        ce = F.cross_entropy
        return [("only one direction of InfoNCE (image → text): average it with text → image, on logits.t()",
                 ce(logits, t)),
                ("only one direction of InfoNCE (text → image): average it with image → text", ce(logits.t(), t)),
                ("the two directions summed: take their mean", ce(logits, t) + ce(logits.t(), t)),
                ("temperature ignored: multiply the scores by logit_scale.exp()", (ce(scores, t) + ce(scores.t(), t)) / 2),
                ("logit_scale is a log: multiply by logit_scale.exp(), not by logit_scale",
                 (ce(scores * scale, t) + ce(scores.t() * scale, t)) / 2),
                ("divided by the scale: logit_scale.exp() is 1 / temperature, so multiply",
                 (ce(scores / scale.exp(), t) + ce(scores.t() / scale.exp(), t)) / 2),
                ("wrong targets: image i's match is caption i, so the targets are torch.arange(B)",
                 (ce(logits, torch.zeros(6, dtype=torch.long)) + ce(logits.t(), torch.zeros(6, dtype=torch.long))) / 2)]

    _check_loss(fn, losses.info_nce, mistakes, seed=9)
    return "symmetric InfoNCE with a learnable temperature, value and gradient as `losses.info_nce`."


info_nce = _register(
    "info_nce", "05", "code", "the symmetric InfoNCE loss with a learnable temperature", _check_info_nce,
    "logits = scores * logit_scale.exp(); the right answer for row i is column i (targets torch.arange(B)); "
    "F.cross_entropy over the rows is image → text, over logits.t() text → image; average the two.",
    exercise_solutions.info_nce)


def _check_chance_loss(answer) -> str:
    loss = _number(answer, "a loss")
    chance = math.log(64)
    if abs(loss - chance) > 0.15:
        why = {0: "0 would mean every match is certain",
               64: "64 is the number of candidates; the loss is the natural log of it",
               6: "6 is log₂ 64; cross-entropy uses the natural log"}.get(round(loss), "")
        if loss < 0:
            why = "a cross-entropy is never negative"
        elif 0 < loss < 0.05:
            why = "1/64 is each candidate's probability; the loss is −ln of it"
        raise Mistake(f"not {loss:g}{': ' + why if why else ''}. With equal scores the softmax gives each of the 64 "
                      f"candidates 1/64, at any temperature: the loss is −ln(1/64) = ln 64 ≈ {chance:.2f}")
    return ("equal scores give each of the 64 candidates 1/64 at any temperature: ln 64 ≈ 4.16, both directions. "
            "A curve that starts there and stays there has learned nothing.")


chance_loss = _register(
    "chance_loss", "05", "predict", "InfoNCE when every pair scores the same", _check_chance_loss,
    "With equal scores, what probability does the softmax give the right caption among 64? The loss is −ln of it.",
    "ln 64 ≈ 4.16, whatever the temperature: equal logits stay equal when multiplied by any scale.")


def _best_epoch(rsums: list, first: bool = True) -> int:
    """1-based epoch of the best rSum: the first that reached it (training keeps only strict improvements)."""
    best = max(rsums)
    return (rsums.index(best) if first else len(rsums) - 1 - rsums[::-1].index(best)) + 1


def _stop_cases(seed: int = 10) -> list[tuple[list, int]]:
    rng = random.Random(seed)
    return [([float(rng.randint(300, 304)) for _ in range(rng.randint(1, 9))], rng.randint(0, 4)) for _ in range(300)]


def _check_should_stop(fn) -> str:
    from .train import TrainConfig, finished

    cases = _stop_cases()
    got = [bool(_call(fn, list(rsums), patience)) for rsums, patience in cases]
    want = [finished(TrainConfig(epochs=100, patience=p, device="cpu"), len(r), _best_epoch(r)) for r, p in cases]
    if got == want:
        return "stop once `patience` epochs have passed since the best rSum, never with patience 0 (as `train.finished`)."

    def since_improvement(r):                              # epochs since the last one that beat its predecessor
        return next((len(r) - 1 - i for i in range(len(r) - 1, 0, -1) if r[i] > r[i - 1]), len(r) - 1)

    variants = {
        "a tie counted as progress: only a strictly higher rSum is progress, so the best epoch is the first one that "
        "reached the best rSum": [p > 0 and len(r) - _best_epoch(r, first=False) >= p for r, p in cases],
        "each epoch compared with the one before; compare with the best rSum so far":
            [p > 0 and since_improvement(r) >= p for r, p in cases],
        "one epoch late: stop as soon as `patience` epochs have passed without progress (>=, not >)":
            [p > 0 and len(r) - _best_epoch(r) > p for r, p in cases],
        "patience 0 means early stopping is off: never stop for lack of progress":
            [len(r) - _best_epoch(r) >= p for r, p in cases],
    }
    for message, answers in variants.items():
        if got == answers:
            raise Mistake(message)
    (rsums, patience), g, w = next((c, g, w) for c, g, w in zip(cases, got, want) if g != w)
    raise Mistake(f"should_stop({rsums}, patience={patience}) returned {g}; the course's rule (train.finished) says {w}")


should_stop = _register(
    "should_stop", "05", "code", "early stopping with patience", _check_should_stop,
    "Find the best epoch (1-based; the first one that reached max(rsums)); stop when patience > 0 and "
    "len(rsums) - best_epoch >= patience.",
    exercise_solutions.should_stop)


# ================================================================== 06 · evaluation

def _check_optimistic_ties(answer) -> str:
    r1 = _number(answer, "a recall in percent")
    if r1 == 1:
        raise Mistake("in percent, please: 1 would be 1%")
    if r1 != 100:
        why = {0: "0% is the course's pessimistic rule, printed above; in the model's favour every tie is won",
               50: "not a coin flip: a rule that favours the model wins *every* tie"}.get(r1, "")
        raise Mistake(f"not {r1:g}%{': ' + why if why else ''}. Every item ties with every other, and a rule that "
                      "breaks ties for the model puts the correct one first every time: R@1 = 100%")
    return ("a constant score matrix ties everything, and ties won by the model put every correct item first: "
            "R@1 = 100% for a model that knows nothing. The pessimistic rule gives it 0%.")


optimistic_ties = _register(
    "optimistic_ties", "06", "predict", "R@1 of a constant score matrix if ties counted for the model",
    _check_optimistic_ties,
    "With constant scores every wrong item ties with the right one. Who wins each tie?",
    "100: every tie broken for the model ranks the correct item first, so a model that knows nothing gets R@1 = 100%.")


def _recall_inputs(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """6 images, 14 captions in shuffled order, small integer scores (many ties), true pairs 1 higher: a seed
    where each mistake below changes a recall (tests/test_exercises.py holds one of each)."""
    g = torch.Generator().manual_seed(seed)
    caption_image = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4, 4, 5, 5])
    caption_image = caption_image[torch.randperm(len(caption_image), generator=g)]
    scores = torch.randint(0, 4, (6, len(caption_image)), generator=g).float()
    scores[caption_image, torch.arange(len(caption_image))] += 1
    return scores, caption_image


def _recall_variants(scores: torch.Tensor, cap_img: torch.Tensor, k: int) -> dict[str, tuple[float, float]]:
    """What typical mistakes return, as (i2t, t2i) percent."""
    n_img, n_cap = scores.shape
    own = cap_img[None, :] == torch.arange(n_img)[:, None]
    best = scores.masked_fill(~own, float("-inf")).amax(1, keepdim=True)
    correct = scores[cap_img, torch.arange(n_cap)]
    first = torch.stack([scores[i, (cap_img == i).nonzero()[0, 0]] for i in range(n_img)])[:, None]

    def pct(rank):
        return 100 * (rank < k).float().mean().item()

    right = (pct(((scores >= best) & ~own).sum(1)), pct(((scores >= correct) & ~own).sum(0)))
    return {
        "ties counted in the model's favour: a wrong item that scores the same as the right one counts as ranked "
        "ahead (>=, not >)": (pct(((scores > best) & ~own).sum(1)), pct(((scores > correct) & ~own).sum(0))),
        "i2t counted only each image's first caption: a hit when *any* of its captions is in the top K, so rank "
        "the best of them": (pct(((scores >= first) & ~own).sum(1)), right[1]),
        "i2t ranked the image's other captions as wrong ones: they are correct too (count only other images' "
        "captions)": (pct((scores >= best).sum(1) - 1), right[1]),
        "i2t and t2i swapped: i2t ranks the captions for each image (the rows)": (right[1], right[0]),
        "fractions, not percent: multiply by 100": (right[0] / 100, right[1] / 100),
    }


def _check_recall_at_k(fn) -> str:
    from . import metrics

    scores, cap_img = _recall_inputs()
    got, want, variants = [], [], []
    for k in (1, 2, 3):
        out = _call(fn, scores.clone(), cap_img.clone(), k)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise Mistake(f"expected two numbers, (i2t R@K, t2i R@K); got {type(out).__name__}")
        got.append(tuple(_number(x, "a recall") for x in out))
        r = metrics.recalls_from_ranks(*metrics.ranks(scores, cap_img), ks=(k,))
        want.append((float(r[f"i2t_R@{k}"]), float(r[f"t2i_R@{k}"])))
        variants.append(_recall_variants(scores, cap_img, k))

    def same(a, b):
        return all(abs(x - y) < 1e-3 for pa, pb in zip(a, b) for x, y in zip(pa, pb))   # float32 or 64; 1 hit is 7 points

    if same(got, want):
        return "both directions in percent, ties against the model, as `metrics.ranks` and `recalls_from_ranks`."
    for message in variants[0]:
        if same(got, [v[message] for v in variants]):
            raise Mistake(message)
    k, g, w = next((k, g, w) for k, g, w in zip((1, 2, 3), got, want) if not same([g], [w]))
    raise Mistake(f"with k={k} you gave (i2t, t2i) = ({g[0]:.1f}, {g[1]:.1f}); the course's metrics.ranks gives "
                  f"({w[0]:.1f}, {w[1]:.1f})")


recall_at_k = _register(
    "recall_at_k", "06", "code", "recall@K in both directions, ties against the model", _check_recall_at_k,
    "own = caption_image[None, :] == torch.arange(N_img)[:, None]. i2t: the best own caption's score per row; "
    "rank = how many *other* images' captions score >= it. t2i: each caption's score with its own image; rank = "
    "how many other images score >= it. A hit is rank < k; report percent.",
    exercise_solutions.recall_at_k)


def _bootstrap_inputs(seed: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """120 images with 5 captions (a few 6) whose captions share their image's outcome."""
    rng = np.random.default_rng(seed)
    counts = np.where(rng.random(120) < 0.05, 6, 5)
    caption_image = np.repeat(np.arange(120), counts)
    image_hit = rng.random(120) < 0.4
    return image_hit[caption_image].astype(int), caption_image


def _percentile_interval(rates: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(rates, [2.5, 97.5])
    return float(lo), float(hi)


def _check_bootstrap_interval(fn) -> str:
    from . import metrics

    hits, cap_img = _bootstrap_inputs()
    n_img, n_boot = int(cap_img.max()) + 1, 1000
    _, cap_idx, mask = metrics.cluster_resample(0, n_boot, cap_img, n_img)   # the course's resampling of images
    lo, hi = _percentile_interval(100 * (hits[cap_idx] * mask).sum(1) / mask.sum(1))
    apart = np.random.default_rng(0).integers(0, len(hits), (n_boot, len(hits)))
    lo_apart, hi_apart = _percentile_interval(100 * hits[apart].mean(1))

    def run(seed):
        out = _call(fn, hits.copy(), cap_img.copy(), n_boot, seed)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise Mistake(f"expected two numbers, (lo, hi); got {type(out).__name__}")
        return tuple(_number(x, "an interval bound") for x in out)

    a, b = run(0)
    width, ref_width = b - a, hi - lo
    if b <= 1 < lo:
        raise Mistake("fractions, not percent: multiply the rates by 100")
    if a > b:
        raise Mistake(f"lo > hi: ({a:.1f}, {b:.1f})")
    if width == 0:
        raise Mistake("every replicate is the same test set (interval of width 0): draw *with* replacement "
                      "(rng.integers(0, n_img, n_img))")
    if run(0) != (a, b):
        raise Mistake("not seeded: two calls with seed 0 gave different intervals; draw with np.random.default_rng(seed)")
    if width < 0.75 * ref_width:
        if abs(width - (hi_apart - lo_apart)) < 0.25 * (hi_apart - lo_apart):
            raise Mistake(f"captions resampled apart from their images: here an image's captions share their outcome, "
                          f"so resampling captions one by one gives an interval {ref_width / width:.1f}× too narrow "
                          f"({width:.1f} points instead of about {ref_width:.1f}); draw images, each with all its captions")
        raise Mistake(f"interval too narrow: {width:.1f} points, the course's cluster bootstrap gives about {ref_width:.1f}")
    if abs(a - lo) > 0.2 * ref_width or abs(b - hi) > 0.2 * ref_width:
        raise Mistake(f"your interval ({a:.1f}, {b:.1f}) is far from the course's cluster bootstrap "
                      f"({lo:.1f}, {hi:.1f}); take the 2.5 and 97.5 percentiles of the resampled hit rates")
    return "images drawn with replacement, each with all its captions, percentile interval, as `metrics.cluster_resample`."


bootstrap_interval = _register(
    "bootstrap_interval", "06", "code", "a bootstrap that resamples images with all their captions",
    _check_bootstrap_interval,
    "rng = np.random.default_rng(seed); list each image's caption rows once; per replicate draw n_img images with "
    "rng.integers, concatenate their caption rows, and keep 100 * hits[rows].mean(); return the 2.5 and 97.5 "
    "percentiles (np.percentile).",
    exercise_solutions.bootstrap_interval)


def _check_caption_level(answer) -> str:
    return _choice(answer, "b", {
        "a": "the captions of an image share their outcome here, so they are not five independent observations; "
             "counting them as such shrinks the interval",
        "b": "resampling captions one by one counts one image's shared outcome as 5 independent ones: the standard "
             "error shrinks by about √5, and the interval with it (the check of `bootstrap_interval` measures this)",
        "c": "the variance shrinks by 5, the interval's width (a standard error) by √5 ≈ 2.2",
        "d": "treating correlated captions as independent can only understate the spread, never widen it",
    })


caption_level = _register(
    "caption_level", "06", "predict", "caption-level resampling when an image's captions share their outcome",
    _check_caption_level,
    "Five captions that always agree carry the information of one. An interval's width goes like 1 / √n.",
    "(b) about √5 ≈ 2.2× narrower: caption-level resampling counts 5 n observations where there are n.")


# ================================================================== 07 · what matters

def _check_pointwise_loss(fn) -> str:
    from . import losses

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
    "pointwise_loss", "07", "code", "the per-pair logistic loss that judges each pair alone", _check_pointwise_loss,
    "z = scores * logit_scale.exp(); positives z.diag(), negatives z.roll(-1, dims=1).diag() (image i with caption "
    "i + 1); loss = mean of softplus(−positive) + softplus(negative).",
    exercise_solutions.pointwise_loss)


def _check_subsample(fn) -> str:
    from .ablations import subsample as reference
    from .features import FeatureSet, synthetic_featureset

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
        want = reference(fs, fraction, seed).n_images
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
    return "nested subsets of images with all their captions, as `ablations.subsample` draws them."


subsample = _register(
    "subsample", "07", "code", "nested training subsets that keep captions with their images", _check_subsample,
    "One random order of the images per seed (torch.randperm with a seeded torch.Generator); keep its first "
    "round(fraction × N) images, sorted, with fs.select_images: the same order for every fraction makes them nested.",
    exercise_solutions.subsample)


_GAP_CHOICES = {"a": "joint's lead over decoupled grows", "b": "it shrinks",
                "c": "no credible change"}


def _check_gap_with_data(answer, gaps: pd.DataFrame) -> str:
    """`gaps`: 07's `ablations.gap_table`; its word for joint - decoupled ("widens", "narrows", "holds")
    comes from the 95% interval of the gap's change between the smallest and the largest training set."""
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
    "gap_with_data", "07", "predict", "what happens to the gap with 4× the data", _check_gap_with_data,
    "Look at the row `joint - decoupled` of the gap table: the change from the smallest to the largest training set "
    "and its 95% interval.",
    "Read it off the gap table's last column: (a) if the gap widens, (b) if it narrows, (c) if it holds.")
