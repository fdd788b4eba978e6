"""The exercises of notebook 06 · evaluation: optimistic_ties, recall_at_k, bootstrap_interval, caption_level."""
from __future__ import annotations

import numpy as np
import torch

from .. import metrics
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
    ["With constant scores every wrong item ties with the right one. Who wins each tie?",
     "If every tie is broken in the model's favour, where does the correct item land in each ranking? Answer in "
     "percent."],
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
        "one place too generous: the rank counts the wrong items ahead, so the top item has rank 0 and a hit is "
        "rank < k, not rank <= k": (pct(((scores >= best) & ~own).sum(1) - 1), pct(((scores >= correct) & ~own).sum(0) - 1)),
    }


def _check_recall_at_k(fn) -> str:
    scores, cap_img = _recall_inputs()
    got, want, variants = [], [], []
    for k in (1, 2, 3):
        got.append(_pair(_call(fn, scores.clone(), cap_img.clone(), k), "(i2t R@K, t2i R@K)"))
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
    ["A query is a hit when its correct answer is in the top K; a wrong item that ties with the right one counts "
     "as ahead of it. An image has several correct captions: the best of them counts.",
     "own = caption_image[None, :] == torch.arange(N_img)[:, None]. i2t: the best own caption's score per row; "
     "rank = how many *other* images' captions score >= it. t2i: each caption's score with its own image; rank = "
     "how many other images score >= it.",
     "best_own = scores.masked_fill(~own, float('-inf')).amax(1, keepdim=True); i2t_rank = ((scores >= best_own) & "
     "~own).sum(1); a hit is rank < k; return 100 * (rank < k).float().mean().item() for each direction."],
    solutions.recall_at_k)


