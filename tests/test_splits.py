"""Split sensitivity (helpers.pipeline.splits): other splits of the subset by the same rule, their features cut from
the same 'all', their runs kept apart, `make splits` resumable from its committed files, and 06's table."""
import pickle
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import data, metrics
from helpers.config import PATHS
from helpers.fast import parallel
from helpers.features import synthetic_featureset
from helpers.pipeline import feature_cache, recipes, runs, splits

pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.py

IDS = pd.read_csv(data.IDS_CSV)
ALL_IDS, INSTANCE_IDS = IDS.image_id.tolist(), IDS.image_id[IDS.has_instances == 1].tolist()


# ----------------------------------------------------------------------------- the split rule

def test_order_0_is_todays_split_exactly():
    committed = {name: sorted(IDS.image_id[IDS.split == name].tolist()) for name in ("train", "val", "test")}
    assert data.make_split_order(ALL_IDS, INSTANCE_IDS, 0) == committed == data.make_split(ALL_IDS, INSTANCE_IDS)
    # the rule written out again for other orders is make_split's: with make_split's salt it gives make_split's split
    assert data._salted_split(ALL_IDS, INSTANCE_IDS, "coco-subset-split", data.N_TEST, data.N_VAL) == committed


def test_every_order_keeps_the_rule_and_orders_1_and_2_differ_from_0_and_from_each_other():
    split = {k: data.make_split_order(ALL_IDS, INSTANCE_IDS, k) for k in (0, 1, 2)}
    for k, s in split.items():
        assert {name: len(ids) for name, ids in s.items()} == {"train": 1714, "val": 250, "test": 1000}
        assert set(INSTANCE_IDS) <= set(s["test"]) and len(INSTANCE_IDS) == 258
        assert sorted(s["train"] + s["val"] + s["test"]) == sorted(ALL_IDS)          # a partition
        assert all(ids == sorted(ids) for ids in s.values())
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert set(split[a]["test"]) != set(split[b]["test"]) and set(split[a]["val"]) != set(split[b]["val"])
    assert data.make_split_order(ALL_IDS[::-1], INSTANCE_IDS, 1) == split[1]             # independent of input order
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="whole number >= 0"):
            data.make_split_order(ALL_IDS, INSTANCE_IDS, bad)


@pytest.mark.skipif(not (PATHS.subset / "manifest.csv").is_file(), reason="needs the prepared subset")
def test_the_subset_gives_each_order_its_split():
    subset = data.load_subset()
    assert {n: subset.split_ids(n) for n in ("train", "val", "test")} == data.make_split(
        subset.image_ids, subset.instance_image_ids())
    assert subset.split_ids("test", 2) == data.make_split_order(subset.image_ids, subset.instance_image_ids(), 2)["test"]
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        subset.split_ids("dev", 1)


# ----------------------------------------------------------------------------- features and runs of a split

N_TEST, N_VAL = 12, 8


def synthetic_all():
    fs = synthetic_featureset(n_images=40, regions=9, image_dim=32, text_dim=24, max_len=10, seed=3)
    fs.source = "synthetic-all"
    return fs


def synthetic_split_features(progress: bool = False, order: int = 0) -> dict:
    """What `load_course_features(order=...)` gives, on 40 synthetic images (4 instance-labelled)."""
    everything = synthetic_all()
    ids = everything.image_ids.tolist()
    return feature_cache.course_splits(everything, data.make_split_order(ids, ids[:4], order, N_TEST, N_VAL), order)


def test_a_splits_features_are_cut_from_all_and_marked():
    course, other = synthetic_split_features(order=0), synthetic_split_features(order=2)
    assert course["train"].source == "synthetic-all" and other["all"] is not None
    for name in ("train", "val", "test"):
        assert other[name].source == "synthetic-all|split2"
        feature_cache.check_split(other[name], 2)
        ids = other[name].image_ids
        rows = torch.tensor([other["all"].image_ids.tolist().index(i) for i in ids.tolist()])
        assert torch.equal(other[name].pooled, other["all"].pooled[rows])       # the same features, other rows
    assert set(other["test"].image_ids.tolist()) != set(course["test"].image_ids.tolist())
    with pytest.raises(ValueError, match="cut for split 2 .* not split 0"):
        feature_cache.check_split(other["train"], 0)
    with pytest.raises(ValueError, match="cut for split 0 .* not split 1; pass load_course_features\\(order=1\\)"):
        feature_cache.check_split(course["train"], 1)


