"""Retrieval metrics: hand-computed ranks, the pessimistic tie rule, a brute-force cross-check, intervals."""
import numpy as np
import pytest
import torch

from helpers import metrics

# 3 images x 6 captions, two captions per image.
CAP_IMG = [0, 0, 1, 1, 2, 2]
SCORES = [
    #  c0   c1   c2   c3   c4   c5
    [0.9, 0.1, 0.8, 0.2, 0.3, 0.4],  # i0: best own 0.9 (c0); no wrong caption >= 0.9     -> rank 0
    [0.7, 0.6, 0.5, 0.4, 0.3, 0.2],  # i1: best own 0.5 (c2); wrong c0 0.7, c1 0.6 ahead  -> rank 2
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # i2: best own 0.6 (c5); nothing wrong ahead         -> rank 0
]
# t2i, column by column (correct image's score first, then the wrong images):
# c0 .9 vs .7 .1 -> 0 | c1 .1 vs .6 .2 -> 2 | c2 .5 vs .8 .3 -> 1
# c3 .4 vs .2 .4 -> 1 (tie with i2 counts ahead) | c4 .5 vs .3 .3 -> 0 | c5 .6 vs .4 .2 -> 0
IMG_RANK, CAP_RANK = [0, 2, 0], [0, 2, 1, 1, 0, 0]


def brute_force_ranks(scores, cap_img):
    """Sort each query's gallery descending, wrong items first on ties; rank = index of first correct."""
    n_img, n_cap = scores.shape
    img_rank = []
    for i in range(n_img):
        order = sorted(range(n_cap), key=lambda j: (-scores[i, j], cap_img[j] == i))
        img_rank.append(next(r for r, j in enumerate(order) if cap_img[j] == i))
    cap_rank = []
    for j in range(n_cap):
        order = sorted(range(n_img), key=lambda i: (-scores[i, j], i == cap_img[j]))
        cap_rank.append(order.index(cap_img[j]))
    return img_rank, cap_rank


def test_ranks_hand_computed():
    img_rank, cap_rank = metrics.ranks(torch.tensor(SCORES), torch.tensor(CAP_IMG))
    assert img_rank.tolist() == IMG_RANK
    assert cap_rank.tolist() == CAP_RANK


def test_ranks_accept_numpy_and_any_chunk():
    img_rank, cap_rank = metrics.ranks(np.array(SCORES), np.array(CAP_IMG), chunk=1)
    assert img_rank.tolist() == IMG_RANK
    assert cap_rank.tolist() == CAP_RANK


def test_constant_scores_give_the_worst_rank():
    img_rank, cap_rank = metrics.ranks(np.ones((3, 6)), CAP_IMG)
    assert img_rank.tolist() == [4, 4, 4]  # all 4 captions of the other images tie and count ahead
    assert cap_rank.tolist() == [2] * 6    # both other images tie and count ahead
    table = metrics.recall_table(np.ones((3, 6)), CAP_IMG, ks=(1,))
    assert table["i2t_R@1"] == 0 and table["t2i_R@1"] == 0


def test_a_single_tie_costs_one_place():
    scores = np.zeros((3, 6))
    scores[0, 1] = 1.0  # image 0's own caption c1 ...
    scores[0, 4] = 1.0  # ... ties with image 2's caption c4 -> i2t rank 1
    scores[2, 4] = 1.0  # caption c4's own image 2 ties with image 0 -> t2i rank 1
    img_rank, cap_rank = metrics.ranks(scores, CAP_IMG)
    assert img_rank[0] == 1
    assert cap_rank[4] == 1


@pytest.mark.parametrize("levels", [None, 4])  # continuous scores, and 4 levels (many ties)
def test_ranks_match_brute_force(levels):
    rng = np.random.default_rng(1)
    cap_img = np.concatenate([np.repeat(np.arange(50), 5), [7]])  # image 7 has 6 captions
    rng.shuffle(cap_img)
    scores = rng.random((50, 251)) if levels is None else rng.integers(0, levels, (50, 251)) * 1.0
    img_rank, cap_rank = metrics.ranks(scores, cap_img, chunk=16)
    expected_img, expected_cap = brute_force_ranks(scores, cap_img)
    assert img_rank.tolist() == expected_img
    assert cap_rank.tolist() == expected_cap


