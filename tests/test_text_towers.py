"""Text towers: the GRU tower masks padding, learns its embeddings, repeats from a seed; the random MiniLM
is untrained, repeatable and frozen; the course's tokenization; every named bad input gets its message."""
import pytest
import torch
import torch.nn.functional as F

from helpers.config import TEXT_MAX_LENGTH
from helpers.encoders import load_text_encoder, load_tokenizer
from helpers.encoders import MINILM, random_minilm, random_text_encoder, tokenize_captions
from helpers.text_towers import GRUTower

pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.py

CAPTIONS = ["A brown bear walks through tall grass.", "Two dogs.",
            "A man in a red jacket rides a bicycle down a busy city street at night."]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MINILM)


@pytest.fixture(scope="module")
def batch(tokenizer):
    return tokenize_captions(tokenizer, CAPTIONS)


def tiny(tokenizer, seed=0):
    return GRUTower.from_tokenizer(tokenizer, embed_dim=8, hidden_dim=4, seed=seed)


def padded(ids, mask, length):
    """(B, T) ids and mask -> the same captions padded on the right with [PAD] (id 0) to `length`."""
    return F.pad(ids, (0, length - ids.shape[1])), F.pad(mask, (0, length - mask.shape[1]))


# ------------------------------------------------------------------------------------ tokenization

def test_tokenize_captions_is_the_course_tokenization(tokenizer, batch):
    ids, mask = batch
    course = load_text_encoder(MINILM)[0].tokenize(CAPTIONS)
    assert torch.equal(ids, course["input_ids"]) and torch.equal(mask, course["attention_mask"])
    assert ids[1].tolist()[:5] == [tokenizer.cls_token_id, 2048, 6077, 1012, tokenizer.sep_token_id]   # two dogs .
    assert mask.sum(1).tolist() == [10, 5, 19] and ids.shape == (3, 19)     # padded to the longest
    long_ids, long_mask = tokenize_captions(tokenizer, ["dog " * 100])
    assert long_ids.shape == (1, TEXT_MAX_LENGTH) and long_ids[0, -1] == tokenizer.sep_token_id


# ------------------------------------------------------------------------------------ GRU tower

def test_gru_tower_shapes_and_sizes(tokenizer, batch):
    tower = GRUTower.from_tokenizer(tokenizer)                     # the defaults: 300 embedding, 2 x 192 GRU
    assert tower.embed.num_embeddings == len(tokenizer) == 30522 and tower.dim == 384
    assert tower.embed.padding_idx == tokenizer.pad_token_id == 0
    assert sum(p.numel() for p in tower.parameters()) == 30522 * 300 + 2 * 3 * (192 * 300 + 192 * 192 + 2 * 192)
    features, mask = tower(*batch)
    assert features.shape == (3, 19, 384) and mask.dtype == torch.bool and torch.equal(mask, batch[1].bool())


def test_gru_features_do_not_depend_on_padding(tokenizer, batch):
    tower = tiny(tokenizer)
    ids, mask = batch
    n = int(mask[1].sum())
    alone, _ = tower(ids[1:2, :n], mask[1:2, :n])                  # "Two dogs." alone, at its own length
    assert alone.abs().min() > 0
    for length in (19, 20, 64):                                     # 19: the batch's longest caption
        for rows, row in ((slice(1, 2), 0), (slice(None), 1)):      # alone, and beside longer captions
            features, m = tower(*padded(ids[rows], mask[rows], length))
            torch.testing.assert_close(features[row, :n], alone[0], rtol=0, atol=1e-6)
            assert features.shape[1] == length and torch.all(features[~m] == 0)   # pads exactly zero


def test_gru_gradients_reach_the_caption_embeddings(tokenizer, batch):
    tower = tiny(tokenizer)
    ids, mask = padded(batch[0][1:2], batch[1][1:2], 20)           # one caption, 15 pads
    features, m = tower(ids, mask)
    tower.pooled(features, m).pow(2).sum().backward()
    grad = tower.embed.weight.grad
    used = ids[m].unique()
    assert (grad[used].abs().sum(1) > 0).all()                      # every word piece of the caption learns
    assert torch.all(grad[tokenizer.pad_token_id] == 0)             # the [PAD] row never does
    others = torch.ones(len(grad), dtype=torch.bool)
    others[used] = False
    assert torch.all(grad[others] == 0)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.gru.parameters())