def _bootstrap_inputs(seed: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """120 images with 5 captions (a few 6) whose captions share their image's outcome."""
    rng = np.random.default_rng(seed)
    counts = np.where(rng.random(120) < 0.05, 6, 5)
    caption_image = np.repeat(np.arange(120), counts)
    image_hit = rng.random(120) < 0.4
    return image_hit[caption_image].astype(int), caption_image


def _pair(out, what: str) -> tuple[float, float]:
    """Two finite numbers from a tuple, list, array or tensor of two, or a Mistake saying what came back."""
    if isinstance(out, (np.ndarray, torch.Tensor)) and out.ndim == 1 and len(out) == 2:
        out = out.tolist()
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        shape = f" of {len(out)}" if isinstance(out, (tuple, list)) else ""
        raise Mistake(f"expected two numbers, {what}; got {type(out).__name__}{shape}")
    return tuple(_number(x, "an interval bound" if "lo" in what else "a recall") for x in out)


_LEVELS = {"95%": (2.5, 97.5), "90%": (5, 95), "99%": (0.5, 99.5), "80%": (10, 90), "68%": (16, 84)}


def _fast_rates(hits: np.ndarray, cap_img: np.ndarray, n_boot: int, apart: bool) -> np.ndarray:
    """Hit rates (percent) of `n_boot` replicates: images drawn with all their captions, or captions one by one."""
    rng = np.random.default_rng(12345)
    if apart:
        return 100 * hits[rng.integers(0, len(hits), (n_boot, len(hits)))].mean(1)
    n_img = int(cap_img.max()) + 1
    img_hits, img_caps = np.bincount(cap_img, hits, n_img), np.bincount(cap_img, None, n_img)
    drawn = rng.integers(0, n_img, (n_boot, n_img))
    return 100 * img_hits[drawn].sum(1) / img_caps[drawn].sum(1)


def _check_bootstrap_interval(fn) -> str:
    hits, cap_img = _bootstrap_inputs()
    n_img = int(cap_img.max()) + 1
    rates, apart = _fast_rates(hits, cap_img, 20000, False), _fast_rates(hits, cap_img, 3000, True)
    lo, hi = np.percentile(rates, [2.5, 97.5])
    ref_width = hi - lo
    lo_apart, hi_apart = np.percentile(apart, [2.5, 97.5])

    def run(seed, n_boot):
        state = np.random.get_state()                  # the learner's code may draw from numpy's global generator
        try:
            out = _call(fn, hits.copy(), cap_img.copy(), n_boot, seed)
        finally:
            np.random.set_state(state)
        return _pair(out, "(lo, hi)")

    a, b = run(0, 50)
    if b <= 1 < lo:
        raise Mistake("fractions, not percent: multiply the rates by 100")
    if a > b:
        raise Mistake(f"lo > hi: ({a:.1f}, {b:.1f})")
    if b - a == 0:
        raise Mistake("every replicate is the same test set (interval of width 0): draw *with* replacement "
                      "(rng.integers(0, n_img, n_img))")
    if run(0, 50) != (a, b):
        raise Mistake("not seeded: two calls with seed 0 gave different intervals; draw with np.random.default_rng(seed)")
    first, second = run(0, 2000), run(1, 2000)
    if first == second:
        raise Mistake("the seed is ignored: seeds 0 and 1 gave the same interval; draw with np.random.default_rng(seed)")
    a, b = (first[0] + second[0]) / 2, (first[1] + second[1]) / 2        # two seeds: less of the bootstrap's own noise
    width = b - a
    candidates = {level: tuple(np.percentile(rates, q)) for level, q in _LEVELS.items()}
    candidates["apart"] = (lo_apart, hi_apart)
    candidates["fractions"] = tuple(np.percentile(rates, [0.025, 0.975]))
    level, (c_lo, c_hi) = min(candidates.items(), key=lambda kv: max(abs(a - kv[1][0]), abs(b - kv[1][1])))
    distance = max(abs(a - c_lo), abs(b - c_hi))
    if level == "95%" and distance <= 0.05 * ref_width:
        return "images drawn with replacement, each with all its captions, percentile interval, as `intervals.cluster_resample`."
    if level == "apart" and distance <= 0.08 * ref_width:
        # the same width comes from drawing len(hits) images per replicate; captions with outcomes of their own tell
        # the two apart: resampling them one by one is then right, while too many images still narrow the interval
        own_hits = (np.random.default_rng(13).random(len(hits)) < 0.4).astype(int)
        own_lo, own_hi = np.percentile(_fast_rates(own_hits, cap_img, 3000, False), [2.5, 97.5])
        state = np.random.get_state()
        try:
            o_lo, o_hi = _pair(_call(fn, own_hits, cap_img.copy(), 500, 0), "(lo, hi)")
        finally:
            np.random.set_state(state)
        if o_hi - o_lo < 0.7 * (own_hi - own_lo):
            raise Mistake(f"too many images per replicate: you drew about as many images as there are captions "
                          f"({len(hits)}), which narrows the interval about √5×; draw n_img = {n_img} images "
                          "(rng.integers(0, n_img, n_img)), each with all its captions")
        raise Mistake(f"captions resampled apart from their images: here an image's captions share their outcome, "
                      f"so resampling captions one by one gives an interval {ref_width / width:.1f}× too narrow "
                      f"({width:.1f} points instead of about {ref_width:.1f}); draw images, each with all its captions")
    if level == "fractions" and distance <= 0.08 * ref_width:
        raise Mistake("np.percentile takes percents: np.percentile(rates, [2.5, 97.5]), not [0.025, 0.975] "
                      "(those are np.quantile's fractions)")
    if level != "95%" and distance <= 0.08 * ref_width:
        q_lo, q_hi = _LEVELS[level]
        raise Mistake(f"a {level} interval, not a 95% one: you took the {q_lo:g} and {q_hi:g} percentiles; a 95% "
                      f"interval leaves 2.5% on each side: np.percentile(rates, [2.5, 97.5])")
    shift = (a + b) / 2 - (lo + hi) / 2
    if abs(width - ref_width) <= 0.08 * ref_width:
        raise Mistake(f"your interval ({a:.1f}, {b:.1f}) has the right width but is shifted by {shift:+.1f} points from "
                      f"the course's ({lo:.1f}, {hi:.1f}): each replicate's rate is 100 * hits[rows].mean() over the "
                      "caption rows of the drawn images, and the bounds are its percentiles, nothing added")
    narrow = "narrow" if width < ref_width else "wide"
    raise Mistake(f"interval too {narrow}: ({a:.1f}, {b:.1f}) is {width:.1f} points wide; the course's cluster "
                  f"bootstrap gives ({lo:.1f}, {hi:.1f}), {ref_width:.1f} points: draw n_img images with replacement, "
                  "each with all its captions, and take the 2.5 and 97.5 percentiles of the rates")


bootstrap_interval = _register(
    "bootstrap_interval", "06", "code", "a bootstrap that resamples images with all their captions",
    _check_bootstrap_interval,
    ["Resample what is independent: the images. Each replicate draws as many images as the test set holds, with "
     "replacement, and brings all their captions along; the interval is read off the replicates' hit rates.",
     "rng = np.random.default_rng(seed); captions_of = [np.flatnonzero(caption_image == i) for i in range(n_img)]; "
     "per replicate, drawn = rng.integers(0, n_img, n_img).",
     "rows = np.concatenate([captions_of[i] for i in drawn]); keep 100 * hits[rows].mean() per replicate; return "
     "the 2.5 and 97.5 percentiles: np.percentile(rates, [2.5, 97.5])."],
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
    ["Five captions that always agree carry the information of one. How many independent observations does "
     "caption-level resampling think it has?",
     "It counts 5 n observations where there are n, and an interval's width goes like 1 / √n."],
    "(b) about √5 ≈ 2.2× narrower: caption-level resampling counts 5 n observations where there are n.")
