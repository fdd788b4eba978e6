"""One padding protocol (`ModelConfig.text_length`): a masked model's scores never depend on how far a caption is
padded; a model that counts padding reads every caption as exactly text_length positions, so training, validation
and test score a caption alike, in the readable scores (`models.READABLE`) and the fast ones (`fast.scoring.FAST`)."""
import pytest
import torch

from helpers import models, train
from helpers.config import TEXT_MAX_LENGTH
from helpers.fast import scoring as fast_scoring
from helpers.features import FeatureSet, synthetic_featureset

SMALL = dict(image_dim=32, text_dim=24, dim=16)
# float32 rounding: the differences below measured at most 1.2e-7; padding that moves a score (text_length=0,
# test_c_...) moved these by 0.14 or more
TOL = dict(atol=1e-5, rtol=0)
MASKED = sorted(n for n in models.MODELS if models.build_model(n, **SMALL).cfg.mask_padding)
COUNTING = sorted(n for n in models.MODELS if not models.build_model(n, **SMALL).cfg.mask_padding)
SCORINGS = {"readable": models.READABLE, "fast": fast_scoring.FAST}


@pytest.fixture(scope="module")
def fs():
    return synthetic_featureset(n_images=8, captions_per_image=3, image_dim=32, text_dim=24, regions=9,
                                max_len=14, seed=7)


def captions_of(fs: FeatureSet, rows, longest: int = 0) -> FeatureSet:
    """Every image of `fs` with only the captions at `rows`, plus, with `longest` > 0, one made-up caption of
    `longest` tokens (of image 0), so that `scoring.all` pads to `longest` (or, without it, to these captions)."""
    rows = torch.as_tensor(rows)
    tokens = [fs.tokens[fs.offsets[r]:fs.offsets[r + 1]] for r in rows.tolist()]
    if longest:
        tokens.append(torch.randn(longest, fs.tokens.shape[1], generator=torch.Generator().manual_seed(1)).half())
    lengths = torch.tensor([len(t) for t in tokens])
    extra = torch.zeros(len(tokens) - len(rows), dtype=torch.long)
    return FeatureSet(image_ids=fs.image_ids, regions=fs.regions, pooled=fs.pooled,
                      caption_ids=torch.arange(len(tokens)) + 90000,
                      caption_image=torch.cat([fs.caption_image[rows], extra]),
                      tokens=torch.cat(tokens),
                      offsets=torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
                      text_pooled=torch.stack([t.float().mean(0) for t in tokens]).half())


def batch_scores(model, scoring, fs, rows, pad_to=None) -> torch.Tensor:
    """(N_img, len(rows)) `scoring.batch` of every image of `fs` against the captions at `rows`, padded to `pad_to`."""
    with torch.no_grad():
        img = model.encode_images(*fs.image_batch(torch.arange(fs.n_images)))
        return scoring.batch(model, img, model.encode_texts(*fs.text_batch(rows, pad_to=pad_to)))


def own_length_scores(model, scoring, fs, rows) -> torch.Tensor:
    """Each caption of `rows` scored in a batch of its own: padded to its own length."""
    return torch.cat([batch_scores(model, scoring, fs, torch.tensor([r])) for r in rows.tolist()], 1)


def rows_of_lengths(fs) -> torch.Tensor:
    """A caption of each length: the shortest, the longest and three between them."""
    order = fs.lengths().argsort()
    rows = order[torch.linspace(0, len(order) - 1, 5).long()]
    assert fs.lengths()[rows].unique().numel() >= 3
    return rows


def training_time_scores(model, scoring, fs, images, captions) -> torch.Tensor:
    """The (B, B) scores `train.ContrastiveStep` computes for the batch (`train.local_batch`, one process)."""
    seen = []

    def recording(model, img, txt):
        seen.append(scoring.batch(model, img, txt))
        return seen[-1]

    step = train.ContrastiveStep(model, "infonce", models.Scoring(batch=recording, all=scoring.all))
    with torch.no_grad():
        step(*train.local_batch(fs, images, captions, rank=0, world=1))
    return seen[0]