def test_recall_table_hand_computed():
    table = metrics.recall_table(SCORES, CAP_IMG, ks=(1, 2, 3))
    # i2t ranks [0, 2, 0]: R@1 = R@2 = 2/3, R@3 = 3/3; t2i [0, 2, 1, 1, 0, 0]: 3/6, 5/6, 6/6
    assert table["i2t_R@1"] == pytest.approx(200 / 3)
    assert table["i2t_R@2"] == pytest.approx(200 / 3)
    assert table["i2t_R@3"] == 100
    assert table["t2i_R@1"] == 50
    assert table["t2i_R@2"] == pytest.approx(500 / 6)
    assert table["rsum"] == pytest.approx(200 / 3 * 2 + 100 + 50 + 500 / 6 + 100)
    assert table["i2t_medr"] == 1 and table["t2i_medr"] == 1  # medians 0 and 0.5 -> floor + 1


def test_median_rank_is_one_based_floor():
    assert metrics.median_rank([0, 1, 2, 3]) == 2  # median 1.5 -> floor 1 -> 1-based 2
    assert metrics.median_rank([4, 9, 9]) == 10


def test_perfect_scores_give_full_recall():
    cap_img = torch.arange(20).repeat_interleave(5)
    scores = (cap_img[None, :] == torch.arange(20)[:, None]).float()
    table = metrics.recall_table(scores, cap_img)
    assert all(table[f"{d}_R@{k}"] == 100 for d in ("i2t", "t2i") for k in (1, 5, 10))
    assert table["rsum"] == 600
    assert table["i2t_medr"] == 1 and table["t2i_medr"] == 1


def test_ranks_reject_bad_inputs():
    with pytest.raises(ValueError, match="every image needs at least one caption"):
        metrics.ranks(np.zeros((3, 6)), [0, 0, 1, 1, 1, 1])
    with pytest.raises(ValueError, match=r"\(N_img, N_cap\)"):
        metrics.ranks(np.zeros((3, 5)), CAP_IMG)
    with pytest.raises(ValueError, match="NaN"):
        metrics.ranks(np.full((3, 6), np.nan), CAP_IMG)


def test_recalls_from_ranks_batched():
    out = metrics.recalls_from_ranks([[0, 5], [9, 10]], [[0, 0], [1, 1]], ks=(1, 10))
    assert out["i2t_R@1"].tolist() == [50, 0]
    assert out["i2t_R@10"].tolist() == [100, 50]
    assert out["t2i_R@1"].tolist() == [100, 0]
    assert out["rsum"].tolist() == [350, 150]  # 50 + 100 + 100 + 100 and 0 + 50 + 0 + 100


def test_bootstrap_interval():
    img_rank = np.tile([0, 3], 200)   # i2t R@1 = 50 % over 400 queries
    cap_rank = np.tile([0, 0, 0, 20], 500)
    boot = metrics.bootstrap(img_rank, cap_rank, n_boot=2000, seed=0)
    assert list(boot.columns) == ["point", "mean", "lo", "hi"]
    assert list(boot.index) == ["i2t_R@1", "i2t_R@5", "i2t_R@10",
                                "t2i_R@1", "t2i_R@5", "t2i_R@10", "rsum"]
    assert (boot["lo"] <= boot["point"]).all() and (boot["point"] <= boot["hi"]).all()
    assert boot.loc["i2t_R@1", "point"] == 50 and boot.loc["t2i_R@10", "point"] == 75
    # standard error of a 50 % proportion over 400 queries: 100 * sqrt(.25 / 400) = 2.5 points,
    # so the 95 % interval is about 2 * 1.96 * 2.5 = 9.8 points wide
    assert 8.5 < boot.loc["i2t_R@1", "hi"] - boot.loc["i2t_R@1", "lo"] < 11
    assert boot.loc["i2t_R@5", "lo"] == boot.loc["i2t_R@5", "hi"] == 100  # every query hits at 5
    assert boot.equals(metrics.bootstrap(img_rank, cap_rank, n_boot=2000, seed=0))
    assert not boot.equals(metrics.bootstrap(img_rank, cap_rank, n_boot=2000, seed=1))


def test_bootstrap_all_correct_is_degenerate():
    boot = metrics.bootstrap(np.zeros(10, int), np.zeros(50, int), n_boot=200)
    assert (boot.loc["t2i_R@1"] == 100).all()
    assert boot.loc["rsum", "lo"] == boot.loc["rsum", "hi"] == 600


