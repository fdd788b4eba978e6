"""The tuned design of 08 (helpers.pipeline.ablations): every proposal's weight, SimCLR epochs or learning rate
grown along a ladder until interior, the same trials for each, a resumable tuning table, every run's
convergence, and 08's sentences built from the tables. Training is faked with made-up validation curves,
but for one end-to-end test on tiny synthetic features."""
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from helpers.atomic import write_csv
from helpers.config import Paths
from helpers.features import synthetic_featureset
from helpers.pipeline import ablations, recipes, runs
from helpers.pipeline.ablations import LADDERS, TUNED, WEIGHT_LADDER, grow_until_interior
from helpers.train import TrainResult

WEIGHT_VARIANTS = ("local_consistency", "word_diversity", "masked_reconstruction")


def peaked(peak):
    """A score over a ladder with its maximum at `peak` (on or off the ladder)."""
    return lambda v: 300.0 - 10 * abs(math.log10(v / peak))


# ----------------------------------------------------------------------------- the growth rule

@pytest.mark.parametrize("peak, chosen, tried", [
    (0.3, 0.3, (0.1, 0.3, 1.0)),                                    # interior at once: the three starting values
    (0.01, 0.01, (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)),               # the low edge, grown down until interior
    (10.0, 10.0, (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)),                 # the high edge, grown up until interior
    (1e-4, 0.001, WEIGHT_LADDER[:7]),                               # the ladder ends below: stop there
    (100.0, 30.0, WEIGHT_LADDER[4:]),                               # the ladder ends above
])
def test_the_values_grow_on_an_edge_until_the_choice_is_interior_or_the_ladder_ends(peak, chosen, tried):
    calls = []

    def score(v):
        calls.append(v)
        return peaked(peak)(v)

    best, scores = grow_until_interior((0.1, 0.3, 1.0), WEIGHT_LADDER, score)
    assert best == chosen and tuple(scores) == tried
    assert sorted(calls) == list(tried)                             # each value scored once


def test_a_tie_goes_to_the_smaller_value_and_bad_starts_are_refused():
    best, scores = grow_until_interior((2, 5, 10, 20), (2, 5, 10, 20, 40), {2: 1, 5: 3, 10: 3, 20: 0}.get)
    assert best == 5 and list(scores) == [2, 5, 10, 20]
    with pytest.raises(ValueError, match="not on the ladder"):
        grow_until_interior((0.2, 0.3, 1.0), WEIGHT_LADDER, peaked(1))
    with pytest.raises(ValueError, match="three distinct"):
        grow_until_interior((0.1, 0.1, 1.0), WEIGHT_LADDER, peaked(1))
    with pytest.raises(ValueError, match="strictly increasing"):
        grow_until_interior((1, 2, 3), (1, 3, 2), peaked(1))
    with pytest.raises(ValueError, match="NaN"):
        grow_until_interior((0.1, 0.3, 1.0), WEIGHT_LADDER, lambda v: float("nan"))


def test_the_learning_rate_starts_from_decoupleds_and_its_two_neighbours(monkeypatch):
    chosen_lr = recipes.train_config("decoupled", "cpu", 0).lr
    ladder = recipes.LADDERS["lr"]
    i = min(range(len(ladder)), key=lambda k: abs(ladder[k] - chosen_lr))
    assert ablations.lr_start("cpu")[1] == pytest.approx(chosen_lr) and ablations.lr_start("cpu") == ladder[i - 1:i + 2]
    for lr, start in [(2e-3, (1e-3, 3e-3, 1e-2)), (1e-5, (1e-5, 3e-5, 1e-4)), (1.0, (1e-2, 3e-2, 1e-1))]:
        monkeypatch.setattr(ablations, "train_config", lambda *a, lr=lr, **k: recipes.TrainConfig(lr=lr))
        assert ablations.lr_start("cpu") == start                    # the nearest ladder value; clamped at the ends


