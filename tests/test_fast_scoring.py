"""The fast scores (helpers.fast.scoring) are the readable ones (helpers.models) up to float rounding, in value
and gradient, for every registered model."""
import pytest
import torch

from helpers import models
from helpers.fast import scoring as fast_scoring
from helpers.features import synthetic_featureset

SHAPE = {"image_dim": 48, "text_dim": 24}


@pytest.fixture(scope="module")
def fs():
    return synthetic_featureset(n_images=30, image_dim=48, text_dim=24, max_len=14, seed=3)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_tiled_scores_equal_the_readable_ones(fs, name, one_thread):
    torch.manual_seed(1)
    model = models.build_model(name, dim=16, **SHAPE).eval()
    readable = models.score_all(model, fs, chunk=7)
    for word_tile, image_tile in [(20, 4), (2048, 8)]:               # tiles smaller and larger than the data
        fast_scoring.WORD_TILE, fast_scoring.IMAGE_TILE = word_tile, image_tile
        try:
            tiled = fast_scoring.score_all(model, fs)
        finally:
            fast_scoring.WORD_TILE, fast_scoring.IMAGE_TILE = 2048, 8
        torch.testing.assert_close(tiled, readable, atol=1e-5, rtol=0)


def test_tiled_scores_of_chosen_rows(fs, one_thread):
    model = models.build_model("decoupled", dim=16, **SHAPE).eval()
    images, captions = torch.tensor([3, 0, 7]), torch.tensor([10, 2, 2, 99])
    full = models.score_all(model, fs)
    torch.testing.assert_close(fast_scoring.score_all(model, fs, image_rows=images, caption_rows=captions),
                               full[images][:, captions], atol=1e-5, rtol=0)


def test_joint_survives_logits_too_spread_for_one_shared_exponential(fs, one_thread):
    """Logits spread over more than ~87 underflow the shared exp; the tile falls back to two softmaxes."""
    torch.manual_seed(2)
    model = models.build_model("joint", dim=16, **SHAPE).eval()
    with torch.no_grad():
        model.attn.query.weight.mul_(200.0)
    tiled, readable = fast_scoring.score_all(model, fs), models.score_all(model, fs)
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


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_training_batch_scores_equal_the_models_scores_and_gradients(name, fs):
    torch.manual_seed(0)
    model = models.build_model(name, dim=16, **SHAPE)
    batch = lambda: (model.encode_images(*fs.image_batch(torch.arange(5))),        # noqa: E731
                     model.encode_texts(*fs.text_batch(torch.arange(0, 25, 5))))
    lean, want = fast_scoring.batch_scores(model, *batch()), model.score(*batch())
    torch.testing.assert_close(lean, want, atol=1e-5, rtol=0)
    weight = model.text_proj[0].weight
    g_want = torch.autograd.grad(want.square().sum(), weight)[0]
    g_lean = torch.autograd.grad(fast_scoring.batch_scores(model, *batch()).square().sum(), weight)[0]
    torch.testing.assert_close(g_lean, g_want, atol=1e-5, rtol=0)


def test_the_fast_paths_read_the_models_settings_not_its_class(fs, one_thread):
    """decoupled's class with the blog's two settings scores as the blog's setting says, and fails where the
    padded protocol is not defined."""
    torch.manual_seed(3)
    model = models.build_model("decoupled", dim=16, mask_padding=False, **SHAPE).eval()
    torch.testing.assert_close(fast_scoring.score_all(model, fs), models.score_all(model, fs), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="counting padding is scored here for text -> image, per-word"):
        fast_scoring.score_all(models.build_model("joint", dim=16, mask_padding=False, **SHAPE), fs)


def test_agreement_is_float_rounding_and_sees_a_wrong_fast_path(fs, monkeypatch, one_thread):
    torch.manual_seed(5)
    model = models.build_model("decoupled", dim=16, **SHAPE)
    assert fast_scoring.agreement(model, fs) < 1e-5
    monkeypatch.setattr(fast_scoring, "batch_scores", lambda model, img, txt: model.score(img, txt) + 0.01)
    assert fast_scoring.agreement(model, fs) > 0.005


@pytest.mark.parametrize("name", ["decoupled", "dual", "joint"])
def test_fast_scores_refuse_empty_and_non_bool_masks(fs, name):
    model = models.build_model(name, dim=16, **SHAPE).eval()
    img = model.encode_images(*fs.image_batch(torch.arange(3)))
    tokens, mask, tp = fs.text_batch(torch.arange(3))
    empty = mask.clone()
    empty[0] = False
    for bad, match in ((empty, "row with no True"), (mask.float(), "must be a bool tensor")):
        txt = model.encode_texts(tokens, bad, tp)
        with pytest.raises(ValueError, match=match):
            fast_scoring.batch_scores(model, img, txt)
        if name == "joint":
            prepared = fast_scoring.prepare_joint_images(model, img["regions"])
            with pytest.raises(ValueError, match=match):
                fast_scoring.joint_scores(model, txt["words"], txt["mask"], prepared)
