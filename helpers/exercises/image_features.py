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
    for shape in [(2, 16, 7, 7), (1, 16, 3, 5), (2, 16, 4, 2)]:       # non-square grids: h and w cannot be mixed up
        fmap = torch.randn(*shape, generator=g)
        b, c, h, w = shape
        encoder = encoders.ImageEncoder("feature map", nn.Identity(), nn.Linear(c, 1), ["-"])   # the course's forward
        regions, pooled = encoder(fmap)
        try:
            out = _call(fn, fmap.clone())
        except Mistake as m:
            if h != w and "is invalid for input of size" in str(m):
                raise Mistake(f"the grid is h × w = {h} × {w}, not square: a reshape that assumes h = w fails; take "
                              f"h and w from fmap.shape ({m})") from None
            raise
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise Mistake(f"expected two tensors, (regions, pooled); got {type(out).__name__}")
        first, second = (tuple(x.shape) if isinstance(x, torch.Tensor) else None for x in out)
        if first == (b, c) and second is not None and len(second) == 3:
            raise Mistake("regions and pooled swapped: return (regions, pooled)")
        if first == (b, c, h * w):
            raise Mistake(f"regions of shape (B, C, h*w) = {first}: the channels are still first; put them last "
                          "with .transpose(1, 2)")
        if h != w and first in ((b, h * h, c), (b, w * w, c)):
            raise Mistake(f"the grid is h × w = {h} × {w}, not square: {first[1]} regions instead of h*w = {h * w}; "
                          "take h and w from fmap.shape")
        got_regions = _tensor(out[0], (b, h * w, c), "regions (B, h*w, C)")
        _compare(got_regions, regions, [
            ("reshape without permute: each 'region' mixes channels of several cells; move C last first "
             "(fmap.flatten(2).transpose(1, 2))", fmap.reshape(b, h * w, c)),
            ("regions in column-major order: number them row by row (region r is row r // w, column r % w)",
             fmap.transpose(2, 3).flatten(2).transpose(1, 2)),
        ], "the region tensor")
        if second == (b, h * w):
            raise Mistake(f"pooled of shape (B, h*w) = {second}: averaged over the channels; average over the "
                          "regions, .mean(1) of the (B, h*w, C) regions")
        got_pooled = _tensor(out[1], (b, c), "pooled (B, C)")
        _compare(got_pooled, pooled, [
            ("pooled is the sum of the regions, not their mean", regions.sum(1)),
            ("pooled is the max over the regions, not their mean", regions.amax(1)),
        ], "the pooled vector")
    return "regions row by row with channels last, pooled = their mean, as `encoders.ImageEncoder` does."


regions_from_map = _register(
    "regions_from_map", "02", "code", "regions and a pooled vector from a (B, C, h, w) map", _check_regions_from_map,
    ["Each of the h*w grid cells is one region, numbered row by row, with its C channels as its vector; pooled "
     "is the mean of the regions.",
     "A plain .reshape(B, h*w, C) keeps the memory order and mixes cells: flatten the grid first, then move the "
     "channels last.",
     "regions = fmap.flatten(2).transpose(1, 2)  ((B, C, h*w) -> (B, h*w, C)); pooled = regions.mean(1)"],
    solutions.regions_from_map)


def _check_n_regions(answer) -> str:
    n = _number(answer, "a number of regions")
    why = {7: "7 is the side of the grid (224 / 32); count the cells of the 7 × 7 grid",
           1280: "1280 is the number of channels, the length of each region's vector",
           2048: "2048 is ResNet-50's number of channels, the length of each region's vector",
           1000: "1000 is the number of ImageNet classes, what the blog's extractor returns",
           1568: "224 × 224 / 32 shrinks the area by 32; each *side* shrinks by 32",
           196: "196 is a 14 × 14 grid, a stride of 16; this backbone shrinks each side 32×",
           50176: "50176 is the number of pixels, 224 × 224; each region is a 32 × 32 patch of them",
           3: "3 is the number of colour channels of the input image"}
    if n != 49:
        raise Mistake(why.get(int(n), f"not {n:g}: each side shrinks from 224 to 224 / 32 = 7 cells") if n == int(n)
                      else f"not {n:g}: a count of grid cells is a whole number")
    return "224 / 32 = 7 cells a side, 7 × 7 = 49 regions, each a 1280-d vector (2048-d for ResNet-50)."


