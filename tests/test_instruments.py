"""07's instruments that can fail: probes on the scored vectors (after attention), the deletion test of
faithfulness beside the pointing game, interference of one modality with the other's scored vectors."""
import numpy as np
import pandas as pd
import pytest
import torch

from helpers import pointing, probes
from helpers.features import FeatureSet, synthetic_featureset
from helpers.models import MODELS, FactorialModel, build_model, masked_mean
from helpers.pipeline import evaluation, features_kept

SMALL = dict(image_dim=32, text_dim=24, dim=16)


@pytest.fixture(scope="module")
def fs():
    return synthetic_featureset(n_images=6, captions_per_image=3, image_dim=32, text_dim=24, regions=9)


def _model(name):
    torch.manual_seed(0)
    return build_model(name, **SMALL).eval()


def _encode(model, fs, images, captions):
    img = model.encode_images(*fs.image_batch(images))
    return img, model.encode_texts(*fs.text_batch(captions, pad_to=int(fs.lengths().max())))


# ------------------------------------------------------------------- scored vectors

@pytest.mark.parametrize("name", list(MODELS))
def test_pair_scores_are_the_diagonal_of_score(name, fs):
    model, rows = _model(name), torch.tensor([0, 4, 8, 13, 17])
    with torch.no_grad():
        img, txt = _encode(model, fs, fs.caption_image[rows], rows)
        assert torch.allclose(model.pair_scores(img, txt), model.score(img, txt).diagonal(), atol=1e-5)
        image, text = model.pair_vectors(img, txt)
    assert image.shape == text.shape == (5, 16)


@pytest.mark.parametrize("name", [n for n, (cls, _) in MODELS.items() if issubclass(cls, FactorialModel)])
def test_pair_vectors_pool_the_diagonal_of_word_vectors(name, fs):
    model, rows = _model(name), torch.tensor([1, 5, 9])
    with torch.no_grad():
        img, txt = _encode(model, fs, fs.caption_image[rows], rows)
        text_t, image_t = model.word_vectors(txt["words"], txt["mask"], img["regions"])
        full = [x.expand(3, txt["words"].shape[1], 3, 16) for x in (text_t, image_t)]
        diag = [masked_mean(x[torch.arange(3), :, torch.arange(3)], txt["mask"]) for x in full]
        image, text = model.pair_vectors(img, txt)
    assert torch.allclose(text, diag[0], atol=1e-5) and torch.allclose(image, diag[1], atol=1e-5)


@pytest.mark.parametrize("name", ["dual", "decoupled_pooled", "decoupled", "joint", "joint_words", "blog"])
def test_scored_representations_shapes(name, fs):
    model = _model(name)
    for partner in probes.PARTNERS:
        reps = probes.scored_representations(model, fs, captions="all", partner=partner, chunk=4)
        assert reps["image"].shape == (6, 16) and reps["text"].shape == (18, 16)
        assert reps["caption_rows"].tolist() == list(range(18))


def test_dual_scored_vectors_are_its_own_ones(fs):
    model = _model("dual")
    own = probes.representations(model, fs, captions="one")
    for partner in probes.PARTNERS:
        scored = probes.scored_representations(model, fs, captions="one", partner=partner)
        assert torch.allclose(scored["text"], own["text"], atol=1e-5)
        with torch.no_grad():      # no attention: the head compares the value projection of the mean region
            assert torch.allclose(scored["image"], model.attn.value(own["image"]), atol=1e-5)


def test_joint_scored_text_is_its_mixed_text(fs):
    model = _model("joint")
    mixed = probes.representations(model, fs, captions="one")
    assert torch.allclose(probes.scored_representations(model, fs)["text"], mixed["text"], atol=1e-5)


def test_other_images_never_pair_an_image_with_itself():
    other = probes.other_images(7, seed=3)
    assert (other != torch.arange(7)).all() and sorted(other.tolist()) == list(range(7))
    assert torch.equal(other, probes.other_images(7, seed=3))
    with pytest.raises(ValueError, match="at least 2 images"):
        probes.other_images(1)


def test_bad_inputs_are_rejected(fs):
    with pytest.raises(ValueError, match="partner must be one of"):
        probes.scored_representations(_model("decoupled"), fs, partner="mine")
    with pytest.raises(ValueError, match="pair row by row"):
        probes.pair_vectors(_model("decoupled"), fs, torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="must lie in"):
        pointing.pair_scores_without(_model("decoupled"), fs, torch.tensor([0]), torch.tensor([0]), torch.tensor([9]))


# ------------------------------------------------------------------- interference

