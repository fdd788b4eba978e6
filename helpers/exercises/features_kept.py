"""The exercises of notebook 07 · what the features keep: peak_centres, leakage, modality_chance."""
from __future__ import annotations

import torch

from ..pointing import cell_centres
from . import solutions
from .core import Mistake, _call, _choice, _compare, _register, _share, _tensor


def _check_peak_centres(fn) -> str:
    g = torch.Generator().manual_seed(7)
    weights = torch.rand(6, 49, generator=g).softmax(-1)
    weights[0, 1], weights[1, 13], weights[2, 42] = 2.0, 2.0, 2.0                    # peaks off the diagonal
    width, height = 640.0, 427.0                                                      # not square: x and y differ
    out = _tensor(_call(fn, weights.clone(), width, height), (6, 2), "the peak centres (T, 2)")
    peak = weights.argmax(-1)
    expected = torch.as_tensor(cell_centres(width, height)[peak.numpy()], dtype=torch.float32)
    row, col = peak // 7, peak % 7
    mistakes = [
        ("rows and columns swapped: with row-major regions, cell = row * 7 + col, so col = cell % 7 gives x",
         torch.stack([(row + 0.5) / 7 * width, (col + 0.5) / 7 * height], -1)),
        ("x and y swapped: x (column) scales with the width, y (row) with the height",
         torch.stack([(col + 0.5) / 7 * height, (row + 0.5) / 7 * width], -1)),
        ("the cell's corner, not its centre: add half a cell (+ 0.5) before scaling",
         torch.stack([col / 7 * width, row / 7 * height], -1)),
        ("in grid cells, not pixels: scale by width / 7 and height / 7",
         torch.stack([col + 0.5, row + 0.5], -1).float()),
    ]
    _compare(out, expected, mistakes, "the peak centres")
    return "each word's peak cell, found with argmax over the 49 regions, sits at pixel ((col + ½) W/7, (row + ½) H/7)."


peak_centres = _register(
    "peak_centres", "07", "code", "where a word's attention peaks, in image pixels",
    _check_peak_centres,
    "argmax over the last axis gives a cell index; row-major means cell = row * 7 + col. A cell's centre "
    "is half a cell in from its corner.",
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
    "Where do the probe's labels come from (notebook 01), and what does a mixed image vector contain?",
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
    "The test set holds as many image vectors as caption vectors. If they cannot be told apart, how often is a guess right?",
    "0.5: balanced classes, nothing to go on, so the probe guesses; 1.0 means the modalities stay apart.")