def test_every_variant_of_a_kind_starts_alike_and_each_trial_changes_only_what_it_tunes():
    assert {ablations.tuning_start(v) for v in WEIGHT_VARIANTS} == {ablations.WEIGHT_START}
    assert ablations.tuning_start("loss_vse") == ablations.tuning_start("loss_pointwise")
    base = recipes.train_config("decoupled", "cpu", 0)
    assert ablations.trial_config("loss_vse", 3e-3).lr == 3e-3 and ablations.trial_config("loss_vse", 3e-3).loss == "vse"
    assert ablations.trial_config("word_diversity", 0.03).model_overrides == {**base.model_overrides, "aux_weight": 0.03}
    paths = {ablations.trial_config("pretrained", e).init_from for e in ablations.EPOCHS_LADDER}
    assert len(paths) == len(ablations.EPOCHS_LADDER) and ablations.pretrained_projections("cpu", 0, 10) in paths
    assert all(f"simclr{e}ep" in ablations.pretrained_projections("cpu", 1, e) for e in (2, 40))
    assert ablations.pretrained_projections("cpu", 1) == ablations.variant_config("pretrained", "cpu", 1).init_from
    with pytest.raises(ValueError, match="not tuned"):
        ablations.trial_config("no_value", 1.0)


# ----------------------------------------------------------------------------- the tuning, faked training

class FakeTraining:
    """`train_run` and `pretrain` replaced: each run gets a made-up validation curve peaking at its variant's
    `peaks` value (best at epoch 3 of 6: stopped by patience), and writes its history.csv like a real run."""

    def __init__(self, monkeypatch, peaks):
        self.peaks, self.trained, self.pretrained = peaks, [], []
        self.who = {recipes.run_dir(ablations.trial_config(v, x)).name: (v, x) for v in TUNED for x in LADDERS[TUNED[v]]}
        monkeypatch.setattr(ablations, "train_run", self.train_run)
        monkeypatch.setattr(ablations, "pretrain", lambda cfg, feats, epochs=None: self.pretrained.append((cfg.init_from, epochs)))

    def train_run(self, cfg, feats):
        folder = recipes.run_dir(cfg)
        variant, value = self.who.get(folder.name, (None, None))
        top = peaked(self.peaks[variant])(value) if variant else 250.0
        history = pd.DataFrame({"epoch": range(1, 7), "rsum": [top - 5, top - 2, top, top - 1, top - 1.5, top - 2],
                                "seconds": 1.0, "train_loss": 1.0})
        write_csv(history, folder / "history.csv", index=False)
        self.trained.append(folder.name)
        return TrainResult(None, history, {"epoch": 3, "rsum": top}, folder)


@pytest.fixture
def where(tmp_path, monkeypatch):
    """The runs and the committed tables in tmp_path (the search table stays the committed one)."""
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(ablations, "PATHS", Paths(root=tmp_path))
    return tmp_path


# The changed losses' learning rates start at decoupled's searched rate and its two neighbours; a peak two ladder
# steps above it makes their grid grow twice, to five trials like the other variants'.
_LR = recipes.LADDERS["lr"]
_AT = _LR.index(min(_LR, key=lambda v: abs(v - recipes.train_config("decoupled", "cpu", 0).lr)))
LR_PEAK, LR_TRIED = _LR[_AT + 2], ", ".join(f"{v:g}" for v in _LR[_AT - 1:_AT + 4])
ALIKE = {**{v: 0.03 for v in WEIGHT_VARIANTS}, "loss_vse": LR_PEAK, "loss_pointwise": LR_PEAK, "pretrained": 20}


def test_the_same_trials_for_each_variant_whose_optimum_sits_alike(where, monkeypatch):
    fake = FakeTraining(monkeypatch, ALIKE)
    table = ablations.tune_all({}, log=lambda _: None)
    summary = ablations.tuning_summary(table).set_index("variant")
    assert list(summary.index) == [v for v in ablations.VARIANTS if v in TUNED]
    assert summary.loc[list(WEIGHT_VARIANTS), "tried"].eq("0.01, 0.03, 0.1, 0.3, 1").all()   # 0.03 is interior
    assert summary.loc[["loss_vse", "loss_pointwise"], "tried"].eq(LR_TRIED).all()
    assert summary.loc["pretrained", "tried"] == "2, 5, 10, 20, 40" and summary.loc["pretrained", "chosen"] == 20
    assert summary.trials.eq(5).all()
    assert summary.interior.all() and not summary["at ladder end"].any()
    assert len(fake.trained) == len(table) == 5 * 6 and table.run.is_unique
    assert sorted(e for _, e in fake.pretrained) == [2, 5, 10, 20, 40]        # pre-trained once per number of epochs
    assert all(f"simclr{e}ep" in path for path, e in fake.pretrained)
    assert set(table["stopped by"]) == {"patience"} and table["best epoch"].eq(3).all()
    assert table["change over last 3 epochs"].eq(-2.0).all() and table.epochs.eq(6).all()
    written = ablations.read_tuning(ablations.tuning_file("cpu"))
    assert list(written.columns) == ablations.TUNING_COLUMNS and len(written) == len(table)


