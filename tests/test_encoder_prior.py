"""Notebook 08's encoder prior: a model with a GRU tower reads WordPiece ids, learns its embeddings and scores a
split alike on both scoring paths; the course's runs keep their folders; each encoder's features are the course's
captions; `make encoders` resumes from its committed files, and names a damaged one; its tables and verdict."""
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import intervals, models
from helpers.fast.scoring import FAST
from helpers.features import FeatureSet, synthetic_featureset
from helpers.pipeline import encoder_prior as ep
from helpers.pipeline import feature_cache, recipes
from helpers.encoders import MINILM, tokenize_captions
from helpers.text_towers import PAD_ID, VOCAB_SIZE, caption_check, tower_features
from helpers.encoders import load_tokenizer
from helpers.train import ContrastiveStep, TrainConfig, check_features, make_model, text_mark

pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.py


def ids_featureset(n_images=12, seed=0) -> FeatureSet:
    """A synthetic FeatureSet whose text side is WordPiece ids, (N_tok, 1) float32, as `encoder_features('gru')`."""
    fs = synthetic_featureset(n_images=n_images, captions_per_image=2, regions=4, image_dim=8, text_dim=4,
                              max_len=6, seed=seed)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB_SIZE, (len(fs.tokens), 1), generator=g).float()
    return FeatureSet(fs.image_ids, fs.regions, fs.pooled, fs.caption_ids, fs.caption_image, ids, fs.offsets,
                      torch.zeros(fs.n_captions, 1), "synthetic" + text_mark("gru"))


def tower_model(name="decoupled", seed=0):
    torch.manual_seed(seed)
    return models.build_model(name, image_dim=8, text_dim=1, dim=16, text_tower=True)


# ------------------------------------------------------------------------------------ a model with a tower

def test_the_tower_is_part_of_the_model_and_learns_from_the_loss():
    fs = ids_featureset()
    model = tower_model()
    assert model.text_tower is not None and model.text_tower.embed.num_embeddings == VOCAB_SIZE
    assert model.text_proj[0].in_features == model.text_tower.dim == 384
    rows = torch.arange(8)
    step = ContrastiveStep(model, "infonce")
    loss, _ = step(*fs.image_batch(rows), *fs.text_batch(rows))
    loss.backward()
    grad = model.text_tower.embed.weight.grad
    used = fs.tokens[:, 0].long()[torch.cat([torch.arange(fs.offsets[r], fs.offsets[r + 1]) for r in rows])].unique()
    assert (grad[used].abs().sum(1) > 0).all() and torch.all(grad[PAD_ID] == 0)


def test_a_tower_model_needs_ids():
    with pytest.raises(ValueError, match="reads WordPiece ids \\(text_dim 1\\), got text_dim=384"):
        models.build_model("decoupled", text_tower=True)


@pytest.mark.parametrize("name", ["decoupled", "joint_words", "decoupled_pooled", "joint", "dual"])
def test_both_scoring_paths_agree_on_a_tower_model(name):
    fs = ids_featureset()
    model = tower_model(name).eval()
    readable = models.score_all(model, fs)
    torch.testing.assert_close(FAST.all(model, fs), readable, rtol=1e-4, atol=1e-4)
    featurized = tower_features(model.text_tower, fs)          # what both paths score: the tower's features
    assert featurized.tokens.shape == (len(fs.tokens), 384) and featurized.text_pooled.shape == (fs.n_captions, 384)
    torch.testing.assert_close(models.score_all(model, featurized), readable, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="already features"):
        tower_features(model.text_tower, featurized)


def test_the_tower_is_seeded_by_the_run():
    fs = ids_featureset()
    a = make_model(TrainConfig(seed=0, text_features="gru", model_overrides={"dim": 16}), fs)
    b = make_model(TrainConfig(seed=0, text_features="gru", model_overrides={"dim": 16}), fs)
    c = make_model(TrainConfig(seed=1, text_features="gru", model_overrides={"dim": 16}), fs)
    assert torch.equal(a.text_tower.embed.weight, b.text_tower.embed.weight)
    assert not torch.equal(a.text_tower.embed.weight, c.text_tower.embed.weight)


