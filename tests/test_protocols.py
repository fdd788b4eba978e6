"""Known-answer tests of the published protocols on small synthetic rankings (helpers.protocols)."""
import numpy as np
import pytest
import torch

from helpers import protocols

M = 4                                               # images per fold
HUB_FOLDS = (0, 2)                                  # folds whose first image scores 3 with every fold caption


def synthetic(n_folds=5):
    """Scores whose recalls are known per fold; 5 or 6 captions per image; other folds' captions score 5."""
    per_image = [5 + (i % 3 == 0) for i in range(n_folds * M)]
    cap_img = torch.tensor(np.repeat(np.arange(n_folds * M), per_image))
    n_img, n_cap = n_folds * M, len(cap_img)
    scores = torch.full((n_img, n_cap), 5.0)
    for f in range(n_folds):
        imgs = range(f * M, (f + 1) * M)
        caps = ((cap_img >= f * M) & (cap_img < (f + 1) * M)).nonzero().squeeze(1)
        for i in imgs:
            scores[i, caps] = 0.0
            scores[i, caps[cap_img[caps] == i]] = 2.0 if f in HUB_FOLDS else 1.0
        if f in HUB_FOLDS:
            scores[f * M, caps] = 3.0
    return scores, cap_img, per_image


def expected_fold(f, per_image):
    """Recalls of fold f by construction (see `synthetic`)."""
    if f not in HUB_FOLDS:
        return {k: 100.0 for k in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10")}
    caps = per_image[f * M:(f + 1) * M]
    hub = 100.0 * caps[0] / sum(caps)                   # only the hub's own captions rank their image first
    return {"i2t_R@1": 75.0, "i2t_R@5": 75.0, "i2t_R@10": 75.0,   # the hub ties with every caption: a miss
            "t2i_R@1": hub, "t2i_R@5": 100.0, "t2i_R@10": 100.0}  # the others lose only to the hub: rank 1


def test_1k_is_five_folds_each_against_its_own_captions_with_mean_and_spread():
    scores, cap_img, per_image = synthetic()
    table = protocols.protocol_1k(scores, cap_img)
    assert list(table.index) == [f"fold {f}" for f in range(1, 6)] + ["mean", "min", "max"]
    for f in range(5):
        for key, value in expected_fold(f, per_image).items():
            assert table.loc[f"fold {f + 1}", key] == pytest.approx(value), (f, key)
    folds = [expected_fold(f, per_image) for f in range(5)]
    for key in folds[0]:
        assert table.loc["mean", key] == pytest.approx(np.mean([d[key] for d in folds]))
        assert table.loc["min", key] == pytest.approx(min(d[key] for d in folds))
    assert table.loc["mean", "i2t_R@1"] == pytest.approx(90.0)   # not fold 1's 75: all five folds count
    assert table.loc["mean", "rsum"] == pytest.approx(np.mean([sum(d.values()) for d in folds]))


def test_5k_ranks_every_image_against_every_caption():
    scores, cap_img, _ = synthetic()
    five = protocols.protocol_5k(scores, cap_img)
    assert all(five[k] == 0.0 for k in ("i2t_R@10", "t2i_R@10", "rsum"))   # other folds' captions score 5


def test_the_summary_names_each_direction_by_its_key():
    scores, cap_img, per_image = synthetic()
    row = protocols.protocol_1k(scores, cap_img).loc["fold 1"]
    line = protocols.summary(row, "1K fold 1")
    hub = 100.0 * per_image[0] / sum(per_image[:M])
    assert line == (f"1K fold 1: image→text R@1 75.0 R@5 75.0 R@10 75.0 | text→image R@1 {hub:.1f} R@5 100.0 "
                    f"R@10 100.0 | rSum {425 + hub:.1f}")
    swapped = row.rename({"i2t_R@1": "t2i_R@1", "t2i_R@1": "i2t_R@1"})    # a mislabelled table reads differently
    assert protocols.summary(swapped, "1K fold 1") != line
    with pytest.raises(ValueError, match="lack"):
        protocols.summary({"rsum": 1.0}, "x")


def test_folds_follow_their_images_and_refuse_a_split_that_is_not_five_equal_blocks():
    _, cap_img, _ = synthetic()
    parts = protocols.folds(cap_img)
    assert [len(i) for i, _ in parts] == [M] * 5 and sum(len(c) for _, c in parts) == len(cap_img)
    assert all(set(cap_img[c].tolist()) == set(i.tolist()) for i, c in parts)
    with pytest.raises(ValueError, match="do not split into 3 equal folds"):
        protocols.folds(cap_img, n_folds=3)