@pytest.mark.parametrize("name, image_zero, text_zero", [("dual", True, True), ("decoupled_pooled", False, True),
                                                        ("decoupled", False, True), ("blog", False, True),
                                                        ("joint", False, False), ("joint_words", False, False)])
def test_the_side_without_attention_has_zero_interference(name, image_zero, text_zero, fs):
    # The flow's construction, read at the captions' own lengths: at the blog's fixed 64 positions the zero pad
    # rows (one query, the same attended image for every caption) outweigh a 3-word synthetic caption.
    torch.manual_seed(0)
    model = build_model(name, **SMALL, **({"text_length": 0} if name == "blog" else {})).eval()
    cases = probes.interference_cases(model, fs)
    assert list(cases.columns) == ["image_id", "caption_id", "image_change", "text_change"] and len(cases) == 6
    for col, zero in (("image_change", image_zero), ("text_change", text_zero)):
        assert (cases[col].abs().max() < features_kept.ZERO) == zero, col


def test_interference_rows_say_which_side_is_zero_by_construction(fs):
    results = {name: [probes.interference_cases(build_model(name, **SMALL).eval(), fs) for _ in range(2)]
               for name in ("decoupled", "joint_words", "decoupled_pooled", "joint")}
    rows = features_kept.interference_rows(results)
    assert list(rows.columns) == ["the blog claims", "the course measures (95% interval)", "verdict"]
    assert len(rows) == 4
    text = rows[rows["the blog claims"].str.contains("text side")]
    assert text.verdict.str.contains("zero by construction").all()
    assert features_kept.interference_table(results).loc["decoupled", "text_max"] < features_kept.ZERO
    with pytest.raises(ValueError, match="lacks"):
        features_kept.interference_rows({"decoupled": results["decoupled"]})


def test_interference_verdict():
    assert features_kept.interference_verdict(-2, -1, False, False) == "A less"
    assert features_kept.interference_verdict(1, 2, False, False) == "A more"
    assert features_kept.interference_verdict(-1, 1, False, False) == "no credible difference"
    assert features_kept.interference_verdict(0, 0, True, True) == "none in either (no flow)"


# ------------------------------------------------------------------- faithfulness: deletion

class _Tokenizer:
    def __call__(self, text, **kwargs):
        return {"input_ids": ["[CLS]"] + text.split() + ["[SEP]"]}

    def convert_ids_to_tokens(self, ids):
        return list(ids)


class _Coco:
    cats = {1: {"name": "dog"}}
    imgToAnns = {1: [{"category_id": 1, "bbox": [0, 0, 30, 70]}], 2: [{"category_id": 1, "bbox": [0, 0, 70, 70]}]}


class _Subset:
    """Two 70x70 images, each with a dog; a dog over the left 30 px of image 1, the whole of image 2."""

    captions = pd.DataFrame({"caption_id": [10, 11, 20], "image_id": [1, 1, 2],
                             "caption": ["a dog and a dog", "dogs", "a dog"]})
    images = pd.DataFrame({"width": [70, 70], "height": [70, 70]}, index=[1, 2])
    instances = _Coco()

    def instance_image_ids(self):
        return [1, 2]