def test_a_splits_run_has_its_own_folder_and_refuses_another_splits_features(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path))
    cfg = recipes.train_config("decoupled", "cpu", 3)
    assert recipes.run_dir(cfg, 0) == recipes.run_dir(cfg) == tmp_path / recipes.run_dir(cfg).name
    assert recipes.run_dir(cfg, 2) == tmp_path / "split2" / recipes.run_dir(cfg).name
    with pytest.raises(ValueError, match="cut for split 0"):
        runs.train_run(cfg, synthetic_split_features(order=0), order=1)
    assert not list(tmp_path.iterdir())                                          # nothing trained


def test_a_worker_can_load_each_splits_features():
    load = pickle.loads(pickle.dumps(splits.SplitFeatures(2)))          # what `fast.parallel` sends a worker
    assert load == splits.SplitFeatures(2) and load.__name__ == "SplitFeatures(order=2)"


def record_job(feats, name):
    """A side-by-side job that does nothing (module level, for spawned workers)."""


def source_only() -> dict:
    return {"train": SimpleNamespace(source="tiny")}


def test_side_by_side_calls_done_here_as_each_job_finishes(monkeypatch):
    monkeypatch.setenv("COURSE_WORKERS", "2")
    finished = []
    jobs = [("a",), ("b",), ("c",)]
    assert parallel.side_by_side(record_job, jobs, source_only(), source_only, done=finished.append) == 3
    assert sorted(finished) == ["a", "b", "c"]


# ----------------------------------------------------------------------------- make splits, end to end