def test_a_run_refuses_another_encoders_features():
    fs = ids_featureset()
    with pytest.raises(ValueError, match="asks for text_features='minilm' but was given 'gru'"):
        check_features(TrainConfig(), fs)
    with pytest.raises(ValueError, match="asks for text_features='random_minilm' but was given 'gru'"):
        check_features(TrainConfig(text_features="random_minilm"), fs)
    with pytest.raises(ValueError, match="text_features must be one of"):
        TrainConfig(text_features="bert")


# ------------------------------------------------------------------------------------ run folders

def test_the_courses_runs_keep_their_folders():
    """Adding `text_features` to TrainConfig must not rename a single committed run: every row of 05's search
    table still matches today's recipe (a renamed folder would make CI retrain 05-08 from scratch)."""
    table = pd.read_csv(recipes.grid_table("cpu"))
    assert len(recipes.searched("cpu")) == len(table) > 100
    cfg = ep.config("minilm", "decoupled", 0, 3e-4)
    assert recipes.run_dir(cfg).name == "decoupled-seed0-9ae33f7ae2"           # 05's trial, as committed
    gru = recipes.run_dir(ep.config("gru", "decoupled", 0, 3e-4)).name
    assert gru.startswith("decoupled-gru-seed0-") and gru != recipes.run_dir(cfg).name


# ------------------------------------------------------------------------------------ the encoders' features

CAPTIONS = ["A dog runs on the beach.", "A brown dog runs by the sea.", "Two cats sleep on a sofa.",
            "A cat on a couch.", "A red bus in a busy city street.", "A double-decker bus.",
            "A man rides a bicycle.", "Someone cycling down a road at night.", "Three apples on a plate.",
            "Fruit on a white dish.", "A plane takes off.", "An airliner in the sky."]


@pytest.fixture(scope="module")
def course():
    """The course's splits, small: 6 images with 2 real captions each, their tokens as MiniLM tokenizes them
    (random features of that length), and the subset-like table of captions `encoder_features` reads."""
    lengths = tokenize_captions(load_tokenizer(MINILM), CAPTIONS)[1].sum(1)
    g = torch.Generator().manual_seed(0)
    everything = FeatureSet(image_ids=torch.arange(6) + 100, regions=torch.randn(6, 4, 8, generator=g).half(),
                            pooled=torch.randn(6, 8, generator=g).half(), caption_ids=torch.arange(12) + 500,
                            caption_image=torch.arange(6).repeat_interleave(2),
                            tokens=torch.randn(int(lengths.sum()), 4, generator=g).half(),
                            offsets=torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
                            text_pooled=torch.randn(12, 4, generator=g).half(), source="small")
    feats = feature_cache.course_splits(everything, {"train": [100, 101, 102], "val": [103], "test": [104, 105]})
    subset = SimpleNamespace(captions=pd.DataFrame({"caption_id": np.arange(12) + 500, "caption": CAPTIONS}))
    return feats, subset


def test_gru_features_are_the_captions_wordpiece_ids(course):
    feats, subset = course
    gru = feature_cache.encoder_features("gru", feats, subset=subset)
    tokenizer = load_tokenizer(MINILM)
    for split in ("train", "val", "test"):
        fs, base = gru[split], feats[split]
        assert torch.equal(fs.offsets, base.offsets) and torch.equal(fs.caption_ids, base.caption_ids)
        assert torch.equal(fs.regions, base.regions) and fs.tokens.shape == (len(base.tokens), 1)
        assert fs.source == "small|text-gru"
    test = gru["test"]
    last = tokenizer(CAPTIONS[-1])["input_ids"]                  # the test set's last caption
    assert test.tokens[-len(last):, 0].long().tolist() == last
    assert feature_cache.encoder_features("gru", feats, subset=subset) is gru   # built once per process
    assert feature_cache.encoder_features("minilm", feats) is feats


