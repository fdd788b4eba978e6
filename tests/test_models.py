"""The retrieval models: interface, the factorial's formulas, the blog's module, the registry, chunked all-pairs scoring."""
import torch
import pytest
import torch.nn.functional as F

from helpers.features import synthetic_featureset
from helpers.models import MODELS, build_model, masked_mean, score_all

SMALL = dict(image_dim=32, text_dim=24, dim=16)


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


def _direct(model, words, mask, regions, n, m):
    """One caption n and one image m, word by word with the attention module itself -> text_t, image_t (T, D)."""
    t = int(mask[n].sum())
    w, reg = words[n, :t], regions[m]
    attended, _ = model.attn(w[None], reg[None])                        # (1, T, D): Σ_r α_tr v_r
    v = model.attn.value(reg)
    if model.cfg.flow == "none":
        return w, v.mean(0).expand(t, -1)
    if model.cfg.flow == "text_to_image":
        return w, attended[0]
    beta = (model.attn.query(w) @ model.attn.key(reg).t() / model.attn.temperature).softmax(0)   # (T, R) over words
    image = reg.mean(0) + (beta.t() @ model.text_value(w)).mean(0)
    return w + attended[0], image.expand(t, -1)


@pytest.mark.parametrize("name", ["dual", "dual_words", "decoupled_pooled", "decoupled", "joint", "joint_words"])
def test_factorial_scores_equal_the_definitions_pair_by_pair(name, fs):
    torch.manual_seed(0)
    model = build_model(name, **SMALL).eval()
    tokens, mask, tp = fs.text_batch(torch.arange(4))
    regions, pooled = fs.image_batch(torch.arange(3))
    img, txt = model.encode_images(regions, pooled), model.encode_texts(tokens, mask, tp)
    with torch.no_grad():
        got = model.score(img, txt)                                      # (3, 4)
        for n in range(4):
            for m in range(3):
                text_t, image_t = _direct(model, txt["words"], mask, img["regions"], n, m)
                if model.cfg.head == "words":                            # mean of per-word full cosines (SCAN)
                    want = F.cosine_similarity(text_t, image_t, dim=-1).mean()
                else:                                                    # cosine of the mean vectors
                    want = F.cosine_similarity(text_t.mean(0), image_t.mean(0), dim=0)
                assert torch.allclose(got[m, n], want, atol=1e-5), (name, n, m)


def test_the_factorial_differs_in_one_thing_at_a_time():
    sizes = {name: sum(p.numel() for p in build_model(name, **SMALL).parameters())
             for name in ["dual", "dual_words", "decoupled_pooled", "decoupled", "joint", "joint_words"]}
    assert sizes["dual"] == sizes["dual_words"] == sizes["decoupled_pooled"] == sizes["decoupled"]
    assert sizes["joint"] == sizes["joint_words"] == sizes["decoupled"] + 16 * 16 + 16   # + text_value
    assert build_model("joint_words").cfg.flow == "both" and build_model("joint_words").cfg.head == "words"


def test_padding_does_not_change_scores_except_where_padding_counts(fs):
    torch.manual_seed(0)
    for name in MODELS:
        model = build_model(name, text_length=0, **SMALL).eval()        # the caller's padding
        rows = torch.tensor([0, 1])
        t1, m1, p1 = fs.text_batch(rows)
        t2, m2, p2 = fs.text_batch(rows, pad_to=t1.shape[1] + 5)
        img = model.encode_images(*fs.image_batch(torch.arange(3)))
        with torch.no_grad():
            a = model.score(img, model.encode_texts(t1, m1, p1))
            b = model.score(img, model.encode_texts(t2, m2, p2))
        if not model.cfg.mask_padding:                                   # the blog's bug: pads count
            assert not torch.allclose(a, b, atol=1e-4)
        else:
            assert torch.allclose(a, b, atol=1e-5), name


def test_blog_model_is_the_blogs_module_as_written(fs):
    """No value projection, √dim temperature, no masks: the scores equal the blog's forward on the
    projected features, averaged over every position, padding included."""
    from helpers.blog import DecoupledAttention as BlogAttention

    torch.manual_seed(0)
    model = build_model("blog", **SMALL).eval()
    assert model.attn.value is None and model.attn.temperature == 16 ** 0.5
    blog = BlogAttention(16)
    blog.query.load_state_dict(model.attn.query.state_dict())
    blog.key.load_state_dict(model.attn.key.state_dict())
    tokens, mask, tp = fs.text_batch(torch.arange(3))
    regions, pooled = fs.image_batch(torch.arange(2))
    img, txt = model.encode_images(regions, pooled), model.encode_texts(tokens, mask, tp)
    with torch.no_grad():
        got = model.score(img, txt)
        for n in range(3):
            for m in range(2):
                attended = blog(txt["words"][n:n + 1], img["regions"][m:m + 1])[0]   # (T, D), every position
                want = F.cosine_similarity(txt["words"][n], attended, dim=-1).mean()
                assert torch.allclose(got[m, n], want, atol=1e-5)


