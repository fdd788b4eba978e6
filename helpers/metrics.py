"""Cross-modal retrieval metrics for the COCO 1K protocol, with uncertainty.

Conventions: `scores` is (N_img, N_cap), higher = more similar; `caption_image` is (N_cap,) long,
the row of each caption's image (5 captions per image, a few have 6). Torch or numpy accepted.

Ranks are 0-based: the number of *wrong* items scored at least as high as the correct one.
Image->text (i2t) ranks the best of the image's own captions among all captions;
text->image (t2i) ranks the caption's image among all images.
Tie rule (pessimistic): a wrong item whose score *equals* the correct one counts as ranked ahead,
so a constant score matrix gets the worst possible rank, never a lucky R@1.

Uncertainty has two sources: test sampling and training seeds. `honest_interval` (one model) and
`honest_difference` (two models) resample test *images* with all their captions (`cluster_resample`;
the gallery is fixed, so the ranks do not change) and add the seed variance as a Student-t term;
`honest_rate_difference` does the same for rates over cases (the pointing game). `seed_summary` is
a Student-t interval over seeds alone. `verdict` and `verdict_kept` turn an interval into a word.
`paired_difference`, the course's first procedure (queries and a handful of seeds resampled), is
kept only so `tests/test_metrics.py` can show that it under-covers.
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


def i2t_ranks(scores: torch.Tensor, cap_img: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """(N_img, N_cap) scores, (N_cap,) caption images -> (N_img,) rank of each image's best own caption:
    how many *other* captions score at least as high (ties count against the model), 0 = first."""
    out = []
    for start in range(0, scores.shape[0], chunk):
        rows = torch.arange(start, min(start + chunk, scores.shape[0]), device=scores.device)
        s = scores[rows]                                              # (c, N_cap)
        own = cap_img[None, :] == rows[:, None]                       # (c, N_cap)
        best = s.masked_fill(~own, float("-inf")).amax(1, keepdim=True)
        out.append(((s >= best) & ~own).sum(1).cpu())
    return torch.cat(out)


def t2i_ranks(scores: torch.Tensor, cap_img: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """(N_img, N_cap) scores, (N_cap,) caption images -> (N_cap,) rank of each caption's image: how many
    *other* images score at least as high with the caption (ties count against the model), 0 = first."""
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
    return i2t_ranks(scores, cap_img, chunk).numpy(), t2i_ranks(scores, cap_img, chunk).numpy()


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

    Superseded by `honest_difference`: resampling 3 seeds covers the true difference far less than
    95% of the time (measured in tests/test_metrics.py). Kept for that comparison.

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
    "not supported: credibly worse" when the whole interval is below zero.
    Without a claimed size: "A better" if lo > 0, "A credibly worse" if hi < 0, else "no credible difference".
    """
    if claimed is not None and claimed <= 0:
        raise ValueError(f"claimed must be a positive improvement, got {claimed}; "
                         "for 'no loss' claims use verdict_kept(lo, hi, margin)")
    if claimed is None:
        return "A better" if lo > 0 else "A credibly worse" if hi < 0 else "no credible difference"
    if hi < 0:
        return "not supported: credibly worse"
    return "supported" if lo > 0 and hi >= claimed else "not supported" if hi < claimed else "inconclusive"


def verdict_kept(lo: float, hi: float, margin: float) -> str:
    """95% interval [lo, hi] for A - B, margin >= 0 -> verdict on "A keeps B's performance".

    Non-inferiority: supported if lo > -margin (no credible loss larger than the margin);
    not supported if hi < -margin (a loss larger than the margin is credible); otherwise inconclusive.
    """
    if margin < 0:
        raise ValueError(f"margin is a tolerated loss in points and must be >= 0, got {margin}")
    return "supported" if lo > -margin else "not supported" if hi < -margin else "inconclusive"


def _draw_images(rng: np.random.Generator, n_boot: int, n_img: int) -> np.ndarray:
    """-> (n_boot, N_img) test images drawn with replacement (shared by cluster_resample and honest_*)."""
    return rng.integers(0, n_img, (n_boot, n_img))


