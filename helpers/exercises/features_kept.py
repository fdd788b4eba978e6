"""The exercises of notebook 07 · what the features keep: peak_centres, leakage, modality_chance."""
from __future__ import annotations

import math

import torch

from ..pointing import cell_centres
from . import solutions
from .core import Mistake, _call, _choice, _compare, _register, _share, _tensor


def _peak_inputs() -> list[tuple[torch.Tensor, float, float]]:
    """The notebook's 7 × 7 grid on a landscape image, then a 4 × 4 grid on a portrait one (a side written as 7 fails)."""
    g = torch.Generator().manual_seed(7)
    weights = torch.rand(6, 49, generator=g).softmax(-1)
    weights[0, 1], weights[1, 13], weights[2, 42] = 2.0, 2.0, 2.0                    # peaks off the diagonal
    small = torch.rand(5, 16, generator=g).softmax(-1)
    small[0, 2], small[1, 7], small[2, 12] = 2.0, 2.0, 2.0
    return [(weights, 640.0, 427.0), (small, 300.0, 500.0)]                           # not square: x and y differ


def _check_peak_centres(fn) -> str:
    for weights, width, height in _peak_inputs():
        n_words, n_regions = weights.shape
        side = math.isqrt(n_regions)
        out = _call(fn, weights.clone(), width, height)
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (n_regions, 2) and n_regions != n_words:
            raise Mistake("argmax over the wrong axis: each word's peak is the argmax over its regions, the last "
                          "axis (weights.argmax(-1))")
        out = _tensor(out, (n_words, 2), "the peak centres (T, 2)")
        peak = weights.argmax(-1)
        expected = torch.as_tensor(cell_centres(width, height, side)[peak.numpy()], dtype=torch.float32)
        row, col = peak // side, peak % side
        mistakes = [
            (f"rows and columns swapped: with row-major regions, cell = row * {side} + col, so col = cell % {side} gives x",
             torch.stack([(row + 0.5) / side * width, (col + 0.5) / side * height], -1)),
            ("x and y swapped: x (column) scales with the width, y (row) with the height",
             torch.stack([(col + 0.5) / side * height, (row + 0.5) / side * width], -1)),
            ("the cell's corner, not its centre: add half a cell (+ 0.5) before scaling",
             torch.stack([col / side * width, row / side * height], -1)),
            ("the cell's far corner, not its centre: add half a cell (+ 0.5), not a whole one",
             torch.stack([(col + 1) / side * width, (row + 1) / side * height], -1)),
            (f"in grid cells, not pixels: scale by width / {side} and height / {side}",
             torch.stack([col + 0.5, row + 0.5], -1).float()),
            ("in fractions of the image, not pixels: multiply x by the width and y by the height",
             torch.stack([(col + 0.5) / side, (row + 0.5) / side], -1)),
        ]
        if side != 7:
            r7, c7 = peak // 7, peak % 7
            mistakes.append((f"the grid's side written as 7: this grid has {n_regions} regions, so its side is "
                             f"math.isqrt({n_regions}) = {side}; take it from weights.shape[-1]",
                             torch.stack([(c7 + 0.5) / 7 * width, (r7 + 0.5) / 7 * height], -1)))
        _compare(out, expected, mistakes, "the peak-centre tensor")
    return "each word's peak cell, found with argmax over the 49 regions, sits at pixel ((col + ½) W/7, (row + ½) H/7)."


peak_centres = _register(
    "peak_centres", "07", "code", "where a word's attention peaks, in image pixels",
    _check_peak_centres,
    ["Find each word's most attended region, turn its index into a row and a column of the square grid, and "
     "place the cell's centre in pixels.",
     "argmax over the last axis gives a cell index; the grid's side is math.isqrt(R); row-major means "
     "cell = row * side + col. A cell's centre is half a cell in from its corner.",
     "row, col = peak // side, peak % side; x = (col + 0.5) / side * width, y = (row + 0.5) / side * height; "
     "torch.stack([x, y], -1)."],
    solutions.peak_centres)


def _check_leakage(answer) -> str:
    return _choice(answer, "b", {
        "a": "mixing cannot add anything about the image that its regions did not hold: the encoders are frozen, "
             "and the mixed vector adds only the caption's words",
        "b": "the mixed image vector contains its own caption's words, and the probe's labels are mined from "
             "captions: the probe reads the answer off the text. That is leakage, not better image features",
        "c": "the difference is many points and repeats over the seeds: chance does not do that",
    })


leakage = _register(
    "leakage", "07", "predict", "why joint's mixed image vectors probe better",
    _check_leakage,
    ["Where do the probe's labels come from (notebook 01)?",
     "The labels are mined from captions. What does joint's mixed image vector contain besides the image?"],
    "(b) the mixed vector contains its own caption, and the labels are mined from captions: leakage.")


def _check_modality_chance(answer) -> str:
    share = _share(answer)
    if share == 1:
        raise Mistake("1.0 would mean the probe always tells them apart: that is what *unmixed* vectors give")
    if share == 0:
        raise Mistake("0 would mean the probe is always wrong, and then flipping its answers would always be "
                      "right: it tells them apart perfectly")
    if share != 0.5:
        raise Mistake(f"not {share:g}: with as many image as caption vectors and nothing to tell them apart, the "
                      "probe can only guess")
    return ("with balanced classes and indistinguishable vectors, the best a probe can do is guess: 0.5. "
            "Anything near 1.0 means the two modalities stay apart.")


modality_chance = _register(
    "modality_chance", "07", "predict", "the modality probe's accuracy on perfectly mixed vectors",
    _check_modality_chance,
    ["The test set holds as many image vectors as caption vectors. If they cannot be told apart, how often is a "
     "guess right?",
     "Two balanced classes and nothing to go on: a coin flip. Give the accuracy as a share between 0 and 1."],
    "0.5: balanced classes, nothing to go on, so the probe guesses; 1.0 means the modalities stay apart.")
