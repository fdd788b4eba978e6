"""Cross-modal retrieval metrics for the COCO 1K protocol, with uncertainty.

Conventions: `scores` is (N_img, N_cap), higher = more similar; `caption_image` is (N_cap,) long,
the row of each caption's image (5 captions per image, a few have 6). Torch or numpy accepted.

Ranks are 0-based: the number of *wrong* items scored at least as high as the correct one.
Image->text (i2t) ranks the best of the image's own captions among all captions;
text->image (t2i) ranks the caption's image among all images.
Tie rule (pessimistic): a wrong item whose score *equals* the correct one counts as ranked ahead,
so a constant score matrix gets the worst possible rank, never a lucky R@1.

Uncertainty has two sources: test sampling (`bootstrap`: resample the queries; the gallery is
fixed, so the ranks do not change) and training seeds (`seed_summary`: Student-t interval).
`paired_difference` combines both to compare two models; `verdict` and `verdict_kept` turn its
interval into a word.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats

KS = (1, 5, 10)


def _check(scores: torch.Tensor, cap_img: torch.Tensor) -> None:
    """Raise ValueError if the scores or the caption -> image indices do not fit together."""
    if scores.ndim != 2 or cap_img.shape != (scores.shape[1],):
        raise ValueError(f"scores must be (N_img, N_cap) and caption_image (N_cap,); "
                         f"got {tuple(scores.shape)} and {tuple(cap_img.shape)}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; a NaN would silently rank as a miss or a hit")
    n_img = scores.shape[0]
    if (cap_img.numel() == 0 or cap_img.min() < 0 or cap_img.max() >= n_img
            or (torch.bincount(cap_img.cpu(), minlength=n_img) == 0).any()):
        raise ValueError("caption_image must give each caption an image row in [0, N_img), "
                         "and every image needs at least one caption")


def _i2t_ranks(scores: torch.Tensor, cap_img: torch.Tensor, chunk: int) -> torch.Tensor:
    """(N_img, N_cap) scores, (N_cap,) caption images -> (N_img,) rank of each image's best own caption."""
    out = []
    for start in range(0, scores.shape[0], chunk):
        rows = torch.arange(start, min(start + chunk, scores.shape[0]), device=scores.device)
        s = scores[rows]                                              # (c, N_cap)
        own = cap_img[None, :] == rows[:, None]                       # (c, N_cap)
        best = s.masked_fill(~own, float("-inf")).amax(1, keepdim=True)
        out.append(((s >= best) & ~own).sum(1).cpu())
    return torch.cat(out)


def _t2i_ranks(scores: torch.Tensor, cap_img: torch.Tensor, chunk: int) -> torch.Tensor:
    """(N_img, N_cap) scores, (N_cap,) caption images -> (N_cap,) rank of each caption's image."""
    out, images = [], torch.arange(scores.shape[0], device=scores.device)
    for start in range(0, scores.shape[1], chunk):
        s = scores[:, start:start + chunk]                            # (N_img, c)
        img = cap_img[start:start + chunk]                            # (c,)
        correct = s[img, torch.arange(len(img), device=s.device)]     # (c,)
        out.append(((s >= correct) & (images[:, None] != img)).sum(0).cpu())
    return torch.cat(out)