def test_encoder_features_name_their_mistakes(course):
    feats, subset = course
    with pytest.raises(ValueError, match="unknown text_features 'bert'"):
        feature_cache.encoder_features("bert", feats, subset=subset)
    everything = feats["all"]
    shuffled = dict(feats, all=replace(everything, caption_ids=everything.caption_ids.flip(0)),
                    train=replace(feats["train"], source="small, shuffled"))          # not memoized
    with pytest.raises(ValueError, match="not the subset's captions in its order"):
        feature_cache.encoder_features("gru", shuffled, subset=subset)
    longer = SimpleNamespace(captions=subset.captions.assign(caption=[c + " And more words here." for c in CAPTIONS]))
    with pytest.raises(ValueError, match="tokenize to other lengths than the course's features"):
        feature_cache.encoder_features("gru", dict(feats, train=replace(feats["train"], source="small, longer")),
                                       subset=longer)


def test_random_minilm_features_are_cached_and_a_damaged_cache_is_rebuilt(tmp_path):
    captions = ["A dog runs on the beach.", "Two cats.", "A red bus in the city."]
    tokens, offsets, pooled = feature_cache.cached_random_text_features(captions, cache_dir=tmp_path)
    files = list(tmp_path.glob("text-random-*.safetensors"))
    assert len(files) == 1 and tokens.shape == (int(offsets[-1]), 384) and pooled.shape == (3, 384)
    again = feature_cache.cached_random_text_features(captions, cache_dir=tmp_path)
    assert all(torch.equal(x, y) for x, y in zip(again, (tokens, offsets, pooled)))
    files[0].write_bytes(files[0].read_bytes()[:100])                            # a truncated cache file
    with pytest.warns(UserWarning):
        rebuilt = feature_cache.cached_random_text_features(captions, cache_dir=tmp_path)
    assert all(torch.equal(x, y) for x, y in zip(rebuilt, (tokens, offsets, pooled)))
    other = feature_cache.cached_random_text_features(captions, seed=1, cache_dir=tmp_path)
    assert not torch.equal(other[0], tokens) and len(list(tmp_path.glob("text-random-*.safetensors"))) == 2


def test_caption_check_counts_the_nearest_other_caption():
    vectors = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.2]])
    image = torch.tensor([0, 0, 1, 1, 2])
    check = caption_check(vectors, image)
    assert check["nearest caption same image"] == pytest.approx(4 / 5)          # image 2's caption has no partner
    assert check["same image"] > 0.9 > check["different images"]


# ------------------------------------------------------------------------------------ make encoders' files

def fake_ranks(n_img=60, shift=0, seed=0, seeds=5):
    """Per-seed ranks of a model on n_img images with 5 captions each; `shift` makes every rank worse."""
    rng = np.random.default_rng(seed)
    return [{"img_rank": np.minimum(rng.geometric(0.3, n_img) - 1 + shift, n_img - 1),
             "cap_rank": np.minimum(rng.geometric(0.2, 5 * n_img) - 1 + shift, n_img - 1)} for _ in range(seeds)]


CAPTION_IMAGE = np.repeat(np.arange(60), 5)


def all_fake_ranks(gru_shift=0):
    out = {}
    for i, (e, m) in enumerate((e, m) for e in ep.ENCODERS for m in ep.MODELS):
        shift = gru_shift if (e, m) == ("gru", "joint_words") else 0
        out[e, m] = fake_ranks(shift=shift, seed=i)
    return out


def test_ranks_round_trip_and_a_damaged_file_is_named(tmp_path):
    got = {"gru|dual|0": fake_ranks(seeds=1)[0]}
    runs = {"gru|dual|0": {"name": "dual-gru-seed0-abc", "rsum": np.array([100.0, 120.0]), "seconds": 42.0}}
    path = tmp_path / "r.npz"
    ep.save_ranks(got, runs, path)
    back, back_runs = ep.load_ranks(path)
    assert np.array_equal(back["gru|dual|0"]["cap_rank"], got["gru|dual|0"]["cap_rank"])
    assert back_runs["gru|dual|0"]["name"] == "dual-gru-seed0-abc" and back_runs["gru|dual|0"]["seconds"] == 42.0
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="r.npz is damaged .*make encoders"):
        ep.load_ranks(path)
    assert list(tmp_path.iterdir()) == [path]                                  # nothing else written