D = 8
U = torch.tensor([1.0, -1] * (D // 2)) / D ** 0.5        # zero mean: LayerNorm keeps its direction


def _attending_features(peak=(0, 30)):
    """Image b's region peak[b] points along U; every other region and padding is orthogonal to it; words along U."""
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 49, D, generator=g)
    regions = noise - (noise @ U)[..., None] * U
    for b, p in enumerate(peak):
        regions[b, p] = 5 * U + 0.1 * regions[b, p]
    lengths = torch.tensor([7, 3, 4])
    tokens = U + 0.05 * torch.randn(int(lengths.sum()), D, generator=g)
    return FeatureSet(image_ids=torch.tensor([1, 2]), regions=regions.half(), pooled=regions.mean(1).half(),
                      caption_ids=torch.tensor([10, 11, 20]), caption_image=torch.tensor([0, 0, 1]),
                      tokens=tokens.half(), offsets=torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
                      text_pooled=torch.zeros(3, D).half())


def _attending_model(name="decoupled"):
    """Projections, key and value the identity; every word's query along U: words attend to the U region."""
    model = build_model(name, image_dim=D, text_dim=D, dim=D)
    with torch.no_grad():
        for lin in (model.image_proj[0], model.text_proj[0], model.attn.key, model.attn.value):
            lin.weight.copy_(torch.eye(D))
            lin.bias.zero_()
        model.attn.query.weight.zero_()
        model.attn.query.bias.copy_(20 * U)
    return model.eval()


def test_deletion_drops_the_score_more_for_the_attended_region():
    fs = _attending_features()
    df = pointing.deletion_game(_attending_model(), fs, _Subset(), _Tokenizer(), seed=0)
    assert list(df.columns) == pointing.COLUMNS + ["score", "drop_peak", "drop_random", "drop_centre", "effect"]
    assert df.word.tolist() == ["dog", "dog", "dogs", "dog"]
    assert df.hit.tolist() == [True, True, True, True]        # region 0 (image 1) and 30 (image 2) lie in the boxes
    assert (df.score > 0.9).all()
    assert (df.drop_peak > 0.5).all() and (df.drop_random.abs() < 0.05).all() and (df.drop_centre.abs() < 0.05).all()
    assert (df.effect > 0.5).all()
    # the same cases as the pointing game, which the deletion test only adds columns to
    plain = pointing.pointing_game(_attending_model(), fs, _Subset(), _Tokenizer())
    pd.testing.assert_frame_equal(df[pointing.COLUMNS], plain)


def test_deletion_can_fail_when_the_score_ignores_attention():
    fs = _attending_features()
    model = _attending_model()
    with torch.no_grad():
        model.attn.value.weight.zero_()            # every attended vector is the value bias: regions do not matter
        model.attn.value.bias.copy_(U)
    df = pointing.deletion_game(model, fs, _Subset(), _Tokenizer())
    assert df.hit.all() and (df.effect.abs() < 1e-5).all()     # plausible, not faithful


def test_deletion_rejects_a_model_without_attention():
    with pytest.raises(ValueError, match="no word -> region attention"):
        pointing.deletion_game(build_model("dual", image_dim=D, text_dim=D, dim=D), _attending_features(),
                               _Subset(), _Tokenizer())


def test_interpretability_verdicts_at_one_head():
    fs = _attending_features()
    runs = {name: [pointing.deletion_game(_attending_model(name), fs, _Subset(), _Tokenizer(), seed=s) for s in (0, 1)]
            for name in ("decoupled", "joint_words", "decoupled_pooled", "joint")}
    v = features_kept.interpretability_verdicts(runs)
    assert list(v.columns) == ["kind", "comparison", "difference (points)", "lo", "hi", "verdict"]
    assert set(v.kind) == {"plausibility", "faithfulness"}
    peak = v.set_index("comparison").loc["decoupled: zeroing the peak vs a random region"]
    assert peak["lo"] > 0 and peak["verdict"] == "A better"
    assert "decoupled vs joint_words (per-word head): deletion effect" in set(v.comparison)
    rows = features_kept.interpretability_rows(v)
    assert list(rows.columns) == ["the blog claims", "the course measures (95% interval)", "verdict"] and len(rows) == 4
    assert rows["the blog claims"].iloc[0] == "better interpretability than joint training (plausibility, per-word head)"
    with pytest.raises(ValueError, match="lacks"):
        features_kept.interpretability_verdicts({"decoupled": runs["decoupled"]})


def test_pointed_all_lists_every_model_whose_words_attend():
    for name in MODELS:
        cls, presets = MODELS[name]
        attends = cls is not FactorialModel or presets.get("flow", "text_to_image") != "none"
        if name in ("dual", "dual_words", "decoupled_pooled", "decoupled", "joint", "joint_words", "blog"):
            assert (name in features_kept.POINTED_ALL) == attends, name


# ------------------------------------------------------------------- probe_results, opt-in

def test_probe_results_adds_scored_rows_only_when_asked(monkeypatch):
    train, test = synthetic_featureset(n_images=40, captions_per_image=2, image_dim=32, text_dim=24, regions=9), \
        synthetic_featureset(n_images=20, captions_per_image=2, image_dim=32, text_dim=24, regions=9, seed=1)
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 2, (40, 2)), rng.integers(0, 2, (20, 2))
    monkeypatch.setattr(features_kept.probes, "category_targets", lambda *a, **k: (y_train, y_test, ["a", "b"]))
    def cut(reps):                                      # a same-width stand-in for PCA-128
        return {**reps, "image": reps["image"][:, :24]}

    monkeypatch.setattr(features_kept.probes, "same_size_controls",
                        lambda tr, te, seed=0: {features_kept.CONTROL: {"train": cut(tr), "test": cut(te)}})
    monkeypatch.setattr(features_kept, "OTHER_SEEDS", (0,))
    monkeypatch.setattr(features_kept, "load_runs", lambda name, budget, seeds: [_model(name) for _ in seeds])
    feats = {"train": train, "test": test}
    plain = features_kept.probe_results(feats, None, model_names=("decoupled",))
    assert plain.representation.tolist() == ["raw features", features_kept.CONTROL, "decoupled"]
    both = features_kept.probe_results(feats, None, model_names=("decoupled",), scored=True)
    assert both.representation.tolist()[2:] == ["decoupled", "decoupled (scored, own pair)",
                                                "decoupled (scored, other pair)"]
    pd.testing.assert_frame_equal(both.iloc[:3], plain)


