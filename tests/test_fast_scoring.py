"""The tiled scoring (helpers.fast_scoring) gives the readable path's scores up to float rounding."""
import pytest
import torch

from helpers import fast_scoring, models
from helpers.features import synthetic_featureset

SHAPE = {"image_dim": 48, "text_dim": 24}


@pytest.fixture(scope="module")
def fs():
    return synthetic_featureset(n_images=30, image_dim=48, text_dim=24, max_len=14, seed=3)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_tiled_scores_equal_the_readable_ones(fs, name, one_thread):
    torch.manual_seed(1)
    model = models.build_model(name, dim=16, **SHAPE).eval()
    readable = models.score_all(model, fs, chunk=7, fast=False)
    for word_tile, image_tile in [(20, 4), (2048, 8)]:               # tiles smaller and larger than the data
        fast_scoring.WORD_TILE, fast_scoring.IMAGE_TILE = word_tile, image_tile
        try:
            tiled = models.score_all(model, fs)
        finally:
            fast_scoring.WORD_TILE, fast_scoring.IMAGE_TILE = 2048, 8
        torch.testing.assert_close(tiled, readable, atol=1e-5, rtol=0)


def test_tiled_scores_of_chosen_rows(fs, one_thread):
    model = models.build_model("decoupled", dim=16, **SHAPE).eval()
    images, captions = torch.tensor([3, 0, 7]), torch.tensor([10, 2, 2, 99])
    full = models.score_all(model, fs, fast=False)
    torch.testing.assert_close(models.score_all(model, fs, image_rows=images, caption_rows=captions),
                               full[images][:, captions], atol=1e-5, rtol=0)


def test_joint_survives_logits_too_spread_for_one_shared_exponential(fs, one_thread):
    """Logits spread over more than ~87 underflow the shared exp; the tile falls back to two softmaxes."""
    torch.manual_seed(2)
    model = models.build_model("joint", dim=16, **SHAPE).eval()
    with torch.no_grad():
        model.attn.query.weight.mul_(200.0)
    tiled, readable = models.score_all(model, fs), models.score_all(model, fs, fast=False)
    assert torch.isfinite(tiled).all()
    torch.testing.assert_close(tiled, readable, atol=1e-4, rtol=0)


def test_caption_tiles_hold_whole_captions():
    lengths = torch.tensor([5, 5, 5, 12, 3])
    tiles = fast_scoring._caption_tiles(lengths, words_per_tile=10)
    assert tiles == [(0, 2), (2, 3), (3, 4), (4, 5)]                  # a caption longer than a tile gets its own
    assert fast_scoring._caption_tiles(lengths, 100) == [(0, 5)]


def test_padded_tiles_cover_every_caption_once_within_the_budget():
    lengths = torch.tensor([3, 3, 4, 5, 9, 9, 30])
    tiles = fast_scoring._padded_tiles(lengths, 12)
    assert [i for a, b in tiles for i in range(a, b)] == list(range(len(lengths)))
    assert all(b - a == 1 or (b - a) * int(lengths[b - 1]) <= 12 for a, b in tiles)
    assert tiles[-1] == (6, 7)                       # a caption longer than the budget gets a tile of its own


def test_segment_means_average_each_captions_own_rows():
    x = torch.arange(12.0).view(6, 2)
    got = fast_scoring._segment_means(x, torch.tensor([1, 3, 2]))
    assert torch.equal(got, torch.stack([x[0], x[1:4].mean(0), x[4:].mean(0)]))


@pytest.mark.parametrize("name", ["joint", "joint_words"])
def test_mixed_pairs_equal_the_pair_by_pair_loop(fs, name, one_thread):
    """Batched matched pairs = `mixed_pair`'s loop, with captions of different lengths padded together."""
    torch.manual_seed(4)
    model = models.build_model(name, dim=16, **SHAPE).eval()
    rows = torch.tensor([0, 5, 9, 17, 29])
    captions = torch.tensor([0, 16, 28, 52, 88])                       # any caption rows, lengths differ
    img = model.encode_images(*fs.image_batch(rows))
    txt = model.encode_texts(*fs.text_batch(captions))
    assert txt["mask"].sum(1).unique().numel() > 1
    with torch.no_grad():
        loop = model.mixed_pair(img, txt)
    fast = fast_scoring.mixed_pairs(model, img, txt)
    for a, b in zip(fast, loop):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="flow 'both'"):
        fast_scoring.mixed_pairs(models.build_model("decoupled", dim=16, **SHAPE), img, txt)
