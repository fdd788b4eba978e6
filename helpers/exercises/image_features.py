"""The exercises of notebook 02 · image features: regions_from_map, n_regions, nearest_neighbours."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import encoders
from . import solutions
from .core import Mistake, _call, _compare, _number, _register, _tensor


def _check_regions_from_map(fn) -> str:
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
    solutions.regions_from_map)


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
    expected = solutions.nearest_neighbours(vectors.clone(), k)
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
    solutions.nearest_neighbours)