def cluster_resample(rng, n_boot: int, caption_image, n_img: int):
    """(N_cap,) caption images -> (n_boot, N_img) image, (n_boot, L) caption indices, (n_boot, L) bool mask.

    Resamples test *images* with replacement; each drawn image brings all its captions, so both
    retrieval directions move together and the captions of one image (which share its difficulty)
    are never split. Replicate b's caption queries are cap_idx[b][mask[b]]: the captions of
    img_idx[b], image by image, one copy per draw. Rows are padded to the longest replicate, L;
    padding has index 0 and mask False (a weight of 0). `rng`: a numpy Generator or a seed.
    """
    rng = np.random.default_rng(rng)
    cap_img = np.asarray(caption_image, dtype=np.int64)
    if (cap_img.ndim != 1 or cap_img.size == 0 or cap_img.min() < 0 or cap_img.max() >= n_img
            or (np.bincount(cap_img, minlength=n_img) == 0).any()):
        raise ValueError("caption_image must give each caption an image row in [0, n_img), "
                         "and every image needs at least one caption")
    per_img = np.bincount(cap_img, minlength=n_img)
    by_img = np.argsort(cap_img, kind="stable")                 # caption indices grouped by image
    first = np.cumsum(per_img) - per_img                         # where each image's group starts
    img_idx = _draw_images(rng, n_boot, n_img)
    length = per_img[img_idx].ravel()                            # captions brought by each draw
    drawn = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)  # 0.. within a draw
    caps = by_img[np.repeat(first[img_idx].ravel(), length) + drawn]  # all replicates, concatenated
    per_rep = length.reshape(n_boot, n_img).sum(1)
    mask = np.arange(per_rep.max())[None, :] < per_rep[:, None]  # (n_boot, L), True = a real caption
    cap_idx = np.zeros(mask.shape, np.int64)
    cap_idx[mask] = caps                                         # row-major fill keeps replicates apart
    return img_idx, cap_idx, mask


def _cluster_recalls(ranks_list, caption_image, img_idx, ks) -> tuple[dict, dict]:
    """Per-seed (img_rank, cap_rank), (N_cap,) caption images, (n_boot, N_img) drawn images ->
    {metric: (n_seeds,) full-test values}, {metric: (n_boot,) seed-averaged replicates}.

    Same numbers as recalls_from_ranks on the `cluster_resample` queries, computed per image: a
    replicate's t2i hits are the sum over its drawn images of each image's own-caption hits, so
    (times each image is drawn) @ (per-image hits, averaged over seeds) gives every replicate at once.
    """
    n_boot, n_img = img_idx.shape
    cap_img = np.asarray(caption_image, dtype=np.int64)
    kk = np.asarray(ks)
    per_img = np.bincount(cap_img, minlength=n_img)
    hits = np.zeros((n_img, 2 * len(kk)))                        # per image: i2t hit, own-caption t2i hits
    for img_rank, cap_rank in ranks_list:
        hits[:, :len(kk)] += np.asarray(img_rank)[:, None] < kk
        for j, k in enumerate(kk):
            hits[:, len(kk) + j] += np.bincount(cap_img, np.asarray(cap_rank) < k, minlength=n_img)
    hits /= len(ranks_list)
    drawn = np.bincount((img_idx + n_img * np.arange(n_boot)[:, None]).ravel(),
                        minlength=n_boot * n_img).reshape(n_boot, n_img)  # times each image is drawn
    rep = drawn @ hits
    rep[:, :len(kk)] *= 100.0 / n_img
    rep[:, len(kk):] *= 100.0 / (drawn @ per_img)[:, None]
    names = [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in ks]
    boot = dict(zip(names, rep.T))
    boot["rsum"] = rep.sum(1)
    full = [recalls_from_ranks(i, c, ks) for i, c in ranks_list]
    return {m: np.array([f[m] for f in full], dtype=float) for m in full[0]}, boot


def _t_interval(point: float, boot: np.ndarray, seed_terms, level: float) -> tuple[float, float]:
    """point, (n_boot,) replicates, [(s^2 / n, n), ...] -> Student-t interval point ± t * se.

    se^2 = var(replicates) + sum of s^2 / n; Welch-Satterthwaite degrees of freedom, with the test
    (bootstrap) part counted as having infinite df; terms with n < 2 carry no seed information and
    are left out.
    """
    terms = [(v, n) for v, n in seed_terms if n > 1]
    var = float(np.var(boot, ddof=1)) + sum(v for v, _ in terms)
    denom = sum(v ** 2 / (n - 1) for v, n in terms)
    df = var ** 2 / denom if denom > 0 else np.inf
    half = float(stats.t.ppf(0.5 + level / 2, df)) * np.sqrt(var)
    return point - half, point + half