@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A 2-epoch budget, runs and committed files in tmp_path, the splits of 40 synthetic images."""
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("COURSE_WORKERS", "1")
    monkeypatch.setattr(splits, "PATHS", type(PATHS)(root=tmp_path))
    monkeypatch.setitem(recipes.BUDGETS, "tiny", dict(epochs=2, patience=1, batch_size=8, lr=1e-3,
                                                      model_overrides={"dim": 16}))
    monkeypatch.setattr(splits, "load_course_features", synthetic_split_features)
    state = SimpleNamespace(trained=[], kill_at=None)
    real = splits.train_run

    def counted(cfg, feats, order):
        state.trained.append((order, cfg.model, cfg.seed))
        if len(state.trained) == state.kill_at:
            raise KeyboardInterrupt                         # killed while this run trains
        return real(cfg, feats, order)

    monkeypatch.setattr(splits, "train_run", counted)
    return state


def test_make_splits_resumes_keeps_finished_rows_when_killed_and_retrains_a_changed_recipe(tiny, tmp_path, monkeypatch):
    tiny.kill_at = 3
    with pytest.raises(KeyboardInterrupt):
        splits.reproduce_splits("tiny", orders=(1,), seeds=(0,), progress=False)
    kept = splits.load_committed("tiny")
    assert [tuple(r) for r in kept.table[["split", "model", "seed"]].itertuples(index=False)] == \
        [(1, "decoupled", 0), (1, "joint_words", 0)]
    assert set(kept.ranks) == {(1, "decoupled", 0), (1, "joint_words", 0)}

    tiny.kill_at, tiny.trained = None, []
    splits.reproduce_splits("tiny", orders=(1, 2), seeds=(0,), progress=False)
    assert tiny.trained == [(1, "decoupled_pooled", 0), (1, "joint", 0)] + [(2, m, 0) for m in splits.MODELS]
    table = splits.load_committed("tiny").table
    assert list(zip(table.split, table.model)) == [(k, m) for k in (1, 2) for m in splits.MODELS]
    cfg = recipes.train_config("joint", "tiny", 0)
    row = table[(table.split == 2) & (table.model == "joint")].iloc[0]
    assert row.recipe == recipes.run_dir(cfg).name and row.lr == 1e-3 and row.init_temperature == 0.07
    assert (tmp_path / "runs" / "split2" / row.recipe / "best.pt").is_file()
    ranks = splits.load_committed("tiny").ranks[2, "joint", 0]
    assert row["test rsum"] == round(metrics.recalls_from_ranks(ranks["img_rank"], ranks["cap_rank"])["rsum"], 2)
    assert len(ranks["img_rank"]) == N_TEST and row["epochs"] <= 2

    tiny.trained = []
    splits.reproduce_splits("tiny", orders=(1, 2), seeds=(0,), progress=False)
    assert tiny.trained == []                                                  # a second call trains nothing

    t = splits.split_table("tiny", n_boot=50)
    assert list(zip(t.split, t.comparison)) == [(1, "decoupled vs joint_words"), (1, "decoupled_pooled vs joint"),
                                                (2, "decoupled vs joint_words"), (2, "decoupled_pooled vs joint")]
    assert (t.lo <= t.difference).all() and (t.difference <= t.hi).all() and (t.seeds == "1 + 1").all()

    monkeypatch.setattr(recipes, "chosen_setting",          # the search chose another setting for joint
                        lambda model, budget: {"lr": 2e-3, "init_temperature": 0.1} if model == "joint" else None)
    with pytest.raises(RuntimeError, match="2 committed run.* another recipe .*make splits"):
        splits.split_table("tiny", n_boot=50)
    splits.reproduce_splits("tiny", orders=(1, 2), seeds=(0,), progress=False)
    assert tiny.trained == [(1, "joint", 0), (2, "joint", 0)]                  # only the changed recipe's runs
    table = splits.load_committed("tiny").table
    assert len(table) == 8 and table.loc[table.model == "joint", "lr"].eq(2e-3).all()
    assert len(splits.split_table("tiny", n_boot=50)) == 4


def test_each_row_says_how_its_run_converged_and_an_older_table_gets_it_without_retraining(tiny):
    splits.reproduce_splits("tiny", orders=(1,), seeds=(0,), progress=False)
    files = splits.committed_files("tiny")
    table = pd.read_csv(files["table"])
    assert list(table.columns) == splits.COLUMNS and set(table["stopped by"]) <= {"patience", "epoch cap"}
    assert table["learned temperature"].between(0.01, 1).all() and table.epochs.le(2).all()
    table[splits.OLDER_COLUMNS].to_csv(files["table"], index=False)        # as `make splits` wrote it before
    older = splits.load_committed("tiny")
    assert older.table["stopped by"].isna().all()
    assert not splits.recorded(older, 1, recipes.train_config("joint", "tiny", 0))
    tiny.trained = []
    splits.reproduce_splits("tiny", orders=(1,), seeds=(0,), progress=False)
    assert tiny.trained == []                                  # the runs' folders are there: recorded, not retrained
    again = pd.read_csv(files["table"])
    pd.testing.assert_frame_equal(again, table)


def test_negative_or_non_integer_split_orders_are_refused(tiny):
    for bad in ((-1, 1), (1.0,), (True,)):
        with pytest.raises(ValueError, match="whole numbers >= 0"):
            splits.reproduce_splits("tiny", orders=bad)


def test_order_0_is_the_course_split_its_runs_in_runs_and_its_rows_first_in_the_table(tiny, tmp_path):
    splits.reproduce_splits("tiny", orders=(0, 1), seeds=(0,), progress=False)
    assert tiny.trained == [(0, m, 0) for m in splits.MODELS] + [(1, m, 0) for m in splits.MODELS]
    cfg = recipes.train_config("decoupled", "tiny", 0)
    assert (tmp_path / "runs" / recipes.run_dir(cfg).name / "best.pt").is_file()        # 06's folder, not split0/
    assert not (tmp_path / "runs" / "split0").exists()
    t = splits.split_table("tiny", n_boot=50)
    assert list(zip(t.split, t["test set"]))[:2] == [(0, "the course's")] * 2 and set(t.split) == {0, 1}
    course = splits.load_committed("tiny").runs(0)                      # given course ranks replace order 0's
    again = splits.split_table("tiny", course_ranks=course, caption_image=synthetic_split_features()["test"].caption_image,
                               n_boot=50)
    assert list(again.split) == list(t.split) and again.difference.tolist() == t.difference.tolist()


# ----------------------------------------------------------------------------- the committed files and the table

CAPTION_IMAGE = np.repeat(np.arange(50), 5)


def perfect():
    return {"img_rank": np.zeros(50, dtype=int), "cap_rank": np.zeros(250, dtype=int)}


def poor(rng):
    return {"img_rank": rng.integers(0, 30, 50), "cap_rank": rng.integers(0, 30, 250)}


def synthetic_committed(budget: str, seeds=(0, 1, 2)) -> splits.Committed:
    """Split 1: decoupled perfect, joint_words poor (primary: A better); decoupled_pooled = joint (no difference)."""
    rng = np.random.default_rng(0)
    committed = splits.Committed()
    committed.tests[1] = {"image_ids": np.arange(50) + 7, "caption_image": CAPTION_IMAGE}
    rows = []
    same = [poor(rng) for _ in seeds]
    for model in splits.MODELS:
        for s in seeds:
            r = perfect() if model == "decoupled" else poor(rng) if model == "joint_words" else same[s]
            committed.ranks[1, model, s] = r
            rows.append({"split": 1, "model": model, "seed": s, "lr": 2e-3, "init_temperature": 0.07, "epochs": 2,
                         "best epoch": 2, "val rsum": 1.0, "test rsum": metrics.recalls_from_ranks(**r)["rsum"],
                         "recipe": recipes.run_dir(recipes.train_config(model, budget, s)).name})
    committed.table = pd.DataFrame(rows, columns=splits.COLUMNS)
    return committed


def test_split_table_on_synthetic_ranks(tiny):
    splits.save_committed(synthetic_committed("tiny"), "tiny")
    rng = np.random.default_rng(1)
    course = {"decoupled": [poor(rng) for _ in range(5)], "joint_words": [perfect() for _ in range(5)],
              "decoupled_pooled": [poor(rng) for _ in range(3)]}                # joint missing: no secondary row
    t = splits.split_table("tiny", course_ranks=course, caption_image=CAPTION_IMAGE, n_boot=200).set_index(
        ["split", "comparison"])
    assert list(t.index) == [(0, "decoupled vs joint_words"), (1, "decoupled vs joint_words"),
                             (1, "decoupled_pooled vs joint")]
    course_row, primary, secondary = (t.iloc[i] for i in range(3))
    assert course_row["test set"] == "the course's" and course_row.seeds == "5 + 5"
    assert course_row.B == 600 and course_row.verdict == "A credibly worse"
    assert primary["test set"] == "order 1" and primary.A == 600 and primary.verdict == "A better"
    want = 600 - np.mean([metrics.recalls_from_ranks(**splits.load_committed("tiny").ranks[1, "joint_words", s])["rsum"]
                          for s in range(3)])
    assert primary.difference == pytest.approx(want) and primary.lo < want < primary.hi
    assert secondary.difference == 0 and secondary.verdict == "no credible difference"
    with pytest.raises(ValueError, match="needs the course test set's caption_image"):
        splits.split_table("tiny", course_ranks=course)


def test_committed_ranks_come_back_as_they_were(tiny):
    want = synthetic_committed("tiny")
    splits.save_committed(want, "tiny")
    got = splits.load_committed("tiny")
    assert got.table.equals(want.table) and set(got.ranks) == set(want.ranks)
    assert all(np.array_equal(got.ranks[k][a], want.ranks[k][a]) for k in want.ranks for a in ("img_rank", "cap_rank"))
    assert np.array_equal(got.tests[1]["caption_image"], CAPTION_IMAGE)


def damage(files, what):
    table, ranks = files["table"], files["ranks"]
    if what == "csv garbled":
        table.write_bytes(b"\x00\xff\xfe" * 40)
    elif what == "csv foreign":
        pd.DataFrame({"variant": ["no_value"], "weight": [1.0]}).to_csv(table, index=False)
    elif what == "csv duplicate row":
        t = pd.read_csv(table)
        pd.concat([t, t.iloc[:1]]).to_csv(table, index=False)
    elif what == "npz truncated":
        ranks.write_bytes(ranks.read_bytes()[:200])
    elif what == "npz foreign":
        np.savez(ranks, **{"variant|no_value|0|img": np.zeros(3)})
    elif what == "npz other budget":
        with np.load(ranks) as z:
            arrays = {k: z[k] for k in z.files}
        np.savez(ranks, **{**arrays, "budget": np.array("gpu")})
    elif what == "npz lacks a run":
        with np.load(ranks) as z:
            arrays = {k: z[k] for k in z.files if not k.startswith("split1|joint|2|")}
        np.savez(ranks, **arrays)
    elif what == "npz missing":
        ranks.unlink()


@pytest.mark.parametrize("what, message", [
    ("csv garbled", "is damaged or not a CSV|is not the table"), ("csv foreign", "is not the table `make splits` writes"),
    ("csv duplicate row", "holds a run .* twice"), ("npz truncated", "is damaged or not an .npz file"),
    ("npz foreign", "is not a ranks file of `make splits`"), ("npz other budget", "ranks of budget 'gpu', not 'tiny'"),
    ("npz lacks a run", "lists split 1, joint, seed 2, but .* holds no ranks"),
    ("npz missing", "splits-tiny.csv is there but .*splits-ranks-tiny.npz is not")])
def test_a_damaged_or_foreign_committed_file_says_how_to_fix_it(tiny, what, message):
    splits.save_committed(synthetic_committed("tiny"), "tiny")
    files = splits.committed_files("tiny")
    damage(files, what)
    with pytest.raises(ValueError, match=message) as err:
        splits.load_committed("tiny")
    assert "git checkout -- notebooks/splits-tiny.csv notebooks/splits-ranks-tiny.npz" in str(err.value)
    assert "make splits" in str(err.value)
    with pytest.raises(ValueError, match=message):                             # make splits stops, it never overwrites
        splits.reproduce_splits("tiny", orders=(1,), seeds=(0,), progress=False)
    assert tiny.trained == []


def test_missing_committed_files_say_how_to_get_them(tiny):
    with pytest.raises(FileNotFoundError, match="git checkout -- notebooks/.*make splits"):
        splits.split_table("tiny")
    assert splits.load_committed("tiny", must_exist=False).table.empty


def test_ranks_of_another_test_set_are_not_mixed_in(tiny):
    committed = synthetic_committed("tiny")
    splits.save_committed(committed, "tiny")
    committed = splits.load_committed("tiny")
    feats = synthetic_split_features(order=1)
    with pytest.raises(RuntimeError, match="split 1 were made on another test set"):
        splits.record(committed, 1, recipes.train_config("decoupled", "tiny", 4), feats["test"], "tiny")


def test_06_reads_the_course_splits_committed_seeds_and_retrains_only_the_sample(tiny, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="make splits"):
        splits.course_ranks(synthetic_split_features(), "tiny", seeds=(0, 1))
    splits.reproduce_splits("tiny", orders=(0,), seeds=(0, 1), progress=False)
    committed = splits.load_committed("tiny")
    shutil.rmtree(tmp_path / "runs")                               # a fresh clone: only the committed files
    tiny.trained = []
    ranks, recheck = splits.course_ranks(synthetic_split_features(), "tiny", retrain=(0,), seeds=(0, 1))
    assert tiny.trained == [(0, m, 0) for m in splits.MODELS]      # seed 0 retrained here, seed 1 read
    assert list(ranks) == list(splits.MODELS) and all(len(r) == 2 for r in ranks.values())
    for m in splits.MODELS:
        assert np.array_equal(ranks[m][1]["img_rank"], committed.ranks[0, m, 1]["img_rank"])
    assert list(recheck.model) == list(splits.MODELS) and recheck.difference.abs().max() < 1e-6   # same machine
    monkeypatch.setattr(recipes, "chosen_setting",           # the search chose another setting for joint
                        lambda model, budget: {"lr": 2e-3, "init_temperature": 0.1} if model == "joint" else None)
    with pytest.raises(RuntimeError, match="lack 2 run.*first: joint seed 0.*make splits"):
        splits.course_ranks(synthetic_split_features(), "tiny", seeds=(0, 1))
