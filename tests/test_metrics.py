"""Retrieval metrics: hand-computed ranks, the pessimistic tie rule, a brute-force cross-check, verdict words."""
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


@pytest.mark.parametrize("lo, hi, claimed, expected", [
    (0.5, 3.0, 2.0, "supported"),        # above 0 and reaches the claim
    (0.5, 1.5, 2.0, "not supported"),    # a real gain, but credibly smaller than claimed
    (-1.0, 1.5, 2.0, "not supported"),   # the whole interval is below the claim
    (-0.5, 2.5, 2.0, "inconclusive"),    # could be 0, could be the claim
    (-3.0, -0.5, 2.0, "not supported: credibly worse"),   # the whole interval is below zero
    (0.1, 0.4, None, "A better"),
    (-1.0, -0.1, None, "A credibly worse"),
    (-1.0, 1.0, None, "no credible difference"),
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


@pytest.mark.parametrize("fn", [metrics.i2t_ranks, metrics.t2i_ranks])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_the_shown_rank_functions_refuse_non_finite_scores(fn, bad):
    scores = torch.tensor(SCORES)
    scores[1, 2] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        fn(scores, torch.tensor(CAP_IMG))
    with pytest.raises(ValueError, match="NaN or infinite"):          # all-NaN scores used to rank as perfect
        fn(torch.full((3, 6), float("nan")), torch.tensor(CAP_IMG))


@pytest.mark.parametrize("fn", [metrics.i2t_ranks, metrics.t2i_ranks, metrics.ranks])
def test_rankings_refuse_caption_rows_out_of_range_or_not_integers(fn):
    scores = torch.tensor(SCORES)
    for rows in ([0, 0, 1, 1, 2, 3], [0, 0, 1, 1, 2, -1]):
        with pytest.raises(ValueError, match=r"image row in \[0, 3\)"):
            fn(scores, torch.tensor(rows))
    with pytest.raises(ValueError, match="integer image rows"):
        fn(scores, torch.tensor(CAP_IMG, dtype=torch.float32))
    with pytest.raises(ValueError, match="integer image rows"):
        fn(scores, torch.tensor([0.4, 0, 1, 1, 2, 2]))                 # .long() would have made 0.4 image 0


def test_ranks_accept_any_integer_caption_rows():
    for rows in (np.array(CAP_IMG, dtype=np.int32), torch.tensor(CAP_IMG, dtype=torch.int32), CAP_IMG):
        img_rank, cap_rank = metrics.ranks(torch.tensor(SCORES), rows)
        assert img_rank.tolist() == IMG_RANK and cap_rank.tolist() == CAP_RANK