def test_a_damaged_or_foreign_search_table_is_named(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="lacks the columns .*not the encoders' search table"):
        ep.read_search(path)
    path.write_bytes(b'encoder,model\n"unclosed\n')
    with pytest.raises(ValueError, match="s.csv is damaged"):
        ep.read_search(path)


def search_rows(best_lr=1e-3):
    """Every trial of the search for every encoder and model, with the best validation at `best_lr`."""
    rows = []
    for e in ep.ENCODERS:
        for m in ep.MODELS:
            for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2):
                rows.append({"encoder": e, "model": m, "lr": lr, "val rsum": 300 - abs(np.log(lr / best_lr)),
                             "recipe": recipes.recipe_id(ep.config(e, m, 0, lr))})
    return pd.DataFrame(rows)


def test_the_search_grows_until_interior_and_resumes_from_the_committed_table(tmp_path, monkeypatch):
    table = search_rows(best_lr=3e-3)
    lr, tried = ep.choose(table, "gru", "dual")
    assert lr == 3e-3 and sorted(tried) == [3e-4, 1e-3, 3e-3, 1e-2]            # grown once, to 1e-2
    with pytest.raises(ep._Untrained, match="lr 0.01 not trained"):
        ep.choose(table[table.lr < 1e-2], "gru", "dual")
    path = tmp_path / "s.csv"
    table.to_csv(path, index=False)

    def no_training(*args, **kwargs):
        raise AssertionError("a committed trial was trained again")

    monkeypatch.setattr(ep, "run_all", no_training)
    assert len(ep.search({}, path=path)) == len(table)
    chosen = ep.chosen_lrs(table)
    assert chosen["interior"].all() and set(chosen["chosen lr"]) == {3e-3}


def test_load_committed_says_what_is_missing(tmp_path, monkeypatch):
    files = {"search": tmp_path / "s.csv", "ranks": tmp_path / "r.npz"}
    monkeypatch.setattr(ep, "committed_files", lambda budget="cpu": files)
    with pytest.raises(FileNotFoundError, match="s.csv is missing: .*make encoders"):
        ep.load_committed()
    search_rows().to_csv(files["search"], index=False)
    ep.save_ranks({"gru|dual|0": fake_ranks(seeds=1)[0]},
                  {"gru|dual|0": {"name": "x", "rsum": np.array([1.0]), "seconds": 1.0}}, files["ranks"])
    with pytest.raises(FileNotFoundError, match="r.npz lacks 74 of 75 runs .*run it again to finish"):
        ep.load_committed()


# ------------------------------------------------------------------------------------ the tables and verdict

def test_interaction_terms_are_a_difference_of_differences():
    assert ep.interaction_terms(("decoupled", "joint_words"), "gru") == [
        (1, ("gru", "decoupled")), (-1, ("gru", "joint_words")), (-1, ("minilm", "decoupled")),
        (1, ("minilm", "joint_words"))]


def test_no_interaction_reads_as_no_credible_dependence():
    ranks = all_fake_ranks()
    table = ep.interaction_table(ranks, CAPTION_IMAGE, n_boot=200)
    assert list(table.interaction) == ["encoder x flow"] * 2 + ["encoder x head"] * 2
    assert (table["on encoder"] - table[f"on {ep.BASE}"] - table["difference"]).abs().max() < 1e-9
    assert (table.p_holm >= table.p).all()
    sentence = ep.verdict_sentence(table)
    assert sentence.startswith("No credible dependence on the encoder prior") and "resolves a change of about" in sentence