# ------------------------------------------------------------------- the verdict table: one family per claim

def _claims():
    rng = np.random.default_rng(0)
    cap = np.repeat(np.arange(40), 5)
    good = [(np.zeros(40, dtype=int), np.zeros(200, dtype=int))] * 3
    bad = [(rng.integers(0, 20, 40), rng.integers(0, 20, 200)) for _ in range(3)]
    ranks = {m: [{"img_rank": i, "cap_rank": c} for i, c in runs]
             for m, runs in {"decoupled": good, "joint_words": bad, "joint": bad}.items()}
    return evaluation.claims_table(ranks, cap, n_boot=100)


def _probe_df():
    rng = np.random.default_rng(1)
    rows = [{"representation": "raw features", "seed": -1, "image mAP": 0.5, "text mAP": 0.5},
            {"representation": features_kept.CONTROL, "seed": -1, "image mAP": 0.4, "text mAP": 0.4}]
    for name in ("decoupled", "decoupled (scored, own pair)"):
        rows += [{"representation": name, "seed": s, "image mAP": 0.4 + 0.01 * rng.standard_normal(),
                  "text mAP": 0.4 + 0.01 * rng.standard_normal()} for s in (0, 1, 2)]
    return pd.DataFrame(rows)


def test_the_verdict_table_says_which_row_is_the_test_and_corrects_each_claim_as_a_family(fs):
    pairs_models = ("decoupled", "joint_words", "decoupled_pooled", "joint")
    attending = _attending_features()
    deletion = {n: [pointing.deletion_game(_attending_model(n), attending, _Subset(), _Tokenizer(), seed=s)
                    for s in (0, 1)] for n in pairs_models}
    interference = {n: [probes.interference_cases(build_model(n, **SMALL).eval(), fs) for _ in range(2)]
                    for n in pairs_models}
    claims, probe_df = _claims(), _probe_df()
    table = features_kept.verdict_table(claims, probe_df, deletion, interference)
    assert list(table.columns) == features_kept.VERDICT_COLUMNS
    retrieval = table[table["the blog claims"].str.startswith("+8.5% retrieval")]
    primary = retrieval[retrieval.role.str.startswith("primary")]
    assert len(primary) == 1 and len(retrieval) == len(claims)
    assert primary.verdict.iloc[0] == claims[claims.primary].verdict.iloc[0] == "supported"
    assert (retrieval.drop(primary.index).verdict == "not tested (a reading)").all()
    assert retrieval["the course measures (interval)"].str.contains("decoupled vs joint ").any()  # the sentence, labelled
    by_claim = {"unimodal performance kept": 3, "attention points|... better than|better interpretability": 6,
                "less interference": 4}
    for pattern, m in by_claim.items():
        rows = table[table["the blog claims"].str.contains(pattern, regex=True)]
        assert len(rows) == m, pattern
        assert (rows.correction == f"Bonferroni: {100 * (1 - 0.05 / m):.1f}% intervals").all(), pattern
        assert (rows.role == f"secondary: {m} in the family").all()
    kept95 = features_kept.kept_table(probe_df).set_index(["model", "modality"]).loc[("decoupled", "image")]
    kept_c = features_kept.kept_table(probe_df, level=1 - 0.05 / 3).set_index(["model", "modality"]).loc[("decoupled", "image")]
    assert kept_c["lo"] < kept95["lo"] and kept_c["hi"] > kept95["hi"]          # corrected: wider
    assert f"[{kept_c['lo']:+.1f}, {kept_c['hi']:+.1f}]" in table.iloc[len(claims)]["the course measures (interval)"]


def test_pointing_verdicts_compare_flow_alone_at_each_head():
    attending = _attending_features()
    runs = {n: [pointing.deletion_game(_attending_model(n), attending, _Subset(), _Tokenizer(), seed=s) for s in (0, 1)]
            for n in ("decoupled", "joint_words", "decoupled_pooled")}
    v = features_kept.pointing_verdicts(runs)
    assert list(v.comparison) == [f"{n} vs {b}" for n in runs for b in ("uniform attention", "centre cell")] + \
        ["decoupled vs joint_words (per-word head)"]                           # the pooled pair lacks its models
    wide = features_kept.pointing_verdicts(runs, level=0.99).set_index("comparison")
    narrow = v.set_index("comparison")
    assert (wide.lo <= narrow.lo + 1e-9).all() and (wide.hi >= narrow.hi - 1e-9).all()