def test_a_second_call_trains_nothing_even_without_the_runs(where, monkeypatch):
    FakeTraining(monkeypatch, ALIKE)
    first = ablations.tune_all({}, log=lambda _: None)
    shutil.rmtree(where / "runs")                                    # a fresh clone: only the committed table
    again = FakeTraining(monkeypatch, ALIKE)
    second = ablations.tune_all({}, log=lambda _: None)
    assert again.trained == [] and again.pretrained == []
    pd.testing.assert_frame_equal(first, second)


def test_a_row_whose_run_identity_changed_is_retrained(where, monkeypatch):
    FakeTraining(monkeypatch, ALIKE)
    ablations.tune("word_diversity", {}, log=lambda _: None)
    path = ablations.tuning_file("cpu")
    table = pd.read_csv(path)
    stale = (table.variant == "word_diversity") & np.isclose(table.value, 0.3)
    table.loc[stale, "run"], table.loc[stale, "val rsum"] = "word_diversity-w0.3-seed0-0000000000", 999.0
    write_csv(table, path, index=False)
    again = FakeTraining(monkeypatch, ALIKE)
    rows = ablations.tune("word_diversity", {}, log=lambda _: None)
    want = recipes.run_dir(ablations.trial_config("word_diversity", 0.3)).name
    assert again.trained == [want]                                   # only the stale trial
    assert rows.loc[np.isclose(rows.value, 0.3), "run"].tolist() == [want]
    assert rows["val rsum"].max() < 999 and len(pd.read_csv(path)) == 5


def test_a_file_that_is_not_a_tuning_table_is_refused(where):
    write_csv(pd.DataFrame({"variant": ["x"], "weight": [1.0]}), ablations.tuning_file("cpu"), index=False)
    with pytest.raises(ValueError, match="lacks the columns"):
        ablations.read_tuning(ablations.tuning_file("cpu"))
    with pytest.raises(ValueError, match="no trials of loss_vse"):
        ablations.tuned_value(pd.DataFrame(columns=ablations.TUNING_COLUMNS), "loss_vse")


def test_the_convergence_table_lists_every_run_once(where, monkeypatch):
    peaks = {**ALIKE, "masked_reconstruction": 1e-4}                 # chooses the ladder's lowest weight
    fake = FakeTraining(monkeypatch, peaks)
    tuning = ablations.tune_all({}, log=lambda _: None)
    assert ablations.tuned_value(tuning, "masked_reconstruction") == 0.001
    with pytest.raises(RuntimeError, match="has not been trained"):
        ablations.convergence_table(tuning)
    for _, _, cfg in ablations.tuned_configs(tuning):
        fake.train_run(cfg, {})
    table = ablations.convergence_table(tuning)
    n_scale = len(ablations.SCALE_MODELS) * sum(f < 1 for f in ablations.SCALE_FRACTIONS) * 3
    assert len(table) == len(tuning) + len(ablations.VARIANTS) * 3 - len(TUNED) + n_scale and table.run.is_unique
    assert table.kind.value_counts().to_dict() == {"tuning": len(tuning) - len(TUNED), "seed run": 10 * 3 - len(TUNED),
                                                   "scale": n_scale, "tuning + seed run": len(TUNED)}
    shared = table[table.kind == "tuning + seed run"].set_index("name")
    assert shared.loc["masked_reconstruction", "value"] == 0.001 and shared.loc["pretrained", "value"] == 20
    seeds = table[(table.kind == "seed run") & (table.name == "loss_vse")]
    assert seeds.seed.tolist() == [1, 2] and seeds.value.eq(LR_PEAK).all() and seeds.tuned.eq("lr").all()
    assert table[["epochs", "best epoch", "change over last 3 epochs"]].notna().all().all()
    assert set(table["stopped by"]) == {"patience"}


# ----------------------------------------------------------------------------- 08's sentences