def _check_runs(runs, caption_image, n_boot: int, level: float) -> int:
    """Raise ValueError unless every run is ranked on the test set of caption_image; -> N_img."""
    shapes = {(len(i), len(c)) for i, c in runs}
    if len(shapes) != 1:
        raise ValueError(f"all runs must be ranked on the same test set; got (N_img, N_cap) {shapes}")
    (n_img, n_cap), = shapes
    if n_cap != len(caption_image):
        raise ValueError(f"runs rank {n_cap} captions but caption_image has {len(caption_image)}")
    if n_boot < 2 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 2 and 0 < level < 1; got {n_boot} and {level}")
    return n_img


def honest_interval(ranks_per_seed, caption_image, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95, ks=KS) -> pd.DataFrame:
    """Per-seed [(img_rank, cap_rank), ...] of one model, (N_cap,) caption images -> [mean, std, lo, hi].

    mean: the mean over seeds of the full-test metric; std: its sample std over seeds (NaN with one
    seed). lo/hi: mean ± t * se with se^2 = var_test + s_seed^2 / n_seeds, where var_test is the
    variance of the seed-averaged metric over `cluster_resample` replicates (test images drawn with
    all their captions; the gallery, and so the ranks, stay fixed) and s_seed the std over seeds;
    t from Student-t with Welch-Satterthwaite df (the test part counted as infinite df). Unlike
    `paired_difference`, the seeds are not resampled: a bootstrap over 3 seeds cannot show their spread.
    With one seed the seed term is absent and the interval covers test sampling only (normal quantile).
    """
    n_img = _check_runs(ranks_per_seed, caption_image, n_boot, level)
    img_idx = _draw_images(np.random.default_rng(seed), n_boot, n_img)  # as cluster_resample(seed) draws
    per_seed, boot = _cluster_recalls(ranks_per_seed, caption_image, img_idx, ks)
    n, rows = len(ranks_per_seed), {}
    for m, v in per_seed.items():
        s2 = float(v.var(ddof=1)) if n > 1 else np.nan
        rows[m] = (float(v.mean()), np.sqrt(s2), *_t_interval(float(v.mean()), boot[m], [(s2 / n, n)], level))
    return pd.DataFrame.from_dict(rows, orient="index", columns=["mean", "std", "lo", "hi"])


def honest_difference(a_ranks_per_seed, b_ranks_per_seed, caption_image, n_boot: int = 1000,
                      seed: int = 0, level: float = 0.95, ks=KS) -> pd.DataFrame:
    """Per-seed [(img_rank, cap_rank), ...] for A and B, (N_cap,) caption images -> [A, B, diff, lo, hi, rel_*].

    A, B: means over seeds of the full-test metric; diff = A - B in points; rel_% = 100 * diff / B.
    lo/hi: diff ± t * se, se^2 = var_test + s_A^2 / n_A + s_B^2 / n_B. var_test is the variance of
    (seed-averaged A - seed-averaged B) over `cluster_resample` replicates, the same resampled images
    for A and B (paired test sets); the seeds of A and B are independent, so their terms add; t from
    Student-t with Welch-Satterthwaite df (the test part counted as infinite df).
    rel_lo/rel_hi: the same construction on the log ratio log(A / B), the seed terms by the delta
    method (s^2 / (n * mean^2)), mapped back by 100 * (exp(.) - 1): an asymmetric interval that
    stays above -100 %. NaN where B is 0 (or A is 0, or a replicate is 0).
    A model with one seed contributes no seed term: its seed spread is unknown and left out (with one
    seed each, the interval covers test sampling only).
    """
    n_img = _check_runs([*a_ranks_per_seed, *b_ranks_per_seed], caption_image, n_boot, level)
    img_idx = _draw_images(np.random.default_rng(seed), n_boot, n_img)  # the same images for A and B
    a_seed, a_boot = _cluster_recalls(a_ranks_per_seed, caption_image, img_idx, ks)
    b_seed, b_boot = _cluster_recalls(b_ranks_per_seed, caption_image, img_idx, ks)
    n_a, n_b, rows = len(a_ranks_per_seed), len(b_ranks_per_seed), {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for m in a_seed:
            a, b = float(a_seed[m].mean()), float(b_seed[m].mean())
            va = float(a_seed[m].var(ddof=1)) / n_a if n_a > 1 else 0.0   # squared standard errors
            vb = float(b_seed[m].var(ddof=1)) / n_b if n_b > 1 else 0.0
            lo, hi = _t_interval(a - b, a_boot[m] - b_boot[m], [(va, n_a), (vb, n_b)], level)
            if a > 0 and b > 0:
                log_lo, log_hi = _t_interval(np.log(a / b), np.log(a_boot[m] / b_boot[m]),
                                             [(va / a ** 2, n_a), (vb / b ** 2, n_b)], level)
                rel = (100 * (a - b) / b, 100 * np.expm1(log_lo), 100 * np.expm1(log_hi))
            else:
                rel = (100 * (a - b) / b if b else np.nan, np.nan, np.nan)
            rows[m] = (a, b, a - b, lo, hi, *rel)
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=["A", "B", "diff", "lo", "hi", "rel_%", "rel_lo", "rel_hi"])


