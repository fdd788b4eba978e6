"""Each of 08's variants does what its name says, and only that (helpers.models, losses, pretraining,
pipeline.ablations)."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from helpers import features, losses, models, pretraining, train
from helpers.fast import scoring
from helpers.features import synthetic_featureset
from helpers.pipeline import ablations, recipes, runs

SHAPE = {"image_dim": 48, "text_dim": 24}


@pytest.fixture(scope="module")
def fs():
    return synthetic_featureset(n_images=16, regions=9, image_dim=48, text_dim=24, max_len=12, seed=4)


def batch(fs, n=6):
    rows = torch.arange(n)
    return (*fs.image_batch(rows), *fs.text_batch(rows * 5))        # image i with its first caption


VARIANT_MODELS = ("no_value", "counts_padding", "raw_regions", "local_consistency", "word_diversity", "masked_reconstruction")


@pytest.mark.parametrize("name", VARIANT_MODELS)
def test_fast_paths_equal_the_readable_scores(fs, name, one_thread):
    torch.manual_seed(0)
    model = models.build_model(name, dim=16, **SHAPE).eval()
    torch.testing.assert_close(scoring.score_all(model, fs), models.score_all(model, fs), atol=1e-5, rtol=0)
    regions, pooled, tokens, mask, tpooled = batch(fs)
    img, txt = model.encode_images(regions, pooled), model.encode_texts(tokens, mask, tpooled)
    torch.testing.assert_close(scoring.batch_scores(model, img, txt), model.score(img, txt), atol=1e-5, rtol=0)


def test_no_value_attends_over_the_regions_themselves(fs):
    model = models.build_model("no_value", dim=16, **SHAPE)
    regions, pooled, tokens, mask, tpooled = batch(fs, 2)
    r, w = model.encode_images(regions, pooled)["regions"], model.encode_texts(tokens, mask, tpooled)["words"]
    _, attended = model.word_vectors(w, mask, r)
    alpha = models.affinity(model.attn, w, r).softmax(-1)
    torch.testing.assert_close(attended, torch.einsum("ntmr,mrd->ntmd", alpha, r))
    assert not any("value" in n for n, _ in model.named_parameters())


def test_counts_padding_scores_change_with_padding_and_the_baseline_does_not(fs):
    regions, pooled = fs.image_batch(torch.arange(4))
    rows = torch.tensor([0, 5])
    for name, moves in [("counts_padding", True), ("decoupled", False)]:
        torch.manual_seed(0)
        model = models.build_model(name, dim=16, text_length=0, **SHAPE).eval()   # the caller's padding
        img = model.encode_images(regions, pooled)
        short, long = (model.score(img, model.encode_texts(*fs.text_batch(rows, pad_to=p)[:2], None))
                       for p in (None, 30))
        assert (not torch.allclose(short, long, atol=1e-6)) == moves, name


def test_raw_regions_keys_and_values_read_the_backbone_features(fs):
    model = models.build_model("raw_regions", dim=16, **SHAPE)
    regions, pooled = fs.image_batch(torch.arange(2))
    assert model.image_proj is None and model.attn.key.in_features == model.attn.value.in_features == 48
    assert torch.equal(model.encode_images(regions, pooled)["regions"], regions)


def test_local_consistency_is_zero_for_agreeing_neighbours_and_needs_a_square_grid():
    same = torch.randn(3, 1, 8).expand(3, 9, 8)
    assert float(losses.local_consistency_loss(same)) == pytest.approx(0, abs=1e-6)
    assert float(losses.local_consistency_loss(torch.randn(3, 9, 8))) > 0.5
    checker = torch.tensor([1.0, -1.0]).repeat(5)[:9, None] * torch.ones(1, 9, 4)   # every neighbour opposite
    assert float(losses.local_consistency_loss(checker.view(1, 9, 4))) == pytest.approx(2)
    with pytest.raises(ValueError, match="square grid"):
        losses.local_consistency_loss(torch.randn(1, 8, 4))


def test_word_diversity_counts_real_words_only():
    words = torch.eye(4)[None].repeat(2, 1, 1)                             # orthogonal words: 0
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    assert float(losses.word_diversity_loss(words, mask)) == pytest.approx(0, abs=1e-6)
    same = torch.ones(2, 4, 4)
    assert float(losses.word_diversity_loss(same, mask)) == pytest.approx(1)
    padded = same.clone()
    padded[0, 3] = -1                                                      # a pad pointing away: ignored
    assert float(losses.word_diversity_loss(padded, mask)) == pytest.approx(1)


def test_masked_reconstruction_is_zero_when_perfect_and_sees_only_hidden_positions():
    target = torch.randn(2, 5, 3)
    hidden = torch.tensor([[True, False, False, True, False], [False, False, True, False, False]])
    assert float(losses.masked_reconstruction_loss(target.clone(), target, hidden)) == 0
    rebuilt = target.clone()
    rebuilt[~hidden] += 10                                                 # visible positions: not scored
    assert float(losses.masked_reconstruction_loss(rebuilt, target, hidden)) == 0
    moved = target.clone()
    moved[hidden] += 1                                                     # hidden targets change: the loss does
    assert float(losses.masked_reconstruction_loss(target, moved, hidden)) == pytest.approx(1)


def test_masked_reconstruction_model_rebuilds_each_modality_from_the_other_only(fs):
    torch.manual_seed(0)
    model = models.build_model("masked_reconstruction", dim=16, aux_weight=1.0, **SHAPE)
    regions, pooled, tokens, mask, tpooled = batch(fs, 4)
    img, txt = model.encode_images(regions, pooled), model.encode_texts(tokens, mask, tpooled)
    other_img = model.encode_images(regions + torch.randn_like(regions), pooled)
    other_txt = model.encode_texts(tokens + torch.randn_like(tokens), mask, tpooled)
    with torch.no_grad():
        regions_rebuilt, words_rebuilt = model.rebuild(img, txt)
        assert torch.equal(model.rebuild(other_img, txt)[0], regions_rebuilt)   # regions: from the words
        assert torch.equal(model.rebuild(img, other_txt)[1], words_rebuilt)     # words: from the regions
        assert not torch.allclose(model.rebuild(img, other_txt)[0], regions_rebuilt)
        padded = dict(txt, words=txt["words"].masked_fill(~mask[..., None], 5.0))
        torch.testing.assert_close(model.rebuild(img, padded)[0], regions_rebuilt)  # pads do not answer
        torch.manual_seed(1)
        loss = model.extra_losses(img, txt)["masked_reconstruction"]
    assert loss.item() > 0
    model.cfg = dataclasses.replace(model.cfg, aux_weight=0.0)
    assert model.extra_losses(img, txt)["masked_reconstruction"].item() == 0


def test_pointwise_loss_judges_each_pair_alone():
    scores = torch.randn(5, 5)
    scale = torch.tensor(2.0).log()
    before = losses.pointwise(scores, scale)
    other = scores.clone()
    other[0, 3] += 5                                                       # neither pair 0 nor its one negative (0, 1)
    assert torch.equal(losses.pointwise(other, scale), before)
    other[0, 1] += 5                                                       # its negative: the loss grows
    assert float(losses.pointwise(other, scale)) > float(before)
    with pytest.raises(ValueError, match="loss must be one of"):
        train.TrainConfig(loss="hinge")


def test_pretraining_lowers_its_loss_and_the_run_starts_from_its_weights(fs, tmp_path):
    one = synthetic_featureset(n_images=64, captions_per_image=1, regions=9, image_dim=48, text_dim=24, seed=5)
    torch.manual_seed(0)                       # one caption per image: no twin caption among the negatives
    model = models.build_model("decoupled", dim=16, **SHAPE)
    history = pretraining.pretrain_projections(model, one, epochs=6, batch_size=32, lr=3e-3)
    assert history["image"][-1] < history["image"][0] and history["text"][-1] < history["text"][0]
    weights = {k: v for k, v in model.state_dict().items() if k.startswith(("image_proj", "text_proj"))}
    path = tmp_path / "pretrained.pt"
    torch.save(weights, path)
    plain = train.make_model(train.TrainConfig(seed=3, device="cpu", model_overrides={"dim": 16}), fs)
    started = train.make_model(train.TrainConfig(seed=3, device="cpu", model_overrides={"dim": 16}, init_from=str(path)), fs)
    for k, v in started.state_dict().items():
        torch.testing.assert_close(v, weights[k] if k in weights else plain.state_dict()[k], rtol=0, atol=0)
    torch.save({"nonsense.weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="does not fit"):
        train.make_model(train.TrainConfig(device="cpu", init_from=str(path)), fs)


def test_two_views_keep_real_positions_only_and_at_least_one():
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        for view in pretraining.two_views(torch.zeros(2, 4, 1), mask, 0.3, g):
            assert not (view & ~mask).any() and view.any(1).all()


def test_logits_features_are_the_classifier_on_the_pooled_vector(fs):
    classifier = nn.Linear(48, 10)
    out = features.logits_features(fs, classifier)
    assert out.regions.shape == (fs.n_images, 1, 10)
    torch.testing.assert_close(out.regions[:, 0].float(), classifier(fs.pooled.float()).detach().half().float())
    assert torch.equal(out.tokens, fs.tokens) and out.source != fs.source


def test_subsample_is_nested_and_keeps_captions_with_their_images(fs):
    quarter, half = features.subsample(fs, 0.25), features.subsample(fs, 0.5)
    assert (quarter.n_images, half.n_images) == (4, 8)
    assert set(quarter.image_ids.tolist()) <= set(half.image_ids.tolist())
    assert quarter.n_captions == 5 * quarter.n_images
    assert (quarter.image_ids[quarter.caption_image] == fs.image_ids[fs.caption_image][
        torch.isin(fs.caption_ids, quarter.caption_ids)]).all()
    with pytest.raises(ValueError):
        features.subsample(fs, 0)


def test_a_run_saved_before_a_setting_existed_resumes_with_its_default(tmp_path):
    train_fs, val_fs = features.synthetic_split(24)
    cfg = train.TrainConfig(epochs=1, batch_size=8, device="cpu", progress=False)
    train.train(cfg, train_fs, val_fs, tmp_path)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    del state["train_config"]["init_from"], state["model_config"]["aux_weight"]   # as an older course saved it
    del state["train_config"]["train_fraction"], state["model_config"]["mask_padding"]
    torch.save(state, tmp_path / "last.pt")
    torch.save(state, tmp_path / "best.pt")
    train.train(cfg, train_fs, val_fs, tmp_path)                         # reused, not "another configuration"


@pytest.mark.parametrize("variant", sorted(ablations.VARIANTS))
def test_each_variant_changes_one_thing_of_the_baseline_configuration(variant):
    from dataclasses import asdict

    base = asdict(recipes.train_config("decoupled", "cpu", 1))
    weight = 1.0 if ablations.swept(variant) else None
    changed = asdict(ablations.variant_config(variant, "cpu", 1, weight))
    diffs = {k for k in base if base[k] != changed[k]}
    want = set(ablations.VARIANTS[variant][2])
    if ablations.swept(variant):
        want |= {"model_overrides"}
        assert changed["model_overrides"] == {**base["model_overrides"], "aux_weight": 1.0}
    assert diffs == want, variant
    if variant == "pretrained":
        assert changed["init_from"] == ablations.pretrained_projections("cpu", 1)
    if ablations.swept(variant):
        with pytest.raises(ValueError, match="aux_weight"):
            ablations.variant_config(variant)


def test_saved_ranks_come_back_as_they_were(tmp_path):
    rng = np.random.default_rng(0)

    def run():
        return {"img_rank": rng.integers(0, 5000, 10), "cap_rank": rng.integers(0, 1000, 50)}

    variants = {"no_value": [run() for _ in ablations.SEEDS]}
    scale = {("dual", 0.25): [run() for _ in ablations.SEEDS]}
    ablations.save_ranks(variants, scale, tmp_path / "r.npz")
    v, s = ablations.load_ranks(tmp_path / "r.npz")
    for want, got in [(variants["no_value"], v["no_value"]), (scale["dual", 0.25], s["dual", 0.25])]:
        assert all(np.array_equal(a[k], b[k]) for a, b in zip(want, got) for k in ("img_rank", "cap_rank"))


def test_the_imagenet_classifier_is_the_backbones_own_head():
    from helpers.encoders import load_image_encoder

    encoder, _ = load_image_encoder()
    pooled = torch.randn(2, encoder.head.in_features)
    with torch.no_grad():
        torch.testing.assert_close(runs.imagenet_classifier()(pooled), encoder.classify(pooled))


def _scale_runs(rng, means: dict):
    """{(model, fraction): rank level} -> 3 seeds each of a 40-image test set, most queries at that level."""
    def run(level):
        return {"img_rank": np.where(rng.random(40) < 0.5, level, 0), "cap_rank": np.where(rng.random(200) < 0.5, level, 0)}
    return {key: [run(level) for _ in range(3)] for key, level in means.items()}


@pytest.mark.parametrize("levels, word", [((0, 12, 0, 0), "narrows"), ((5, 12, 0, 12), "widens"), ((0, 12, 0, 20), "holds (no credible change)"),
                                          ((12, 12, 0, 12), "widens (opens from no credible gap)"),
                                          ((12, 12, 12, 12), "holds (no credible change)")])
def test_gap_table_says_narrows_widens_or_holds(levels, word):
    """Half the queries at rank 0 (a hit) or at the level (12 or 20: a miss at every K); dual plays no part."""
    joint_small, dec_small, joint_large, dec_large = levels
    cap = np.repeat(np.arange(40), 5)
    scale = _scale_runs(np.random.default_rng(0), {
        ("joint", 0.25): joint_small, ("decoupled", 0.25): dec_small, ("dual", 0.25): 0,
        ("joint", 1.0): joint_large, ("decoupled", 1.0): dec_large, ("dual", 1.0): 0})
    t = ablations.gap_table(scale, cap, n_boot=200).set_index("gap")
    assert t.loc["joint - decoupled", "the gap"] == word
    assert t.loc["joint - decoupled", "change"] == pytest.approx(
        t.loc["joint - decoupled", "at 100%"] - t.loc["joint - decoupled", "at 25%"])


def test_one_change_names_the_one_field_of_each_variant():
    """Each variant at its tuning's choice differs from `decoupled` in its one change and what its tuning set."""
    tuning = pd.DataFrame([{"variant": v, "tuned": ablations.TUNED[v], "value": x, "val rsum": r}
                           for v, values in [("local_consistency", (0.1, 0.3, 1.0)), ("word_diversity", (0.1, 0.3, 1.0)),
                                             ("masked_reconstruction", (0.1, 0.3, 1.0)), ("pretrained", (2, 5, 10)),
                                             ("loss_vse", (1e-5, 3e-5, 1e-4)), ("loss_pointwise", (1e-5, 3e-5, 1e-4))]
                           for x, r in zip(values, (1, 3, 2))])
    t = ablations.one_change(tuning).set_index("variant")["differs from decoupled in"]
    assert list(t.index) == list(ablations.VARIANTS)
    assert t["no_value"] == "model = no_value"
    assert set(t["loss_vse"].split("; ")) == {"lr = 3e-05", "loss = vse"}      # a learning rate no search chose
    assert t["local_consistency"] == "model = local_consistency; model_overrides = {'aux_weight': 0.3}"
    assert t["word_diversity"].endswith("{'aux_weight': 0.3}") and t["pretrained"].startswith("init_from = ")
    assert t["logits_features"].startswith("image_features = ")


def test_missing_committed_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(ablations, "PATHS", type(ablations.PATHS)(root=tmp_path))
    with pytest.raises(FileNotFoundError, match="make ablations"):
        ablations.load_committed("cpu")