n_regions = _register(
    "n_regions", "02", "predict", "how many regions does a 224 × 224 image give?", _check_n_regions,
    ["The backbone shrinks each side of the image 32×: how many cells does the last feature map have?",
     "224 / 32 cells a side; the regions are the cells of that square grid, not its channels."],
    "49: a 224 × 224 input gives a 7 × 7 map (224 / 32 = 7), so 49 regions of C = 1280 channels for MobileNetV2.")


def _check_nearest_neighbours(fn) -> str:
    g = torch.Generator().manual_seed(4)
    vectors = torch.randn(24, 8, generator=g) * torch.randn(24, 1, generator=g).mul(1.5).exp()   # norms 0.05x to 20x
    for k in (3, 5):                                         # a second k: k must not be fixed in the code
        _neighbours(fn, vectors, k)
    return "the k most cosine-similar other rows, most similar first."


def _neighbours(fn, vectors: torch.Tensor, k: int) -> None:
    n = len(vectors)
    expected = solutions.nearest_neighbours(vectors.clone(), k)
    out = _call(fn, vectors.clone(), k)
    if not isinstance(out, torch.Tensor):
        raise Mistake(f"expected an (N, k) tensor of row indices, got {type(out).__name__}")
    if out.dim() == 2 and out.shape[0] == n and out.shape[1] != k:
        raise Mistake(f"asked for k = {k} neighbours, got {out.shape[1]} per row: use the argument k, "
                      "not a fixed number or k + 1")
    if tuple(out.shape) != (n, k):
        raise Mistake(f"wrong shape: expected (N, k) = ({n}, {k}), got {tuple(out.shape)}")
    if out.is_floating_point():
        raise Mistake("expected row indices (.indices of topk), got the similarities (.values)")
    out = out.long()
    if (out == expected).all():
        return
    if (out == torch.arange(n)[:, None]).any(1).all():
        raise Mistake("the query is its own nearest neighbour (cosine 1 with itself): set the diagonal to -inf "
                      "before topk")
    unit = F.normalize(vectors, dim=-1)
    cols = F.normalize(vectors, dim=0)

    def top(sim, largest=True):
        return sim.fill_diagonal_(float("-inf") if largest else float("inf")).topk(k, largest=largest).indices

    if (out == top(vectors @ vectors.t())).all():
        raise Mistake("dot products, not cosines: normalise the vectors first (F.normalize), or vectors with a "
                      "large norm become everyone's neighbour")
    if (out == top(cols @ cols.t())).all():
        raise Mistake("normalised the columns (dim=0), not the rows: normalise each vector, F.normalize(v, dim=-1)")
    if (out == top(torch.cdist(vectors, vectors), largest=False)).all():
        raise Mistake("the nearest by Euclidean distance between the raw vectors, not by cosine: normalise the rows "
                      "first (F.normalize), then take the largest cosines")
    if (out == top(unit @ unit.t(), largest=False)).all():
        raise Mistake("the least similar rows: topk takes the largest values by default")
    if (out.sort(1).values == expected.sort(1).values).all():
        raise Mistake("the right neighbours in the wrong order: most similar first")
    raise Mistake("not the k most cosine-similar other rows (the course's reference gives other rows)")


nearest_neighbours = _register(
    "nearest_neighbours", "02", "code", "nearest neighbours by cosine, the query excluded", _check_nearest_neighbours,
    ["Cosine is the dot product of unit vectors; a row is always its own most similar row, so keep it out.",
     "Normalise the rows (F.normalize(v, dim=-1)), take all cosines with one product (N, N), and put -inf on "
     "the diagonal before choosing the k largest.",
     "sim = unit @ unit.t(); sim.fill_diagonal_(float(\"-inf\")); return sim.topk(k, dim=1).indices"],
    solutions.nearest_neighbours)