def ranks(scores, caption_image, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(N_img, N_cap) scores, (N_cap,) caption images -> (N_img,) i2t, (N_cap,) t2i 0-based ranks."""
    scores = torch.as_tensor(scores).float()
    cap_img = torch.as_tensor(caption_image).long().to(scores.device)
    _check(scores, cap_img)
    return (_i2t_ranks(scores, cap_img, chunk).numpy(),
            _t2i_ranks(scores, cap_img, chunk).numpy())


def recalls_from_ranks(img_rank, cap_rank, ks=KS) -> dict:
    """(..., N_img), (..., N_cap) ranks -> {"i2t_R@k", "t2i_R@k", "rsum"}, percent, shape (...)."""
    out = {}
    for direction, r in (("i2t", np.asarray(img_rank)), ("t2i", np.asarray(cap_rank))):
        for k in ks:
            out[f"{direction}_R@{k}"] = (r < k).sum(axis=-1) * 100.0 / r.shape[-1]
    out["rsum"] = sum(out.values())
    return out


def median_rank(rank) -> float:
    """(N,) 0-based ranks -> 1-based median rank, floor(median) + 1 as in the VSE++/SCAN code."""
    return float(np.floor(np.median(np.asarray(rank))) + 1)


def recall_table(scores, caption_image, ks=KS) -> dict:
    """(N_img, N_cap) scores, (N_cap,) caption images -> R@k (percent), rsum, i2t/t2i medr (1-based)."""
    img_rank, cap_rank = ranks(scores, caption_image)
    table = {name: float(v) for name, v in recalls_from_ranks(img_rank, cap_rank, ks).items()}
    table["i2t_medr"], table["t2i_medr"] = median_rank(img_rank), median_rank(cap_rank)
    return table


def _resample(rng: np.random.Generator, n_boot: int, n_img: int, n_cap: int):
    """-> (n_boot, N_img) image and (n_boot, N_cap) caption query indices, drawn with replacement."""
    return rng.integers(0, n_img, (n_boot, n_img)), rng.integers(0, n_cap, (n_boot, n_cap))


def _interval(samples: np.ndarray) -> tuple[float, float]:
    """(n_boot,) replicates -> (2.5, 97.5) percentiles: the 95% percentile interval."""
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap(img_rank, cap_rank, n_boot: int = 1000, seed: int = 0, ks=KS) -> pd.DataFrame:
    """(N_img,), (N_cap,) ranks -> metrics x [point, mean, lo, hi]: 95% interval over resampled queries."""
    img_rank, cap_rank = np.asarray(img_rank), np.asarray(cap_rank)
    ii, cc = _resample(np.random.default_rng(seed), n_boot, len(img_rank), len(cap_rank))
    point = recalls_from_ranks(img_rank, cap_rank, ks)
    boot = recalls_from_ranks(img_rank[ii], cap_rank[cc], ks)          # each (n_boot,)
    rows = {m: (float(point[m]), float(boot[m].mean()), *_interval(boot[m])) for m in point}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["point", "mean", "lo", "hi"])


def seed_summary(values) -> dict:
    """(n_seeds,) metric values -> mean, sample std, 95% Student-t interval for the mean, n."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n < 2:
        raise ValueError(f"seed_summary needs at least 2 seeds to estimate a spread; got {n}")
    mean, std = float(v.mean()), float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / np.sqrt(n)
    return {"mean": mean, "std": std, "lo": mean - half, "hi": mean + half, "n": n}


def _seed_metrics(ranks_list, ii, cc, ks, rng) -> tuple[dict, dict]:
    """Per-seed (img_rank, cap_rank) + query indices -> point (mean over seeds), (n_boot,) replicates."""
    full = [recalls_from_ranks(i, c, ks) for i, c in ranks_list]
    per_seed = [recalls_from_ranks(np.asarray(i)[ii], np.asarray(c)[cc], ks) for i, c in ranks_list]
    pick = rng.integers(0, len(ranks_list), (len(ii), len(ranks_list)))  # resampled seeds per replicate
    point = {m: float(np.mean([f[m] for f in full])) for m in full[0]}
    boot = {m: np.take_along_axis(np.stack([p[m] for p in per_seed], 1), pick, 1).mean(1)
            for m in per_seed[0]}
    return point, boot


def paired_difference(a_ranks_list, b_ranks_list, n_boot: int = 1000, seed: int = 0,
                      ks=KS) -> pd.DataFrame:
    """Per-seed [(img_rank, cap_rank), ...] for A and B -> metrics x [A, B, diff, lo, hi, rel_%, ...].

    A, B: metric means over seeds; diff = A - B in points, lo/hi its 95% interval; rel_% = 100 *
    diff / B with rel_lo/rel_hi. Each bootstrap replicate resamples the test
    queries (the same ones for A and B: paired) and, per model, the seeds with replacement; the
    intervals are the 2.5/97.5 percentiles of the replicate differences. With only a few seeds the
    seed part of the interval is itself uncertain: read it next to `seed_summary`.
    """
    shapes = {(len(i), len(c)) for i, c in [*a_ranks_list, *b_ranks_list]}
    if len(shapes) != 1:
        raise ValueError(f"all runs must be ranked on the same test set; got (N_img, N_cap) {shapes}")
    rng = np.random.default_rng(seed)
    ii, cc = _resample(rng, n_boot, *shapes.pop())
    a_point, a_boot = _seed_metrics(a_ranks_list, ii, cc, ks, rng)
    b_point, b_boot = _seed_metrics(b_ranks_list, ii, cc, ks, rng)
    rows = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for m in a_point:
            diff, rel = a_point[m] - b_point[m], 100 * (a_boot[m] - b_boot[m]) / b_boot[m]
            rows[m] = (a_point[m], b_point[m], diff, *_interval(a_boot[m] - b_boot[m]),
                       100 * diff / b_point[m] if b_point[m] else np.nan, *_interval(rel))
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=["A", "B", "diff", "lo", "hi", "rel_%", "rel_lo", "rel_hi"])