def verdict_tables(decoupled_vs_joint, blog_verdict):
    lo, hi = decoupled_vs_joint
    claims = pd.DataFrame({"A": ["decoupled"] * 2, "B": ["joint"] * 2, "primary": [True, False],
                           "lo": [lo, 50.0], "hi": [hi, 60.0]})
    factorial = pd.DataFrame({"comparison": ["decoupled vs dual_words", "blog vs decoupled"],
                              "verdict": ["A better", blog_verdict]})
    return claims, factorial


@pytest.mark.parametrize("interval, blog, said", [
    ((-15.4, -5.4), "A credibly worse",
     "Notebook 06 found the corrected `decoupled` model credibly *worse* than `joint`, and the blog's module as written worse again."),
    ((2.0, 9.0), "A credibly worse",
     "Notebook 06 found the corrected `decoupled` model credibly *better* than `joint`, and the blog's module as written credibly worse than `decoupled`."),
    ((-3.0, 4.0), "no credible difference",
     "Notebook 06 found the corrected `decoupled` model not credibly different from `joint`, and the blog's module as written not credibly different from `decoupled`."),
    ((-9.0, -1.0), "A better",
     "Notebook 06 found the corrected `decoupled` model credibly *worse* than `joint`, and the blog's module as written credibly better than `decoupled`."),
])
def test_the_verdict_sentence_follows_the_verdicts(interval, blog, said):
    assert ablations.verdict_sentence(*verdict_tables(interval, blog)) == said


def test_the_verdict_sentence_needs_06s_tables():
    claims, factorial = verdict_tables((-1, -0.5), "A better")
    with pytest.raises(ValueError, match="blog vs decoupled"):
        ablations.verdict_sentence(claims, factorial.iloc[:1])


