"""The exercises of notebook 06 · evaluation: optimistic_ties, recall_at_k, bootstrap_interval, caption_level."""
from __future__ import annotations

import numpy as np
import torch

from .. import intervals, metrics
from . import solutions
from .core import Mistake, _call, _choice, _number, _register


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
    solutions.recall_at_k)


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
    hits, cap_img = _bootstrap_inputs()
    n_img, n_boot = int(cap_img.max()) + 1, 1000
    _, cap_idx, mask = intervals.cluster_resample(0, n_boot, cap_img, n_img)   # the course's resampling of images
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
    return "images drawn with replacement, each with all its captions, percentile interval, as `intervals.cluster_resample`."


bootstrap_interval = _register(
    "bootstrap_interval", "06", "code", "a bootstrap that resamples images with all their captions",
    _check_bootstrap_interval,
    "rng = np.random.default_rng(seed); list each image's caption rows once; per replicate draw n_img images with "
    "rng.integers, concatenate their caption rows, and keep 100 * hits[rows].mean(); return the 2.5 and 97.5 "
    "percentiles (np.percentile).",
    solutions.bootstrap_interval)


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
