"""The four retrieval models: interface, scoring formula, chunked all-pairs scoring."""
import torch
import pytest
import torch.nn.functional as F

from helpers.features import synthetic_featureset
from helpers.models import MODELS, build_model, score_all, word_region_scores

SMALL = dict(image_dim=32, text_dim=24, dim=16, dual_hidden=16, private_dim=8)


@pytest.fixture(scope="module")
def fs():
    return synthetic_featureset(n_images=6, image_dim=32, text_dim=24, regions=9)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_batch_scores_equal_chunked_all_pairs(name, fs):
    torch.manual_seed(0)
    model = build_model(name, **SMALL).eval()
    regions, pooled = fs.image_batch(torch.arange(fs.n_images))
    tokens, mask, tp = fs.text_batch(torch.arange(fs.n_captions))
    with torch.no_grad():
        full = model.score(model.encode_images(regions, pooled), model.encode_texts(tokens, mask, tp))
    chunked = score_all(model, fs, chunk=4)
    assert full.shape == chunked.shape == (6, 30)
    assert torch.allclose(full, chunked, atol=1e-5)


def test_word_region_scores_equal_the_direct_formula(fs):
    torch.manual_seed(0)
    model = build_model("decoupled", heads=2, **SMALL)
    tokens, mask, tp = fs.text_batch(torch.arange(4))
    regions, pooled = fs.image_batch(torch.arange(3))
    words, reg = model.text_proj(tokens), model.image_proj(regions)
    got = word_region_scores(model.attn, words, mask, reg)
    for n in range(4):
        for m in range(3):
            _, weights = model.attn(words[n:n + 1], reg[m:m + 1], text_mask=mask[n:n + 1])   # (1, H, T, R)
            v = F.normalize(model.attn.value(reg[m]), dim=-1).unflatten(-1, (2, -1)).transpose(0, 1)  # (H, R, d)
            attended = (weights[0] @ v).transpose(0, 1).flatten(1)                              # (T, D)
            sim = (F.normalize(words[n], dim=-1) * attended).sum(-1)[mask[n]]
            assert torch.allclose(got[n, m], sim.mean(), atol=1e-5)


def test_padding_does_not_change_scores(fs):
    torch.manual_seed(0)
    for name in ["joint", "decoupled", "decoupled_plus"]:
        model = build_model(name, **SMALL).eval()
        rows = torch.tensor([0, 1])
        t1, m1, p1 = fs.text_batch(rows)
        t2, m2, p2 = fs.text_batch(rows, pad_to=t1.shape[1] + 5)
        t2[:, t1.shape[1]:] = 50.0  # garbage in the padding
        img = model.encode_images(*fs.image_batch(torch.arange(3)))
        with torch.no_grad():
            a = model.score(img, model.encode_texts(t1, m1, p1))
            b = model.score(img, model.encode_texts(t2, m2, p2))
        assert torch.allclose(a, b, atol=1e-5), name


def test_blog_attention_option_builds_the_blogs_module():
    model = build_model("decoupled", attention="blog", **SMALL)
    assert model.attn.value is None


def test_decoupled_plus_has_its_own_losses(fs):
    model = build_model("decoupled_plus", **SMALL)
    img = model.encode_images(*fs.image_batch(torch.arange(4)))
    txt = model.encode_texts(*fs.text_batch(torch.arange(4)))
    extra = model.extra_losses(img, txt)
    assert set(extra) == {"difference", "reconstruction"} and all(v.item() > 0 for v in extra.values())
    assert model.scoring_parameters() < sum(p.numel() for p in model.parameters())


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'dul'; choose one of"):
        build_model("dul")


def test_score_all_on_chosen_rows_equals_the_full_matrix(fs):
    torch.manual_seed(0)
    model = build_model("decoupled", **SMALL)
    full = score_all(model, fs)
    part = score_all(model, fs, image_rows=torch.tensor([4, 1]), caption_rows=torch.tensor([29, 0, 7]))
    assert torch.allclose(part, full[[4, 1]][:, [29, 0, 7]], atol=1e-6)


def test_text_batch_unpacks_each_caption_and_zero_pads(fs):
    rows = torch.tensor([4, 0, 17])
    tokens, mask, pooled = fs.text_batch(rows, pad_to=int(fs.lengths().max()) + 2)
    for i, r in enumerate(rows.tolist()):
        n = int(fs.lengths()[r])
        assert torch.equal(tokens[i, :n], fs.tokens[fs.offsets[r]:fs.offsets[r + 1]].float())
        assert torch.all(tokens[i, n:] == 0) and mask[i].sum() == n and not mask[i, n:].any()
    assert torch.equal(pooled, fs.text_pooled[rows].float())