def short_batch(fs, size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """`size` images, each with its shortest caption: a batch whose longest caption is shorter than the split's."""
    images = torch.arange(size)
    captions = torch.tensor([min((fs.caption_image == i).nonzero()[:, 0].tolist(), key=lambda c: int(fs.lengths()[c]))
                             for i in images.tolist()])
    assert int(fs.lengths()[captions].max()) < int(fs.lengths().max())
    return images, captions


# ----------------------------------------------------------------------------- a. masked models ignore padding

@pytest.mark.parametrize("how", sorted(SCORINGS))
@pytest.mark.parametrize("name", MASKED)
def test_a_masked_models_batch_scores_do_not_depend_on_padding(fs, name, how, one_thread):
    torch.manual_seed(0)
    model, rows = models.build_model(name, **SMALL).eval(), rows_of_lengths(fs)
    own = own_length_scores(model, SCORINGS[how], fs, rows)
    torch.testing.assert_close(batch_scores(model, SCORINGS[how], fs, rows, pad_to=TEXT_MAX_LENGTH), own, **TOL)


@pytest.mark.parametrize("how", sorted(SCORINGS))
@pytest.mark.parametrize("name", MASKED)
def test_a_masked_models_whole_split_scores_do_not_depend_on_padding(fs, name, how, one_thread):
    torch.manual_seed(0)
    model, rows = models.build_model(name, **SMALL).eval(), rows_of_lengths(fs)
    own = torch.cat([SCORINGS[how].all(model, captions_of(fs, [r])) for r in rows.tolist()], 1)
    padded = SCORINGS[how].all(model, captions_of(fs, rows, longest=TEXT_MAX_LENGTH))[:, :len(rows)]
    torch.testing.assert_close(padded, own, **TOL)


@pytest.mark.parametrize("name", MASKED)
def test_a_masked_models_ignore_text_length(fs, name):
    torch.manual_seed(0)
    plain = models.build_model(name, **SMALL).eval()
    fixed = models.build_model(name, text_length=4, **SMALL).eval()     # shorter than most captions: no error
    fixed.load_state_dict(plain.state_dict())
    for scoring in SCORINGS.values():
        torch.testing.assert_close(scoring.all(fixed, fs), scoring.all(plain, fs), atol=0, rtol=0)


# ----------------------------------------------------------------------------- b. counting models, text_length=64

@pytest.mark.parametrize("how", sorted(SCORINGS))
@pytest.mark.parametrize("name", COUNTING)
def test_b_counting_models_score_a_caption_alike_whatever_its_padding(fs, name, how, one_thread):
    torch.manual_seed(0)
    model, rows = models.build_model(name, text_length=TEXT_MAX_LENGTH, **SMALL).eval(), rows_of_lengths(fs)
    scoring = SCORINGS[how]
    own = own_length_scores(model, scoring, fs, rows)
    for pad_to in (None, 20, TEXT_MAX_LENGTH, TEXT_MAX_LENGTH + 9):     # past 64: only pads are cut
        torch.testing.assert_close(batch_scores(model, scoring, fs, rows, pad_to=pad_to), own, **TOL)
    alone = torch.cat([scoring.all(model, captions_of(fs, [r])) for r in rows.tolist()], 1)
    torch.testing.assert_close(alone, own, **TOL)
    padded = scoring.all(model, captions_of(fs, rows, longest=TEXT_MAX_LENGTH))[:, :len(rows)]
    torch.testing.assert_close(padded, own, **TOL)


@pytest.mark.parametrize("how", sorted(SCORINGS))
@pytest.mark.parametrize("name", COUNTING)
def test_b_counting_models_score_a_training_batch_as_test_scores_it(fs, name, how, one_thread):
    torch.manual_seed(0)
    model = models.build_model(name, text_length=TEXT_MAX_LENGTH, **SMALL).eval()
    images, captions = short_batch(fs)
    trained = training_time_scores(model, SCORINGS[how], fs, images, captions)
    tested = SCORINGS[how].all(model, fs)[images][:, captions]
    torch.testing.assert_close(trained, tested, **TOL)


@pytest.mark.parametrize("name", COUNTING)
def test_b_fast_scores_equal_the_readable_ones_with_text_length(fs, name, one_thread):
    torch.manual_seed(0)
    model = models.build_model(name, text_length=TEXT_MAX_LENGTH, **SMALL).eval()
    torch.testing.assert_close(fast_scoring.score_all(model, fs), models.score_all(model, fs, chunk=5), **TOL)
    images, captions = short_batch(fs)
    torch.testing.assert_close(training_time_scores(model, fast_scoring.FAST, fs, images, captions),
                               training_time_scores(model, models.READABLE, fs, images, captions), **TOL)
    assert fast_scoring.agreement(model, fs) < TOL["atol"]


# ----------------------------------------------------------------------------- c. without it, they disagree

@pytest.mark.parametrize("how", sorted(SCORINGS))
@pytest.mark.parametrize("name", COUNTING)
def test_c_counting_models_without_text_length_score_training_and_test_apart(fs, name, how, one_thread):
    """text_length=0 (the caller's padding): a training batch pads to its own longest caption, the test to the
    split's, and the scores of the same pairs differ: the bug the protocol removes."""
    torch.manual_seed(0)
    model = models.build_model(name, text_length=0, **SMALL).eval()
    images, captions = short_batch(fs)
    trained = training_time_scores(model, SCORINGS[how], fs, images, captions)
    tested = SCORINGS[how].all(model, fs)[images][:, captions]
    assert float((trained - tested).abs().max()) > 1e-2


# ----------------------------------------------------------------------------- d. errors

@pytest.mark.parametrize("name", COUNTING)
def test_d_a_caption_longer_than_text_length_is_refused_on_every_path(fs, name):
    model = models.build_model(name, text_length=8, **SMALL).eval()
    longest = int(fs.lengths().max())
    message = f"a caption has {longest} tokens but the model reads every caption as exactly text_length=8"
    images, captions = torch.arange(fs.n_images), fs.lengths().argsort()[-fs.n_images:]
    for scoring in SCORINGS.values():
        with pytest.raises(ValueError, match=message):
            scoring.all(model, fs)
        with pytest.raises(ValueError, match=message):
            training_time_scores(model, scoring, fs, images, captions)
    short = (fs.lengths() <= 8).nonzero()[:, 0]                          # captions that fit are scored
    assert fast_scoring.score_all(model, fs, caption_rows=short).shape == (fs.n_images, len(short))


def test_d_text_length_must_be_a_non_negative_int():
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="text_length=.*use 0 .*or a positive number"):
            models.build_model("counts_padding", text_length=bad, **SMALL)


def test_d_fixed_length_pads_with_zero_tokens_and_refuses_real_tokens_after_padding():
    tokens, mask = torch.randn(2, 3, 4), torch.tensor([[True, True, False], [True, False, False]])
    got, got_mask = models.fixed_length(tokens, mask, 5)
    assert got.shape == (2, 5, 4) and torch.equal(got_mask.sum(1), torch.tensor([2, 1]))
    assert torch.equal(got[0, :2], tokens[0, :2]) and torch.all(got[0, 2:] == 0) and torch.all(got[1, 1:] == 0)
    cut, cut_mask = models.fixed_length(got, got_mask, 2)               # past the longest caption: pads cut
    assert torch.equal(cut, tokens[:, :2] * mask[:, :2, None]) and torch.equal(cut_mask, mask[:, :2])
    with pytest.raises(ValueError, match="real token past position 2; real tokens must come first"):
        models.fixed_length(tokens, torch.tensor([[True, False, True], [True, False, False]]), 2)
