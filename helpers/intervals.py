"""Step 06: how sure a retrieval number is, over the test images and over the training seeds.

Uncertainty has two sources: test sampling and training seeds. `honest_interval` (one model),
`honest_difference` (two models) and `honest_contrast` (a weighted sum of several) resample test *images*
with all their captions (`cluster_resample`; the gallery is fixed, so the ranks do not change) and add
the seed variance as a Student-t term (`t_interval`); `honest_rate_difference` does the same for rates
over cases (the pointing game). `seed_summary` is a Student-t interval over seeds alone.
`honest_test` adds the p-value of the same t statistic (`t_p_value`); `holm` corrects a family of them;
`detectable_difference` and `seeds_needed` say what an interval of this construction can resolve.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats

from .metrics import KS, check_caption_image, recalls_from_ranks


def seed_summary(values, level: float = 0.95) -> dict:
    """(n_seeds,) metric values -> mean, sample std, Student-t interval for the mean at `level`, n."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n < 2:
        raise ValueError(f"seed_summary needs at least 2 seeds to estimate a spread; got {n}")
    mean, std = float(v.mean()), float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / np.sqrt(n)
    return {"mean": mean, "std": std, "lo": mean - half, "hi": mean + half, "n": n}


def draw_images(rng: np.random.Generator, n_boot: int, n_img: int) -> np.ndarray:
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
    cap_img = check_caption_image(caption_image, n_img)
    per_img = np.bincount(cap_img, minlength=n_img)
    by_img = np.argsort(cap_img, kind="stable")                 # caption indices grouped by image
    first = np.cumsum(per_img) - per_img                         # where each image's group starts
    img_idx = draw_images(rng, n_boot, n_img)
    length = per_img[img_idx].ravel()                            # captions brought by each draw
    drawn = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)  # 0.. within a draw
    caps = by_img[np.repeat(first[img_idx].ravel(), length) + drawn]  # all replicates, concatenated
    per_rep = length.reshape(n_boot, n_img).sum(1)
    mask = np.arange(per_rep.max())[None, :] < per_rep[:, None]  # (n_boot, L), True = a real caption
    cap_idx = np.zeros(mask.shape, np.int64)
    cap_idx[mask] = caps                                         # row-major fill keeps replicates apart
    return img_idx, cap_idx, mask


def cluster_recalls(ranks_list, caption_image, img_idx, ks) -> tuple[dict, dict]:
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


def t_interval(point: float, boot: np.ndarray, seed_terms, level: float) -> tuple[float, float]:
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


def se_df(test_var: float, seed_terms) -> tuple[float, float]:
    """test variance, [(s^2 / n, n), ...] -> `t_interval`'s (se, df), for p-values and power.

    se^2 = test_var + sum of s^2 / n; Welch-Satterthwaite df, the test part counted as infinite df;
    terms with n < 2 left out. (t_interval keeps its own lines: notebook 06 shows them.)
    """
    terms = [(v, n) for v, n in seed_terms if n > 1]
    var = test_var + sum(v for v, _ in terms)
    denom = sum(v ** 2 / (n - 1) for v, n in terms)
    df = var ** 2 / denom if denom > 0 else np.inf
    return float(np.sqrt(var)), df


def t_p_value(point: float, boot: np.ndarray, seed_terms) -> float:
    """point, (n_boot,) replicates, [(s^2 / n, n), ...] -> two-sided p of "the true value is 0".

    From the statistic point / se with the se and df of `t_interval`, so p < 1 - level exactly when
    t_interval(..., level) excludes 0. With se = 0: 1 if point is 0, else 0.
    """
    se, df = se_df(float(np.var(boot, ddof=1)), seed_terms)
    if se == 0:
        return 1.0 if point == 0 else 0.0
    return float(2 * stats.t.sf(abs(point) / se, df))


