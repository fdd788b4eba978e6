"""Unimodal probes: the linear probe, the modality probe, one vector per image/caption per model."""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers import probes
from helpers.features import synthetic_featureset
from helpers.models import MODELS, build_model

SMALL = dict(image_dim=32, text_dim=24, dim=16)


@pytest.fixture(scope="module")
def fs():
    return synthetic_featureset(n_images=6, captions_per_image=3, image_dim=32, text_dim=24, regions=9)


def test_linear_probe_is_perfect_on_separable_labels():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (300, 3))
    x = np.concatenate([np.where(y, 3.0, -3.0) + rng.normal(0, 0.3, y.shape), rng.normal(size=(300, 5))], 1)
    out = probes.linear_probe(x[:200], y[:200], x[200:], y[200:], names=["a", "b", "c"])
    assert out["mAP"] == pytest.approx(1.0)
    assert list(out["per_category"].index) == ["a", "b", "c"]
    assert out["per_category"].test_positives.tolist() == y[200:].sum(0).tolist()


def test_linear_probe_is_at_chance_on_shuffled_labels():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(1000, 8)), (rng.random((1000, 2)) < 0.3).astype(int)
    out = probes.linear_probe(x[:600], y[:600], x[600:], y[600:])
    prevalence = out["per_category"].prevalence.mean()        # the AP of a random ranking
    assert abs(out["mAP"] - prevalence) < 0.08


def test_modality_probe_separated_clouds_and_identical_ones():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(600, 4)), rng.normal(size=(700, 4))   # unequal counts: the probe balances them
    assert probes.modality_probe(a[:300] + 4, b[:300], a[300:] + 4, b[300:]) > 0.99
    assert abs(probes.modality_probe(a[:300], b[:300], a[300:], b[300:]) - 0.5) < 0.08


@pytest.mark.parametrize("name", [n for n in MODELS if n != "raw_regions"])   # its regions stay 1280-d
def test_representations_give_one_vector_per_image_and_caption(name, fs):
    torch.manual_seed(0)
    model = build_model(name, **SMALL)
    reps = probes.representations(model, fs, chunk=4)
    assert reps["image"].shape == (6, 16) and reps["text"].shape == (18, 16)
    some = probes.representations(model, fs, captions=torch.tensor([5, 0]))
    assert some["text"].shape == (2, 16) and some["caption_rows"].tolist() == [5, 0]
    assert torch.allclose(some["text"], reps["text"][[5, 0]], atol=1e-5)
    one = probes.representations(model, fs, captions="one")
    assert one["text"].shape == (6, 16) and torch.equal(fs.caption_image[one["caption_rows"]], torch.arange(6))


def test_decoupled_vectors_are_mean_projections(fs):
    torch.manual_seed(0)
    model = build_model("decoupled", **SMALL).eval()
    reps = probes.representations(model, fs, chunk=4)
    regions, _ = fs.image_batch(torch.tensor([2]))
    tokens = fs.tokens[fs.offsets[7]:fs.offsets[8]].float()          # caption 7's real tokens
    with torch.no_grad():
        assert torch.allclose(reps["image"][2], model.image_proj(regions)[0].mean(0), atol=1e-5)
        assert torch.allclose(reps["text"][7], model.text_proj(tokens).mean(0), atol=1e-5)


def test_joint_mixed_vectors_reproduce_the_score_diagonal(fs):
    torch.manual_seed(0)
    model = build_model("joint", **SMALL).eval()
    reps = probes.representations(model, fs, chunk=4)        # image i is mixed with its first caption
    firsts = probes.first_captions(fs)
    assert firsts.tolist() == [0, 3, 6, 9, 12, 15]
    regions, pooled = fs.image_batch(torch.arange(6))
    with torch.no_grad():
        full = model.score(model.encode_images(regions, pooled), model.encode_texts(*fs.text_batch(firsts)))
    cos = F.cosine_similarity(reps["image"], reps["text"][firsts], dim=-1)
    assert torch.allclose(cos, full.diagonal(), atol=1e-5)
    unmixed = probes.representations(model, fs, mixed=False)
    assert not torch.allclose(unmixed["image"], reps["image"], atol=1e-3)


