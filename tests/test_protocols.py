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


# ----------------------------------------------------------------------------- VSE++'s mislabelled 5-fold summary

def labelled(line: str) -> dict:
    """A summary line -> {label: number} as a reader takes it: 'image→text R@1', ..., 'rSum'."""
    i2t, t2i, rsum = line.split(": ", 1)[1].split(" | ")
    out = {"rSum": float(rsum.split()[1])}
    for direction, part in (("image→text", i2t), ("text→image", t2i)):
        words = part.split()[1:]
        out |= {f"{direction} {words[k]}": float(words[k + 1]) for k in range(0, len(words), 2)}
    out["image→text average"] = np.mean([out[f"image→text R@{k}"] for k in (1, 5, 10)])
    out["text→image average"] = np.mean([out[f"text→image R@{k}"] for k in (1, 5, 10)])
    return out


def vsepp_readout(table) -> dict:
    """What VSE++'s evalrank(fold5=True) prints under each label for these folds: each fold's row laid out
    as theirs, [i2t R@1, R@5, R@10, medr, meanr, t2i R@1, R@5, R@10, medr, meanr, ar, ari, rsum], averaged,
    then read by position: 'rsum' is mean[10] * 6, 'Average i2t Recall' mean[11], 'Average t2i Recall' mean[12]."""
    rows = []
    for _, f in table.iloc[:5].iterrows():
        r = [f["i2t_R@1"], f["i2t_R@5"], f["i2t_R@10"], f["i2t_medr"], 0.0]
        ri = [f["t2i_R@1"], f["t2i_R@5"], f["t2i_R@10"], f["t2i_medr"], 0.0]
        rows.append(r + ri + [sum(r[:3]) / 3, sum(ri[:3]) / 3, sum(r[:3]) + sum(ri[:3])])
    mean = np.array(rows).mean(axis=0)
    return {"rSum": mean[10] * 6, "image→text average": mean[11], "text→image average": mean[12],
            **{f"image→text R@{k}": mean[j] for j, k in enumerate((1, 5, 10))},
            **{f"text→image R@{k}": mean[5 + j] for j, k in enumerate((1, 5, 10))}}


def check_labels(printed: dict, table) -> None:
    """Every number printed under a label is that quantity, computed here from the five folds' recalls."""
    folds = table.iloc[:5]
    truth = {"rSum": folds["rsum"].mean(),
             "image→text average": folds[["i2t_R@1", "i2t_R@5", "i2t_R@10"]].to_numpy().mean(),
             "text→image average": folds[["t2i_R@1", "t2i_R@5", "t2i_R@10"]].to_numpy().mean(),
             **{f"image→text R@{k}": folds[f"i2t_R@{k}"].mean() for k in (1, 5, 10)},
             **{f"text→image R@{k}": folds[f"t2i_R@{k}"].mean() for k in (1, 5, 10)}}
    wrong = {k: (printed[k], v) for k, v in truth.items() if abs(printed[k] - v) > 0.05}
    assert not wrong, f"printed under the wrong labels (printed, true): {wrong}"


def test_the_1k_summary_prints_rsum_and_each_direction_under_their_own_labels():
    """The check that would have caught VSE++'s 5-fold summary: on folds whose two directions differ, it
    printed 2 x the image->text sum as 'rsum', the text->image average as 'Average i2t Recall' and the rSum as
    'Average t2i Recall'. Our summary of the mean row passes the same check, whatever order its keys come in."""
    scores, cap_img, _ = synthetic()
    table = protocols.protocol_1k(scores, cap_img)
    folds = table.iloc[:5]
    assert folds["i2t_R@1"].mean() != folds["t2i_R@1"].mean()             # the directions differ here
    line = protocols.summary(table.loc["mean"], "1K")
    check_labels(labelled(line), table)
    assert labelled(line)["rSum"] == pytest.approx(folds["rsum"].mean(), abs=0.05)
    shuffled = dict(reversed(list(table.loc["mean"].items())))           # names, not places, pick the numbers
    assert protocols.summary(shuffled, "1K") == line

    vsepp = vsepp_readout(table)
    with pytest.raises(AssertionError, match="printed under the wrong labels") as caught:
        check_labels(vsepp, table)
    for label in ("rSum", "image→text average", "text→image average"):
        assert label in str(caught.value)
    assert vsepp["image→text average"] == pytest.approx(labelled(line)["text→image average"], abs=0.05)
    assert vsepp["text→image average"] == pytest.approx(labelled(line)["rSum"], abs=0.05)
