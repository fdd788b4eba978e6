"""results/provenance.json says when, from which commit, with which budget and encoders results/table.md was
made; `python -m helpers summary` prints that line and the expected results that are missing."""
import json
import re
import subprocess
from types import SimpleNamespace

import pandas as pd
import pytest

from helpers import data
from helpers.__main__ import main
from helpers.config import PROJECT_ROOT
from helpers.pipeline import evaluation
from helpers.pipeline.recipes import MODEL_NAMES, seeds_for


def tables(models=MODEL_NAMES, seeds=None):
    results = pd.DataFrame([{"model": m, "metric": "rsum", "mean": 300.0, "std": 1.0, "lo": 298.0, "hi": 302.0,
                             "seeds": len(seeds_for(m)) if seeds is None else seeds} for m in models])
    claims = pd.DataFrame({"A": ["decoupled"], "B": ["joint_words"], "metric": ["rsum"], "reading": ["points"],
                           "primary": [True], "difference": [1.0], "lo": [-1.0], "hi": [3.0],
                           "verdict": ["inconclusive"]})
    factorial = pd.DataFrame({"comparison": ["a vs b"], "changes": ["flow"], "difference": [1.0], "lo": [-1.0],
                              "hi": [3.0], "verdict": ["no credible difference"]})
    return results, claims, factorial


def git(root, *args):
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_write_results_records_time_commit_budget_and_encoders(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_ENCODERS", "blog")
    evaluation.write_results(*tables(), folder=tmp_path, budget="gpu")
    p = json.loads((tmp_path / "provenance.json").read_text())
    assert set(p) == {"written_utc", "commit", "uncommitted_changes", "budget", "encoders", "table_md5"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", p["written_utc"])
    state = evaluation.git_state()                  # None and None where the course is not a git checkout
    assert {k: p[k] for k in state} == state
    if state["commit"] is not None:
        assert p["commit"] == git(PROJECT_ROOT, "rev-parse", "HEAD")
    assert p["budget"] == "gpu" and p["encoders"] == {"pair": "blog", "image": "resnet50", "text": "bert-base-uncased"}
    line = evaluation.provenance_line(tmp_path)
    assert line.startswith(f"made {p['written_utc'][:10]} ") and " UTC from " in line
    assert line.endswith("; budget gpu, encoders blog (resnet50 + bert-base-uncased)")


def test_git_state_sees_uncommitted_changes_and_a_folder_that_is_no_checkout(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("1")
    git(repo, "add", "a.txt")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    assert evaluation.git_state(repo) == {"commit": git(repo, "rev-parse", "HEAD"), "uncommitted_changes": False}
    (repo / "new.txt").write_text("untracked files are not changes to the code that ran")
    assert evaluation.git_state(repo)["uncommitted_changes"] is False
    (repo / "a.txt").write_text("2")
    assert evaluation.git_state(repo)["uncommitted_changes"] is True
    (repo / "sub").mkdir()
    assert evaluation.git_state(repo / "sub") == {"commit": None, "uncommitted_changes": None}   # not its own checkout
    assert evaluation.git_state(tmp_path) == {"commit": None, "uncommitted_changes": None}


def test_the_line_says_so_when_the_commit_had_uncommitted_changes_or_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluation, "git_state", lambda: {"commit": "0123456789abcdef", "uncommitted_changes": True})
    evaluation.write_results(*tables(), folder=tmp_path)
    assert " from commit 0123456789 with uncommitted changes; budget not recorded, encoders course " in \
        evaluation.provenance_line(tmp_path)
    monkeypatch.setattr(evaluation, "git_state", lambda: {"commit": None, "uncommitted_changes": None})
    evaluation.write_results(*tables(), folder=tmp_path, budget="cpu")
    assert " from an unknown commit (not a git checkout); budget cpu," in evaluation.provenance_line(tmp_path)


def test_a_table_without_provenance_or_with_another_tables_says_it_is_unknown(tmp_path):
    evaluation.write_results(*tables(), folder=tmp_path, budget="cpu")
    (tmp_path / "table.md").write_text("| another table |\n")
    assert "describes another table.md" in evaluation.provenance_line(tmp_path)
    (tmp_path / "provenance.json").unlink()
    assert evaluation.provenance_line(tmp_path).startswith("made: unknown (no ")
    assert "provenance.json (no file)" in evaluation.missing_results(tmp_path)


def test_missing_results_lists_absent_files_models_and_seeds(tmp_path):
    assert evaluation.missing_results(tmp_path) == [f"{name} (no file)" for name in evaluation.RESULT_FILES]
    evaluation.write_results(*tables(), folder=tmp_path, budget="cpu")
    assert evaluation.missing_results(tmp_path) == []
    evaluation.write_results(*tables(models=("decoupled", "joint", "dual"), seeds=2), folder=tmp_path, budget="cpu")
    assert evaluation.missing_results(tmp_path) == [
        "dual: 2 of 3 seeds", "dual_words (not in retrieval.json)", "decoupled_pooled (not in retrieval.json)",
        "decoupled: 2 of 5 seeds", "joint: 2 of 5 seeds", "joint_words (not in retrieval.json)", "blog (not in retrieval.json)"]


@pytest.fixture
def tiny_data(monkeypatch):
    """`summary`'s data lines from stand-ins, so that the command runs without the COCO subset."""
    monkeypatch.setattr(data, "load_subset", lambda: SimpleNamespace(image_ids=[1, 2], captions=[1, 2, 3]))
    monkeypatch.setattr(data, "mine_labels", lambda captions: None)
    monkeypatch.setattr(data, "instance_labels", lambda subset: None)
    monkeypatch.setattr(data, "label_quality", lambda mined, truth: pd.DataFrame(
        {"precision": [0.9], "recall": [0.8]}, index=["ALL (micro)"]))


def test_summary_prints_when_and_from_which_commit_and_what_is_missing(tmp_path, monkeypatch, capsys, tiny_data):
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path / "results"))
    assert main(["summary"]) == 0
    assert f"no results yet in {tmp_path / 'results'}: run `python -m helpers reproduce`" in capsys.readouterr().out
    evaluation.write_results(*tables(models=MODEL_NAMES[:-1]), folder=tmp_path / "results", budget="cpu")
    executed = tmp_path / "executed"
    executed.mkdir()
    (executed / "00_welcome_and_setup.ipynb").write_text("{}")
    assert main(["summary", "--executed", str(executed)]) == 0
    out = capsys.readouterr().out
    made = evaluation.provenance_line(tmp_path / "results")
    assert f"results ({tmp_path / 'results' / 'table.md'}), {made}:\n| model |" in out
    assert "missing: blog (not in retrieval.json)\n(`python -m helpers reproduce` makes every model" in out
    assert "  00_welcome_and_setup.ipynb\n  missing: 01_coco_and_preprocessing.ipynb, 02_image_features.ipynb," in out
