"""Every file the course writes lands by `helpers.atomic` (a reader never sees half a file), and the student
edition is written only where it may be."""
import json
import os
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from helpers import atomic, checkpoints, checks
from helpers.__main__ import main
from helpers.config import Paths
from helpers.pipeline import evaluation, search
from helpers.tools import editions


@pytest.fixture
def landed(monkeypatch):
    """The names of the files moved into place by atomic_path (its os.replace) during the test."""
    names, replace = [], os.replace

    def spy(src, dst):
        names.append(Path(dst).name)
        replace(src, dst)
    monkeypatch.setattr(atomic.os, "replace", spy)
    return names


def test_the_text_helpers_write_whole_files(tmp_path, landed):
    atomic.write_text(tmp_path / "a.md", "é\n")
    atomic.write_json(tmp_path / "b.json", {"x": [1, 2]}, indent=1)
    atomic.write_csv(pd.DataFrame({"x": [1, 2]}), tmp_path / "c.csv", index=False)
    assert (tmp_path / "a.md").read_text(encoding="utf-8") == "é\n"
    assert (tmp_path / "b.json").read_text() == json.dumps({"x": [1, 2]}, indent=1) + "\n"
    assert pd.read_csv(tmp_path / "c.csv").x.tolist() == [1, 2]
    assert landed == ["a.md", "b.json", "c.csv"] and sorted(p.name for p in tmp_path.iterdir()) == landed


def test_results_and_table_are_written_atomically_and_as_before(tmp_path, landed):
    results = pd.DataFrame({"model": ["joint"], "metric": ["rsum"], "mean": [300.0], "std": [1.0], "lo": [298.0],
                            "hi": [302.0], "seeds": [3]})
    claims = pd.DataFrame({"A": ["decoupled"], "B": ["joint_words"], "metric": ["rsum"], "reading": ["points"],
                           "primary": [True], "difference": [1.0], "lo": [-1.0], "hi": [3.0],
                           "verdict": ["inconclusive"]})
    factorial = pd.DataFrame({"comparison": ["flow"], "changes": ["a"], "difference": [1.0], "lo": [-1.0],
                              "hi": [3.0], "verdict": ["no credible difference"]})
    table = evaluation.write_results(results, claims, factorial, tmp_path / "results")
    assert sorted(landed) == ["claims.json", "comparisons.json", "provenance.json", "retrieval.json", "table.md"]
    assert table.read_text() == evaluation.markdown_table(results, claims, factorial) + "\n"
    assert (tmp_path / "results" / "claims.json").read_text() == claims.to_json(orient="records", indent=1)


def test_history_and_config_of_a_run_are_written_atomically(tmp_path, landed):
    state = {"history": [{"epoch": 1, "rsum": 10.0}], "train_config": {"lr": 1e-3}, "model_config": {}, "data": {}}
    checkpoints.save_epoch(tmp_path, state, {"epoch": 0, "rsum": float("-inf")})
    assert sorted(landed) == ["best.pt", "config.json", "history.csv", "last.pt"]
    assert json.loads((tmp_path / "config.json").read_text())["train_config"] == {"lr": 1e-3}


def test_the_search_table_is_written_atomically(tmp_path, landed, monkeypatch):
    monkeypatch.setattr(search, "grid_table", lambda budget: tmp_path / f"search-grid-{budget}.csv")
    monkeypatch.setattr(search, "run_all", lambda cfgs, feats, rank: None)
    monkeypatch.setattr(search, "train_run", lambda cfg, feats: None)
    monkeypatch.setattr(search, "trial_row", lambda cfg, result: {
        "model": cfg.model, "lr": cfg.lr, "init_temperature": cfg.model_overrides["init_temperature"],
        "val rsum": 100.0 + (cfg.lr == 1e-3) + (cfg.model_overrides["init_temperature"] == 0.1),
        "recipe": search.recipe_id(cfg)})
    search.bracketing_search(None, ["dual"], "cpu", log=lambda *a: None)   # the middle wins: no growth
    assert set(landed) == {"search-grid-cpu.csv"}


def test_recording_a_reference_is_atomic(tmp_path, landed, monkeypatch):
    path = tmp_path / "references.json"
    path.write_text(json.dumps({"x.old": {"": 1.0}}))
    monkeypatch.setattr(checks, "REFERENCE_FILE", path)
    monkeypatch.setenv("COURSE_RECORD_REFERENCES", "1")
    for name in ("COURSE_ENCODERS", "COURSE_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    checks.expect(2.5, "x.new", "exact")
    assert landed == ["references.json"]
    assert json.loads(path.read_text()) == {"x.new": {"": 2.5}, "x.old": {"": 1.0}}


# ----------------------------------------------------------------------------- where the student edition goes
# A small repository in tmp_path stands in for the course's, so that no test can write into the real notebooks/.

@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A course root whose notebooks/ holds two notebooks, one with an exercise, one without."""
    fake = Paths(root=tmp_path / "repo")
    fake.notebooks.mkdir(parents=True)
    for name, source in (("01_a.ipynb", "x = 1\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION"), ("02_b.ipynb", "z = 3")):
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]), fake.notebooks / name)
    monkeypatch.setattr(editions, "PATHS", fake)
    return fake


def _files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_the_edition_goes_to_a_new_folder_and_may_be_written_again(repo, tmp_path, landed):
    out = tmp_path / "student"
    written = editions.write_student_edition(out=out)
    assert {p.name: n for p, n in written.items()} == {"01_a.ipynb": 1, "02_b.ipynb": 0}
    assert sorted(landed) == [editions.MARKER, "01_a.ipynb", "02_b.ipynb"]
    assert (out / "01_a.ipynb").read_text().endswith("\n")
    assert nbformat.read(out / "01_a.ipynb", as_version=4).cells[0].source == "x = 1\ny = ..."   # an answer's stub
    editions.write_student_edition(out=out)                              # an earlier edition: written over
    empty = tmp_path / "empty"
    empty.mkdir()
    editions.write_student_edition(out=empty)


def test_the_edition_refuses_the_notebooks_the_root_and_foreign_folders(repo, tmp_path):
    before = _files(repo.notebooks)
    for folder in (repo.notebooks, repo.root, repo.root / "notebooks" / ".." / "notebooks"):
        with pytest.raises(ValueError, match="would overwrite the instructor notebooks"):
            editions.write_student_edition(out=folder)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ValueError, match="would overwrite the instructor notebooks"):
        editions.write_student_edition(other, other)                    # its own source folder
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an earlier student edition"):
        editions.write_student_edition(out=foreign)
    with pytest.raises(ValueError, match="is a file"):
        editions.write_student_edition(out=foreign / "notes.txt")
    assert _files(repo.notebooks) == before and _files(foreign) == {"notes.txt": "keep me"}


def test_the_student_command_says_why_it_refuses(repo, capsys):
    before = _files(repo.notebooks)
    assert main(["student", "--out", str(repo.notebooks)]) == 2
    assert "would overwrite the instructor notebooks" in capsys.readouterr().err
    assert _files(repo.notebooks) == before