@pytest.mark.parametrize("name", ["local_consistency", "word_diversity", "masked_reconstruction"])
def test_the_added_terms_are_each_models_own_losses(name, fs):
    torch.manual_seed(0)
    model = build_model(name, aux_weight=1.0, **SMALL)
    img = model.encode_images(*fs.image_batch(torch.arange(4)))
    txt = model.encode_texts(*fs.text_batch(torch.arange(0, 20, 5)))
    extra = model.extra_losses(img, txt)
    assert set(extra) == {name} and extra[name].item() > 0
    assert build_model("decoupled", **SMALL).extra_losses(img, txt) == {}


@pytest.mark.parametrize("name", ["joint", "joint_words"])
def test_matched_vectors_are_each_pairs_own_word_vectors_pooled(name, fs):
    """Matched pairs at once = `word_vectors` of each pair alone, pooled over its real words."""
    torch.manual_seed(4)
    model = build_model(name, **SMALL).eval()
    img = model.encode_images(*fs.image_batch(torch.tensor([0, 2, 5])))
    txt = model.encode_texts(*fs.text_batch(torch.tensor([0, 11, 27])))
    assert txt["mask"].sum(1).unique().numel() > 1                          # captions of different lengths
    with torch.no_grad():
        image, text = model.matched_vectors(img, txt)
        for i in range(3):
            mask = txt["mask"][i:i + 1]
            text_t, image_t = model.word_vectors(txt["words"][i:i + 1], mask, img["regions"][i:i + 1])
            torch.testing.assert_close(image[i], masked_mean(image_t.expand_as(text_t)[:, :, 0], mask)[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(text[i], masked_mean(text_t[:, :, 0], mask)[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="flow 'both'"):
        build_model("decoupled", **SMALL).matched_vectors(img, txt)


def test_the_registry_builds_every_model_with_its_settings():
    for name, (cls, presets) in MODELS.items():
        model = build_model(name, **SMALL)
        assert type(model) is cls and model.cfg.name == name
        assert all(getattr(model.cfg, k) == v for k, v in presets.items()), name
    assert build_model("no_value").cfg.value is False and build_model("counts_padding").cfg.mask_padding is False
    assert build_model("blog").cfg.value is False and build_model("blog").cfg.mask_padding is False


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


def test_masked_mean_refuses_empty_and_non_bool_masks():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="row with no True"):        # 0 / 0 = NaN before
        masked_mean(x, torch.tensor([[True, True, False], [False, False, False]]))
    with pytest.raises(ValueError, match="must be a bool tensor"):    # a float mask used to be averaged as weights
        masked_mean(x, torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))


@pytest.mark.parametrize("name", ["decoupled", "joint", "joint_words", "dual"])
def test_models_refuse_empty_and_non_bool_caption_masks(name, fs):
    model = build_model(name, **SMALL).eval()
    regions, pooled = fs.image_batch(torch.arange(3))
    tokens, mask, tp = fs.text_batch(torch.arange(3))
    img = model.encode_images(regions, pooled)
    empty = mask.clone()
    empty[1] = False
    with pytest.raises(ValueError, match="row with no True"):
        model.score(img, model.encode_texts(tokens, empty, tp))
    with pytest.raises(ValueError, match="must be a bool tensor"):   # ~mask was a raw TypeError for "both"
        model.score(img, model.encode_texts(tokens, mask.long(), tp))
    if model.cfg.flow == "both":
        with pytest.raises(ValueError, match="must be a bool tensor"):
            model.matched_vectors(img, model.encode_texts(tokens, mask.float(), tp))


def test_masked_reconstruction_refuses_a_float_mask(fs):
    model = build_model("masked_reconstruction", **SMALL)
    tokens, mask, tp = fs.text_batch(torch.arange(3))
    with pytest.raises(ValueError, match="must be a bool tensor"):
        model.encode_texts(tokens, mask.float(), tp)