def honest_contrast(terms, caption_image, metric: str = "rsum", n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95, ks=KS) -> tuple[float, float, float]:
    """[(weight, per-seed [(img_rank, cap_rank), ...]), ...], (N_cap,) caption images -> (point, lo, hi) of
    sum_j weight_j * mean_j of `metric`, e.g. a change of a gap: (+1, A@100%), (-1, B@100%), (-1, A@25%), (+1, B@25%).

    The interval as in `honest_difference`: the same resampled test images for every term, and one
    Student-t seed term weight^2 * s^2 / n per term (the terms' seeds are independent runs).
    """
    n_img = _check_runs([r for _, runs in terms for r in runs], caption_image, n_boot, level)
    img_idx = _draw_images(np.random.default_rng(seed), n_boot, n_img)
    point, boot, seed_terms = 0.0, np.zeros(n_boot), []
    for weight, runs in terms:
        per_seed, reps = _cluster_recalls(runs, caption_image, img_idx, ks)
        v, n = per_seed[metric], len(runs)
        point, boot = point + weight * float(v.mean()), boot + weight * reps[metric]
        seed_terms.append((weight ** 2 * float(v.var(ddof=1)) / n if n > 1 else 0.0, n))
    return (point, *_t_interval(point, boot, seed_terms, level))


def honest_rate_difference(a_runs, a_col: str, b_runs=None, b_col: str | None = None, n_boot: int = 2000,
                           seed: int = 0, level: float = 0.95) -> dict:
    """Per-seed case tables (DataFrames with image_id and 0/1 or rate columns) -> the difference of two
    case rates, mean(a_col over A's cases) - mean(b_col over B's cases), averaged over seeds, with a
    95% interval: se^2 = var over image-cluster bootstrap replicates (an image's cases together, the
    same images for A and B) + s_A^2 / n_A (+ s_B^2 / n_B) for the seeds; Student-t, Welch df.
    `b_runs=None` compares two columns of the same runs (paired per seed: one seed term).
    -> {'diff', 'lo', 'hi', 'seeds_a', 'seeds_b'}.
    """
    if any(df.empty for df in [*a_runs, *(b_runs or [])]):
        raise ValueError("no cases to compare: a run's case table is empty (for the pointing game: no caption "
                         "word names a category boxed in its image)")

    def per_image(runs, col):                              # (seeds, images) summed column, (images,) counts
        sums = [df.groupby("image_id")[col].sum().astype(float) for df in runs]
        index = sums[0].index
        counts = runs[0].groupby("image_id").size().reindex(index).to_numpy(float)
        return np.stack([s.reindex(index).to_numpy() for s in sums]), counts, index

    if b_runs is None:
        runs = [df.assign(_gap=df[a_col].astype(float) - df[b_col].astype(float)) for df in a_runs]
        g, n, _ = per_image(runs, "_gap")
        groups = [g]
    else:
        ga, n, index = per_image(a_runs, a_col)
        gb, nb, index_b = per_image(b_runs, b_col)
        if not index.equals(index_b) or not np.array_equal(n, nb):
            raise ValueError("A and B must be scored on the same cases (same images, same words)")
        groups = [ga, -gb]
    idx = _draw_images(np.random.default_rng(seed), n_boot, len(n))
    total = n.sum()
    point = sum(float(g.mean(0).sum() / total) for g in groups)
    boot = sum(g.mean(0)[idx].sum(1) / n[idx].sum(1) for g in groups)
    terms = []
    for g in groups:
        per_seed = g.sum(1) / total
        k = len(per_seed)
        terms.append((float(per_seed.var(ddof=1)) / k if k > 1 else 0.0, k))
    lo, hi = _t_interval(point, boot, terms, level)
    return {"diff": point, "lo": lo, "hi": hi, "seeds_a": len(groups[0]), "seeds_b": len(groups[-1])}