def test_seed_summary_student_t():
    s = metrics.seed_summary([1, 2, 3])
    assert s["mean"] == 2 and s["std"] == 1 and s["n"] == 3
    half = 4.303 * 1 / np.sqrt(3)  # t(0.975, df=2) = 4.303
    assert s["lo"] == pytest.approx(2 - half, abs=1e-3)
    assert s["hi"] == pytest.approx(2 + half, abs=1e-3)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        metrics.seed_summary([1.0])


def _runs(rng, n_seeds, p_miss):
    """n_seeds random (img_rank, cap_rank) pairs on a 100-image, 500-caption test set."""
    return [(rng.integers(0, 20, 100) * (rng.random(100) < p_miss),
             rng.integers(0, 20, 500) * (rng.random(500) < p_miss)) for _ in range(n_seeds)]


def test_paired_difference_identical_models():
    runs = _runs(np.random.default_rng(0), 3, 0.5)
    table = metrics.paired_difference(runs, runs, n_boot=300)
    assert (table["diff"] == 0).all()
    assert (table["lo"] <= 0).all() and (table["hi"] >= 0).all()
    # one seed each: the same resampled queries for A and B, so every replicate differs by exactly 0
    single = metrics.paired_difference(runs[:1], runs[:1], n_boot=300)
    assert (single["lo"] == 0).all() and (single["hi"] == 0).all()


def test_paired_difference_better_model():
    b = [(np.tile([0, 7], 50), np.tile([0, 7], 250))] * 2  # R@1 = 50, R@10 = 100 for every seed
    a = [(np.zeros(100, int), np.zeros(500, int))] * 2      # R@1 = 100
    table = metrics.paired_difference(a, b, n_boot=300)
    assert table.loc["i2t_R@1", "A"] == 100 and table.loc["i2t_R@1", "B"] == 50
    assert table.loc["i2t_R@1", "diff"] == 50 and table.loc["i2t_R@1", "rel_%"] == 100
    assert table.loc["i2t_R@10", "diff"] == 0
    assert table.loc["rsum", "diff"] == 200  # 50 points better at R@1 and R@5, in both directions
    assert (table.loc[["i2t_R@1", "t2i_R@5", "rsum"], "lo"] > 0).all()
    assert table.loc["rsum", "rel_lo"] > 0


def test_paired_difference_needs_one_test_set():
    a = [(np.zeros(100, int), np.zeros(500, int))]
    with pytest.raises(ValueError, match="same test set"):
        metrics.paired_difference(a, [(np.zeros(99, int), np.zeros(500, int))])


@pytest.mark.parametrize("lo, hi, claimed, expected", [
    (0.5, 3.0, 2.0, "supported"),        # above 0 and reaches the claim
    (0.5, 1.5, 2.0, "not supported"),    # a real gain, but credibly smaller than claimed
    (-1.0, 1.5, 2.0, "not supported"),   # the whole interval is below the claim
    (-0.5, 2.5, 2.0, "inconclusive"),    # could be 0, could be the claim
    (0.1, 0.4, None, "supported"),
    (-1.0, -0.1, None, "not supported"),
    (-1.0, 1.0, None, "inconclusive"),
])
def test_verdict(lo, hi, claimed, expected):
    assert metrics.verdict(lo, hi, claimed) == expected


@pytest.mark.parametrize("lo, hi, expected", [
    (-0.5, 1.0, "supported"),            # no loss beyond the 1-point margin
    (-3.0, -1.5, "not supported"),       # a loss beyond the margin is credible
    (-2.0, 0.5, "inconclusive"),
])
def test_verdict_kept(lo, hi, expected):
    assert metrics.verdict_kept(lo, hi, margin=1.0) == expected


def test_verdict_rejects_a_non_positive_claim():
    with pytest.raises(ValueError, match="verdict_kept"):
        metrics.verdict(0.1, 0.5, claimed=0)


def test_model_interval_matches_seed_mean_and_std():
    import numpy as np
    from helpers.metrics import model_interval
    # seed A: all images rank 0, all captions rank 0 -> R@1 100; seed B: all rank 20 -> R@1 0
    a = (np.zeros(10, dtype=int), np.zeros(50, dtype=int))
    b = (np.full(10, 20), np.full(50, 20))
    t = model_interval([a, b], n_boot=200)
    assert t.loc["i2t_R@1", "mean"] == 50.0
    assert t.loc["i2t_R@1", "std"] == pytest.approx(np.std([100, 0], ddof=1))
    assert t.loc["i2t_R@1", "lo"] == 0.0 and t.loc["i2t_R@1", "hi"] == 100.0   # seeds resampled: all-A or all-B replicates
    assert t.loc["rsum", "mean"] == 300.0