def check_runs(runs, caption_image, n_boot: int, level: float) -> int:
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
    t from Student-t with Welch-Satterthwaite df (the test part counted as infinite df). The seeds are
    not resampled: a bootstrap over 3 seeds cannot show their spread.
    With one seed the seed term is absent and the interval covers test sampling only (normal quantile).
    """
    n_img = check_runs(ranks_per_seed, caption_image, n_boot, level)
    img_idx = draw_images(np.random.default_rng(seed), n_boot, n_img)  # as cluster_resample(seed) draws
    per_seed, boot = cluster_recalls(ranks_per_seed, caption_image, img_idx, ks)
    n, rows = len(ranks_per_seed), {}
    for m, v in per_seed.items():
        s2 = float(v.var(ddof=1)) if n > 1 else np.nan
        rows[m] = (float(v.mean()), np.sqrt(s2), *t_interval(float(v.mean()), boot[m], [(s2 / n, n)], level))
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
    n_img = check_runs([*a_ranks_per_seed, *b_ranks_per_seed], caption_image, n_boot, level)
    img_idx = draw_images(np.random.default_rng(seed), n_boot, n_img)  # the same images for A and B
    a_seed, a_boot = cluster_recalls(a_ranks_per_seed, caption_image, img_idx, ks)
    b_seed, b_boot = cluster_recalls(b_ranks_per_seed, caption_image, img_idx, ks)
    n_a, n_b, rows = len(a_ranks_per_seed), len(b_ranks_per_seed), {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for m in a_seed:
            a, b = float(a_seed[m].mean()), float(b_seed[m].mean())
            va = float(a_seed[m].var(ddof=1)) / n_a if n_a > 1 else 0.0   # squared standard errors
            vb = float(b_seed[m].var(ddof=1)) / n_b if n_b > 1 else 0.0
            lo, hi = t_interval(a - b, a_boot[m] - b_boot[m], [(va, n_a), (vb, n_b)], level)
            if a > 0 and b > 0:
                log_lo, log_hi = t_interval(np.log(a / b), np.log(a_boot[m] / b_boot[m]),
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
    t = honest_test(terms, caption_image, metric, n_boot, seed, level, ks)
    return t["estimate"], t["lo"], t["hi"]


def honest_test(terms, caption_image, metric: str = "rsum", n_boot: int = 1000, seed: int = 0,
                level: float = 0.95, ks=KS) -> dict:
    """[(weight, per-seed [(img_rank, cap_rank), ...]), ...], (N_cap,) caption images -> `honest_contrast`'s
    estimate and interval with its two-sided p-value and the parts of its standard error.

    A difference A - B is [(1, A), (-1, B)]. -> {'estimate', 'lo', 'hi', 'p' (`t_p_value`: p < 1 - level
    exactly when [lo, hi] excludes 0), 'se', 'df', 'test_sd' (SD of the contrast over the resampled test
    images), 'means', 'seed_sd' (each term's metric: mean and SD over its seeds, NaN with one seed),
    'seeds' (each term's number of seeds)}.
    """
    n_img = check_runs([r for _, runs in terms for r in runs], caption_image, n_boot, level)
    img_idx = draw_images(np.random.default_rng(seed), n_boot, n_img)
    point, boot, seed_terms, means, sds = 0.0, np.zeros(n_boot), [], [], []
    for weight, runs in terms:
        per_seed, reps = cluster_recalls(runs, caption_image, img_idx, ks)
        v, n = per_seed[metric], len(runs)
        point, boot = point + weight * float(v.mean()), boot + weight * reps[metric]
        seed_terms.append((weight ** 2 * float(v.var(ddof=1)) / n if n > 1 else 0.0, n))
        means.append(float(v.mean()))
        sds.append(float(v.std(ddof=1)) if n > 1 else np.nan)
    lo, hi = t_interval(point, boot, seed_terms, level)
    se, df = se_df(float(np.var(boot, ddof=1)), seed_terms)
    return {"estimate": point, "lo": lo, "hi": hi, "p": t_p_value(point, boot, seed_terms), "se": float(se),
            "df": float(df), "test_sd": float(np.std(boot, ddof=1)), "means": means, "seed_sd": sds,
            "seeds": [len(runs) for _, runs in terms]}


def holm(p_values, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(m,) p-values of one family -> (m,) Holm-adjusted p-values, (m,) bool rejected at familywise `alpha`.

    Holm's step-down: sort p ascending, p_(i) is rejected while p_(j) <= alpha / (m - j + 1) for every
    j <= i; the adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j)), so rejected == adjusted
    <= alpha. Written here because scipy (1.17) has no Holm (`false_discovery_control` is BH/BY, which
    control the false discovery rate, not the familywise error) and statsmodels is not a dependency.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"holm needs a non-empty 1-D list of p-values (one family); got shape {p.shape}")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p-values must be numbers in [0, 1]; got {p.tolist()} (a NaN p: a comparison without "
                         "data, leave it out of the family)")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha is a familywise error rate in (0, 1); got {alpha}")
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return adjusted, adjusted <= alpha


def t_power(effect: float, se: float, df: float, alpha: float = 0.05) -> float:
    """Power of the two-sided t test at `alpha` (the statistic estimate / se with `df`) when the true value
    is `effect`: P(|T| > t_crit) for T ~ noncentral t(df, effect / se); normal where df is infinite."""
    if se <= 0:
        raise ValueError(f"se must be > 0 to compute a power; got {se}")
    nc = effect / se
    if np.isinf(df):
        c = float(stats.norm.ppf(1 - alpha / 2))
        return float(stats.norm.sf(c - nc) + stats.norm.cdf(-c - nc))
    c = float(stats.t.ppf(1 - alpha / 2, df))
    return float(stats.nct.sf(c, df, nc) + stats.nct.sf(c, df, -nc))   # P(T < -c) as P(-T > c): nct.cdf
                                                                            # gives NaN far in its lower tail


def _check_sds(sds, n_a, n_b, alpha, power):
    if any(not np.isfinite(s) or s < 0 for s in sds):
        raise ValueError(f"SDs must be finite and >= 0; got {list(sds)} (a NaN seed SD: a model with one seed, "
                         "train at least 2 to measure it)")
    if min(n_a, n_b) < 2:
        raise ValueError(f"need at least 2 seeds per model; got {n_a} and {n_b}")
    if not 0 < alpha < power < 1:
        raise ValueError(f"need 0 < alpha < power < 1; got alpha {alpha}, power {power}")


def detectable_difference(seed_sd_a: float, seed_sd_b: float, test_sd: float, n_a: int, n_b: int,
                          alpha: float = 0.05, power: float = 0.8) -> float:
    """Seed SDs of A and B, test-sampling SD of A - B, seeds of each -> the smallest true |A - B| the
    two-sided `honest_difference` interval excludes 0 for with probability `power`.

    se^2 = test_sd^2 + s_A^2 / n_A + s_B^2 / n_B and df as `t_interval` computes them (`se_df`); the
    effect solves `t_power`(effect, se, df, alpha) = power. 0 when se is 0. n = np.inf gives the floor
    that test sampling alone sets.
    """
    _check_sds((seed_sd_a, seed_sd_b, test_sd), n_a, n_b, alpha, power)
    se, df = se_df(test_sd ** 2, [(seed_sd_a ** 2 / n_a, n_a), (seed_sd_b ** 2 / n_b, n_b)])
    return detectable_contrast(se, df, alpha, power)


def detectable_contrast(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The standard error and df of any `honest_test` contrast -> the smallest true |value| its two-sided
    interval excludes 0 for with probability `power` (`t_power`); 0 when se is 0."""
    if not np.isfinite(se) or se < 0 or not df > 0:
        raise ValueError(f"se must be finite and >= 0 and df > 0; got se {se}, df {df}")
    if not 0 < alpha < power < 1:
        raise ValueError(f"need 0 < alpha < power < 1; got alpha {alpha}, power {power}")
    if se == 0:
        return 0.0
    top = 2 * (stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se   # power there is > `power`
    return float(optimize.brentq(lambda d: t_power(d, se, df, alpha) - power, 0.0, top, xtol=1e-10 * se))


def seeds_needed(effect: float, seed_sd_a: float, seed_sd_b: float, test_sd: float, alpha: float = 0.05,
                 power: float = 0.8, max_seeds: int = 10_000) -> int | None:
    """-> the fewest seeds n (each model, n >= 2) at which `detectable_difference` <= |effect|; None when
    even `max_seeds` do not reach it (the test-sampling SD alone sets a floor the seeds cannot lower)."""
    def ok(n):
        return detectable_difference(seed_sd_a, seed_sd_b, test_sd, n, n, alpha, power) <= abs(effect)

    _check_sds((seed_sd_a, seed_sd_b, test_sd), 2, 2, alpha, power)
    if not ok(max_seeds):
        return None
    lo, hi = 1, max_seeds                       # ok(hi); not ok(lo) or lo < 2: more seeds never hurt
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if mid >= 2 and ok(mid) else (mid, hi)
    return hi


def honest_rate_difference(a_runs, a_col: str, b_runs=None, b_col: str | None = None, n_boot: int = 2000,
                           seed: int = 0, level: float = 0.95) -> dict:
    """Per-seed case tables (DataFrames with image_id and 0/1 or rate columns) -> the difference of two
    case rates, mean(a_col over A's cases) - mean(b_col over B's cases), averaged over seeds, with a
    95% interval: se^2 = var over image-cluster bootstrap replicates (an image's cases together, the
    same images for A and B) + s_A^2 / n_A (+ s_B^2 / n_B) for the seeds; Student-t, Welch df.
    `b_runs=None` compares two columns of the same runs (paired per seed: one seed term). `level`: the
    interval's coverage (1 - 0.05 / m for a Bonferroni family of m). p: two-sided, of "no difference"
    (`t_p_value`, below 1 - level exactly when the interval excludes 0).
    -> {'diff', 'lo', 'hi', 'p', 'seeds_a', 'seeds_b'}.
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
    idx = draw_images(np.random.default_rng(seed), n_boot, len(n))
    total = n.sum()
    point = sum(float(g.mean(0).sum() / total) for g in groups)
    boot = sum(g.mean(0)[idx].sum(1) / n[idx].sum(1) for g in groups)
    terms = []
    for g in groups:
        per_seed = g.sum(1) / total
        k = len(per_seed)
        terms.append((float(per_seed.var(ddof=1)) / k if k > 1 else 0.0, k))
    lo, hi = t_interval(point, boot, terms, level)
    return {"diff": point, "lo": lo, "hi": hi, "p": t_p_value(point, boot, terms), "seeds_a": len(groups[0]),
            "seeds_b": len(groups[-1])}