def test_gru_tower_is_reproducible_from_its_seed(tokenizer):
    a, b, c = tiny(tokenizer, seed=0), tiny(tokenizer, seed=0), tiny(tokenizer, seed=1)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name
    before = torch.random.get_rng_state()
    tiny(tokenizer, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)        # the caller's random stream is untouched


def test_gru_pooled_is_the_masked_mean(tokenizer):
    features = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]], [[5.0, 6.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert torch.equal(tiny(tokenizer).pooled(features, mask), torch.tensor([[2.0, 3.0], [5.0, 6.0]]))


# ------------------------------------------------------------------------------------ random MiniLM

@pytest.fixture(scope="module")
def random0():
    return random_minilm(0)


def test_random_minilm_is_untrained_repeatable_and_frozen(random0):
    pretrained = dict(load_text_encoder(MINILM)[0].model.named_parameters())
    again, other = dict(random_minilm(0).named_parameters()), dict(random_minilm(1).named_parameters())
    params = dict(random0.named_parameters())
    assert params.keys() == pretrained.keys()                       # the same architecture
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                 "encoder.layer.5.output.dense.weight"):
        assert params[name].shape == pretrained[name].shape, name
        assert not torch.allclose(params[name], pretrained[name], atol=1e-3), name   # not the trained weights
        assert not torch.equal(params[name], other[name]), name     # another seed, other weights
    assert all(torch.equal(p, again[n]) for n, p in params.items())  # the same seed, the same weights
    assert not random0.training and not any(p.requires_grad for p in random0.parameters())


def test_random_text_encoder_extracts_like_the_course(tokenizer):
    encoder = random_text_encoder(0)
    features, mask = encoder.encode(CAPTIONS)
    assert encoder.dim == 384 and features.shape == (3, 19, 384)
    assert torch.equal(mask, tokenize_captions(tokenizer, CAPTIONS)[1].bool())
    assert torch.all(features[~mask] == 0) and features[mask].abs().sum(-1).min() > 0
    assert encoder.choice.weights_file is None and "random" in encoder.name


# ------------------------------------------------------------------------------------ bad inputs

def bad_input(tokenizer, batch, mistake):
    ids, mask = batch
    late = mask.clone()
    late[1, 0] = 0                                                  # a pad before the real tokens
    empty = mask.clone()
    empty[1] = 0
    return {
        "float ids": (ids.float(), mask),
        "1-D ids": (ids[0], mask[0]),
        "mask shape": (ids, mask[:, :5]),
        "mask values": (ids, mask * 2),
        "float mask": (ids, mask.float()),
        "foreign ids": (ids.clamp(max=1) * len(tokenizer), mask),
        "pads first": (ids, late),
        "empty caption": (ids, empty),
        "no captions": (ids[:0], mask[:0]),
    }[mistake]


@pytest.mark.parametrize("mistake, message", [
    ("float ids", "input_ids must be a \\(B, T\\) long tensor"),
    ("1-D ids", "input_ids must be a \\(B, T\\) long tensor"),
    ("mask shape", "attention_mask must be a tensor of input_ids' shape"),
    ("mask values", "attention_mask must be bool or integer 0/1"),
    ("float mask", "attention_mask must be bool or integer 0/1"),
    ("foreign ids", "token ids must lie in \\[0, 30522\\)"),
    ("pads first", "row 1 has a real token after a pad: real tokens must come first"),
    ("empty caption", "caption 1 has no real token"),
    ("no captions", "input_ids of shape \\(0, 19\\) is empty"),
])
def test_gru_tower_names_bad_inputs(tokenizer, batch, mistake, message):
    with pytest.raises(ValueError, match=message):
        tiny(tokenizer)(*bad_input(tokenizer, batch, mistake))


@pytest.mark.parametrize("captions, message", [
    ("A dog.", "captions must be a non-empty list of strings"),
    ([], "captions must be a non-empty list of strings"),
    (["A dog.", "  "], "caption 1 is '  ': every caption must be a non-empty string"),
    (["A dog.", None], "caption 1 is None"),
])
def test_tokenize_captions_names_bad_captions(tokenizer, captions, message):
    with pytest.raises(ValueError, match=message):
        tokenize_captions(tokenizer, captions)


def test_gru_tower_names_a_pad_id_outside_the_vocabulary():
    with pytest.raises(ValueError, match="pad_id 10 is outside the vocabulary \\[0, 10\\)"):
        GRUTower(10, 10)