def verdict(lo: float, hi: float, claimed: float | None = None) -> str:
    """95% interval [lo, hi] for A - B -> "supported" / "not supported" / "inconclusive".

    With a claimed improvement c > 0: supported if lo > 0 and hi >= c (a real gain, and c is
    plausible); not supported if hi < c (the whole interval is below c: the true gain is credibly
    smaller than claimed, or absent); otherwise inconclusive.
    Without a claimed size: supported if lo > 0, not supported if hi <= 0, otherwise inconclusive.
    """
    if claimed is not None and claimed <= 0:
        raise ValueError(f"claimed must be a positive improvement, got {claimed}; "
                         "for 'no loss' claims use verdict_kept(lo, hi, margin)")
    if claimed is None:
        return "supported" if lo > 0 else "not supported" if hi <= 0 else "inconclusive"
    return "supported" if lo > 0 and hi >= claimed else "not supported" if hi < claimed else "inconclusive"


def verdict_kept(lo: float, hi: float, margin: float) -> str:
    """95% interval [lo, hi] for A - B, margin >= 0 -> verdict on "A keeps B's performance".

    Non-inferiority: supported if lo > -margin (no credible loss larger than the margin);
    not supported if hi < -margin (a loss larger than the margin is credible); otherwise inconclusive.
    """
    if margin < 0:
        raise ValueError(f"margin is a tolerated loss in points and must be >= 0, got {margin}")
    return "supported" if lo > -margin else "not supported" if hi < -margin else "inconclusive"


def model_interval(ranks_list, n_boot: int = 1000, seed: int = 0, ks=KS) -> pd.DataFrame:
    """Per-seed [(img_rank, cap_rank), ...] of one model -> metrics x [mean, std, lo, hi].

    mean and std (sample) over the seeds; lo/hi a 95% interval from a bootstrap that resamples the
    test queries and the seeds together, as `paired_difference` does for a difference.
    """
    rng = np.random.default_rng(seed)
    ii, cc = _resample(rng, n_boot, len(ranks_list[0][0]), len(ranks_list[0][1]))
    point, boot = _seed_metrics(ranks_list, ii, cc, ks, rng)
    per_seed = [recalls_from_ranks(i, c, ks) for i, c in ranks_list]
    rows = {m: (point[m], float(np.std([p[m] for p in per_seed], ddof=1)) if len(per_seed) > 1 else np.nan,
                *_interval(boot[m])) for m in point}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["mean", "std", "lo", "hi"])