def tuning_table(trials: dict, chosen: dict | None = None) -> pd.DataFrame:
    """{variant: values tried} -> a tuning table whose best trial is each variant's middle value (or `chosen`)."""
    rows = []
    for v, values in trials.items():
        best = (chosen or {}).get(v, values[len(values) // 2])
        rows += [{"variant": v, "tuned": TUNED[v], "value": x, "val rsum": 300.0 if x == best else 290.0,
                  "best epoch": 5, "epochs": 8, "change over last 3 epochs": -1.0, "stopped by": "patience",
                  "run": f"{v}-{x:g}"} for x in values]
    return pd.DataFrame(rows, columns=ablations.TUNING_COLUMNS)


SEARCH = pd.DataFrame({"model": ["decoupled"] * 9 + ["joint"] * 12})
TRIALS = {"loss_vse": (3e-4, 1e-3, 3e-3), "loss_pointwise": (3e-4, 1e-3, 3e-3), "pretrained": (2, 5, 10, 20),
          "local_consistency": (0.1, 0.3, 1.0), "word_diversity": (0.1, 0.3, 1.0),
          "masked_reconstruction": (0.03, 0.1, 0.3, 1.0)}


def test_the_design_sentence_counts_the_runs_from_the_tables():
    said = ablations.design_sentence(tuning_table(TRIALS), SEARCH)
    assert ("except the changed losses (`loss_vse`, `loss_pointwise`), which get their own learning-rate trial "
            "(3 runs each)") in said
    assert "(that would cost 9 runs each)" in said
    assert "weight sweep (`local_consistency` 3, `word_diversity` 3, `masked_reconstruction` 4 runs)" in said
    assert "number of SimCLR epochs (4 runs)" in said and said.endswith("until its choice is interior.")
    at_end = ablations.design_sentence(tuning_table({**TRIALS, "masked_reconstruction": WEIGHT_LADDER[:7]},
                                                    {"masked_reconstruction": 0.001}), SEARCH.iloc[:4])
    assert "(that would cost 4 runs each)" in at_end
    assert at_end.endswith(", or the ladder ends: `masked_reconstruction` chose 0.001, the end of its ladder.")


def test_the_design_sentence_refuses_an_unfinished_or_missing_tuning():
    with pytest.raises(ValueError, match="unfinished"):
        ablations.design_sentence(tuning_table(TRIALS, {"word_diversity": 0.1}), SEARCH)
    with pytest.raises(ValueError, match="pretrain_epochs"):
        ablations.design_sentence(tuning_table({k: v for k, v in TRIALS.items() if k != "pretrained"}), SEARCH)


# ----------------------------------------------------------------------------- end to end, real training

def test_tuning_trains_pretrains_and_resumes_for_real(where, monkeypatch, one_thread):
    """`pretrained` and `loss_vse` tuned on tiny synthetic features with a 2-epoch budget and 3-value ladders."""
    fs = synthetic_featureset(n_images=40, regions=9, image_dim=48, text_dim=24, max_len=10, seed=6)
    feats = {"train": fs.select_images(torch.arange(32)), "val": fs.select_images(torch.arange(32, 40))}
    monkeypatch.setenv("COURSE_WORKERS", "1")
    monkeypatch.setitem(recipes.BUDGETS, "cpu", dict(epochs=2, patience=1, batch_size=8, lr=1e-3,
                                                     model_overrides={"dim": 16}))
    monkeypatch.setattr(recipes, "chosen_setting", lambda model, budget: None)
    monkeypatch.setitem(ablations.LADDERS, "pretrain_epochs", (1, 2, 3))
    monkeypatch.setattr(ablations, "EPOCHS_START", (1, 2, 3))
    monkeypatch.setitem(ablations.LADDERS, "lr", (3e-4, 1e-3, 3e-3))
    for variant in ("pretrained", "loss_vse"):
        rows = ablations.tune(variant, feats, log=lambda _: None)
        assert len(rows) == 3 and rows["epochs"].le(2).all() and rows["val rsum"].gt(0).all()
    for e in (1, 2, 3):
        assert (where / "runs" / ablations.pretrained_projections("cpu", 0, e)).is_file()
    table = pd.read_csv(ablations.tuning_file("cpu"))
    assert len(table) == 6 and set(table.tuned) == {"pretrain_epochs", "lr"}
    monkeypatch.setattr(ablations, "train_run", lambda *a: pytest.fail("a finished trial was retrained"))
    pd.testing.assert_frame_equal(ablations.tune("loss_vse", feats, log=lambda _: None),
                                  table[table.variant == "loss_vse"].sort_values("value").reset_index(drop=True))


def tiny_course(monkeypatch) -> dict:
    """Tiny synthetic features (32 / 8 / 8 images) and a 2-epoch CPU budget with no searched setting, one process."""
    fs = synthetic_featureset(n_images=48, regions=9, image_dim=48, text_dim=24, max_len=10, seed=6)
    monkeypatch.setenv("COURSE_WORKERS", "1")
    monkeypatch.setitem(recipes.BUDGETS, "cpu", dict(epochs=2, patience=1, batch_size=8, lr=1e-3,
                                                     model_overrides={"dim": 16}))
    monkeypatch.setattr(recipes, "chosen_setting", lambda model, budget: None)
    return {"train": fs.select_images(torch.arange(32)), "val": fs.select_images(torch.arange(32, 40)),
            "test": fs.select_images(torch.arange(40, 48))}


def test_the_tuned_design_end_to_end_for_real(where, monkeypatch, one_thread):
    """Every tuned variant (3-value ladders: no growth), every variant at its choice, the scale curve at 50%, one
    seed, ranked; then the convergence table and the tables, on tiny synthetic features with a 2-epoch budget."""
    feats = tiny_course(monkeypatch)
    monkeypatch.setattr(ablations, "EPOCHS_START", (1, 2, 3))
    for what, ladder in [("pretrain_epochs", (1, 2, 3)), ("lr", (3e-4, 1e-3, 3e-3)), ("aux_weight", (0.1, 0.3, 1.0))]:
        monkeypatch.setitem(ablations.LADDERS, what, ladder)
    monkeypatch.setattr(ablations, "SCALE_FRACTIONS", (0.5, 1.0))
    monkeypatch.setattr(runs, "imagenet_classifier", lambda: nn.Linear(48, 10))
    tuning = ablations.tune_all(feats, log=lambda _: None)
    assert len(tuning) == 3 * len(TUNED)
    variants, scale = ablations.all_ranks(feats, tuning, seeds=(0,))
    assert set(variants) == set(ablations.VARIANTS) and len(scale) == 2 * 3
    pretrained = ablations.tuned_config("pretrained", tuning)
    assert pretrained.init_from == ablations.pretrained_projections("cpu", 0, int(ablations.tuned_value(tuning, "pretrained")))
    table = ablations.convergence_table(tuning, seeds=(0,))
    assert len(table) == 3 * len(TUNED) + 10 - len(TUNED) + 3 and table.epochs.le(2).all()
    assert (table.kind == "tuning + seed run").sum() == len(TUNED)
    baseline = [runs.rank_run(recipes.train_config("decoupled", "cpu", 0), feats)]
    cap = feats["test"].caption_image
    t = ablations.ablation_table(variants, baseline, cap, n_boot=50)
    assert list(t.variant) == list(ablations.VARIANTS) and t.verdict.isin(
        ["better", "credibly worse", "no credible difference", "not credible after Holm"]).all()
    for group, part in t.groupby("group"):                    # Holm within each group, never below the raw p
        assert (part.p_holm >= part.p - 1e-12).all() and part.correction.eq(f"Holm within {group} ({len(part)})").all()
        assert ((part.p_holm <= 0.05) == part.verdict.isin(["better", "credibly worse"])).all()
    trials = tuning.set_index("variant")["share of loss %"]    # an added term's share of the loss; NaN for the others
    assert trials[["local_consistency", "word_diversity", "masked_reconstruction"]].gt(0).all()
    assert trials[["loss_vse", "loss_pointwise", "pretrained"]].isna().all()
    assert set(ablations.tables(tuning, variants, scale, baseline, cap)) == {
        "Tuning (seed 0, validation)", "Variants vs decoupled (test rSum)", "Data scale (test rSum)",
        "How the gaps move with data (test rSum)"}


def test_the_tuned_runs_resume_from_the_committed_ranks_on_a_fresh_clone(where, monkeypatch, one_thread):
    """Killed after some runs, then resumed where runs/ is gone (a fresh clone has only the committed files): only
    the runs not yet in the ranks file train, the convergence table comes from the curves stored with the ranks,
    and a run whose recipe changed is trained again."""
    feats = tiny_course(monkeypatch)
    monkeypatch.setattr(ablations, "VARIANTS", {k: ablations.VARIANTS[k] for k in ("no_value", "loss_vse")})
    monkeypatch.setattr(ablations, "SCALE_MODELS", ("decoupled",))
    monkeypatch.setattr(ablations, "SCALE_FRACTIONS", (0.5, 1.0))
    tuning = pd.DataFrame([{"variant": "loss_vse", "tuned": "lr", "value": v, "val rsum": r, "best epoch": 1,
                            "epochs": 2, "change over last 3 epochs": np.nan, "stopped by": "epoch cap",
                            "run": recipes.run_dir(ablations.trial_config("loss_vse", v)).name}
                           for v, r in [(3e-4, 1.0), (1e-3, 2.0), (3e-3, 1.5)]])
    path = where / "ranks.npz"
    real, trained = ablations.train_run, []

    def counted(cfg, feats, *rest):
        if len(trained) == 3:
            raise KeyboardInterrupt                          # killed while the fourth run trains
        trained.append((cfg.model, cfg.loss, cfg.seed, cfg.train_fraction))
        return real(cfg, feats, *rest)

    monkeypatch.setattr(ablations, "train_run", counted)
    with pytest.raises(KeyboardInterrupt):
        ablations.all_ranks(feats, tuning, seeds=(0, 1), path=path)
    assert len(ablations.committed_runs(path)) == 3
    shutil.rmtree(where / "runs")                           # a fresh clone: the committed ranks file only
    trained.clear()
    monkeypatch.setattr(ablations, "train_run", lambda cfg, feats, *rest: trained.append(cfg.seed) or real(cfg, feats, *rest))
    variants, scale = ablations.all_ranks(feats, tuning, seeds=(0, 1), path=path)
    assert len(trained) == 8 - 3                             # 2 variants x 2 seeds + 2 scale points x 2 seeds, less 3
    assert [len(v) for v in variants.values()] == [2, 2] and [len(v) for v in scale.values()] == [2, 2]
    shutil.rmtree(where / "runs")
    table = ablations.convergence_table(tuning, seeds=(0, 1), path=path)
    assert table.epochs.le(2).all() and len(table) == 3 + 4 + 2 - 1      # loss_vse seed 0 is also a tuning trial
    with pytest.raises(RuntimeError, match="has not been trained"):
        ablations.convergence_table(tuning, seeds=(0, 1))        # without the stored curves: a clear error
    trained.clear()
    moved = tuning.assign(**{"val rsum": [3.0, 2.0, 1.5]})       # the tuning now chooses lr 3e-4 for loss_vse
    ablations.all_ranks(feats, moved, seeds=(0, 1), path=path)
    assert trained == [0, 1]                                  # only loss_vse's two seeds train again