def test_one_caption_per_image_is_fixed_and_belongs_to_the_image(fs):
    pick = probes.one_caption_per_image(fs, seed=3)
    assert torch.equal(pick, probes.one_caption_per_image(fs, seed=3))
    assert torch.equal(fs.caption_image[pick], torch.arange(6))


class _Subset:
    """Just the captions table that `category_targets` reads."""

    def __init__(self, fs, texts):
        self.captions = pd.DataFrame({"caption_id": fs.caption_ids.tolist(),
                                      "image_id": fs.image_ids[fs.caption_image].tolist(), "caption": texts})


def test_category_targets_keep_frequent_categories_and_drop_person():
    train, test = synthetic_featureset(n_images=4, captions_per_image=1), \
        synthetic_featureset(n_images=2, captions_per_image=1, seed=1)
    test.image_ids += 100
    test.caption_ids += 100
    texts = ["a man with a dog", "two dogs and a cat", "a man and a cat", "a man on a bench",   # train
             "a dog", "a woman with a cat"]                                                      # test
    sub = _Subset(train, texts[:4])
    sub.captions = pd.concat([sub.captions, _Subset(test, texts[4:]).captions])
    y_train, y_test, names = probes.category_targets(sub, train, test, min_positives=2, min_test=1)
    assert names == ["cat", "dog"]                   # person dropped, bench too rare
    assert y_train.tolist() == [[0, 1], [1, 1], [1, 0], [0, 0]]
    assert y_test.tolist() == [[0, 1], [1, 0]]
    assert probes.text_targets(y_test, test).tolist() == [[0, 1], [1, 0]]


def test_probe_table_rows_in_order(fs):
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]])
    reps = {n: {"train": probes.raw_representations(fs, c), "test": probes.raw_representations(fs, c)}
            for n, c in (("all", "all"), ("one", "one"))}
    assert len(reps["one"]["test"]["text"]) == 6
    table = probes.probe_table(reps, fs, fs, y, y)
    assert list(table.index) == ["all", "one"] and list(table.columns) == ["image mAP", "text mAP"]
    assert table["image mAP"].tolist() == [1.0, 1.0]          # probed on its own training images
    with pytest.raises(ValueError, match="captions must be"):
        probes.raw_representations(fs, "some")


def test_text_vectors_average_real_words_even_for_a_model_that_counts_padding(fs):
    """The blog's scores count padding; its probed caption vector is still the mean of its real words."""
    torch.manual_seed(0)
    model = build_model("blog", **SMALL).eval()
    reps = probes.representations(model, fs, chunk=4)                 # captions of several lengths per chunk
    tokens = fs.tokens[fs.offsets[7]:fs.offsets[8]].float()
    with torch.no_grad():
        torch.testing.assert_close(reps["text"][7], model.text_proj(tokens).mean(0), atol=1e-5, rtol=0)


def test_same_size_controls_have_the_models_width_and_are_fitted_on_train(fs):
    train = probes.raw_representations(fs, captions="one")
    test = probes.raw_representations(fs.select_images(torch.arange(3)), captions="one")
    controls = probes.same_size_controls(train, test, dim=4)
    assert set(controls) == {"PCA-4 of raw features", "random 4-d projection"}
    for reps in controls.values():
        assert reps["train"]["image"].shape == (6, 4) and reps["test"]["text"].shape == (3, 4)
        assert torch.equal(reps["test"]["caption_rows"], test["caption_rows"])
    pca = controls["PCA-4 of raw features"]["train"]["image"].numpy()
    assert abs(pca.mean(0)).max() < 1e-4                                # centred on the train split
    again = probes.same_size_controls(train, test, dim=4)                # seeded: the same projection
    assert torch.equal(again["random 4-d projection"]["test"]["image"], controls["random 4-d projection"]["test"]["image"])