def test_a_real_interaction_reads_as_a_dependence():
    ranks = all_fake_ranks(gru_shift=8)                   # gru's joint_words much worse: its flow contrast grows
    table = ep.interaction_table(ranks, CAPTION_IMAGE, n_boot=200)
    row = table.set_index(["interaction", "encoder"]).loc[("encoder x flow", "gru vs minilm")]
    assert row.difference > 0 and row.lo > 0 and row.verdict == "A better"
    sentence = ep.verdict_sentence(table)
    assert sentence.startswith("The blog's variable's effect depends on the text encoder") and "Holm p" in sentence
    assert ("borderline" in sentence) == (row.p_holm > 0.025)
    weak = table.assign(p_holm=table.p_holm.where(table.verdict != "A better", 0.04))       # credible, but only just
    assert "borderline: gru's Holm-adjusted p, 0.040, would not pass a familywise level of 0.025" in ep.verdict_sentence(weak)
    strong = table.assign(p_holm=table.p_holm.where(table.verdict != "A better", 0.001))
    assert "borderline" not in ep.verdict_sentence(strong)
    contrasts = ep.contrast_table(ranks, CAPTION_IMAGE, n_boot=200)
    assert len(contrasts) == 3 * len(ep.ENCODERS) and set(contrasts.contrast) == set(ep.CONTRASTS)
    models_ = ep.model_table(ranks, CAPTION_IMAGE, n_boot=200)
    assert len(models_) == 15 and (models_.lo < models_.rsum).all() and (models_.rsum < models_.hi).all()


def test_detectable_contrast_is_detectable_differences_rule():
    se, df = intervals.se_df(2.0 ** 2, [(4.0 ** 2 / 5, 5), (3.0 ** 2 / 5, 5)])
    assert intervals.detectable_contrast(se, df) == pytest.approx(intervals.detectable_difference(4, 3, 2, 5, 5))
    assert intervals.detectable_contrast(0.0, 10.0) == 0.0
    with pytest.raises(ValueError, match="se must be finite"):
        intervals.detectable_contrast(float("nan"), 10.0)


def test_cost_counts_what_make_encoders_trained_and_nothing_it_reused():
    table = pd.DataFrame({"source": ["05's search", "make encoders", "make encoders"], "seconds": [100.0, 60.0, 30.0]})
    runs = {"gru|dual|0": {"seconds": 1000.0},           # a trial already
            "gru|dual|1": {"seconds": 40.0}, "minilm|dual|1": {"seconds": 999.0},   # 06's run, reused
            "minilm|dual|3": {"seconds": 50.0}}          # 06 has 3 seeds of dual: seed 3 is new
    assert ep.cost(table, runs) == {"trials": 2, "runs": 2, "hours": pytest.approx((90 + 40 + 50) / 3600)}


def test_all_ranks_resumes_from_the_committed_ranks_and_reuses_06s_seeds(tmp_path, monkeypatch):
    table = search_rows()
    jobs = ep.seed_configs(table)
    got = {k: fake_ranks(seeds=1, seed=i)[0] for i, k in enumerate(jobs) if k != "minilm|decoupled|3"}
    runs = {k: {"name": recipes.run_dir(jobs[k]).name, "rsum": np.array([1.0]), "seconds": 1.0} for k in got}
    runs["gru|dual|1"]["name"] = "dual-gru-seed1-another-recipe"                 # stale: trained again
    path = tmp_path / "r.npz"
    ep.save_ranks(got, runs, path)
    trained, fresh, reused = [], fake_ranks(seeds=1, seed=98)[0], fake_ranks(seeds=1, seed=99)[0]

    def run_all(todo, feats, rank, done):
        for cfg in todo:
            trained.append((cfg.text_features, cfg.model, cfg.seed))
            done(cfg, rank)

    monkeypatch.setattr(ep, "run_all", run_all)
    monkeypatch.setattr(ep, "rank_run", lambda cfg, feats: fresh)
    monkeypatch.setattr(ep, "load_result", lambda folder: type("R", (), {"history": pd.DataFrame(
        {"rsum": [1.0, 2.0], "seconds": [5.0, 6.0]})})())
    ranks = ep.all_ranks({}, table, path=path, reuse={("decoupled", 3): reused})
    assert trained == [("gru", "dual", 1)]                                      # nothing else trains
    assert ranks["gru", "dual"][1] is fresh
    assert np.array_equal(ranks["minilm", "decoupled"][3]["cap_rank"], reused["cap_rank"])
    back, back_runs = ep.load_ranks(path)
    assert len(back) == 75 and back_runs["gru|dual|1"]["seconds"] == 11.0
    assert np.array_equal(back["minilm|decoupled|3"]["cap_rank"], reused["cap_rank"])
