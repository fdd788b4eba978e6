"""`python -m helpers clean` strips execution timestamps and widget state and nothing nbval compares; the
committed notebooks are clean; `make refresh` cleans what it re-executes."""
import copy
import json
import re
from pathlib import Path

import pytest

from helpers.__main__ import main
from helpers.tools import clean

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
VIEW = "application/vnd.jupyter.widget-view+json"
# What nbval leaves out of its comparison of outputs (nbval 0.11, IPyNbFile.skip_compare without --nbdime).
NBVAL_SKIPS = {"metadata", "traceback", "prompt_number", "output_type", "name", "execution_count", VIEW,
               "image/png", "image/jpeg"}
STAMPS = {"iopub.execute_input": "2026-12-01T20:44:38.081803Z", "iopub.status.busy": "2026-12-01T20:44:38.081401Z",
          "iopub.status.idle": "2026-12-01T21:07:43.841532Z", "shell.execute_reply": "2026-12-01T21:07:43.839734Z"}
STATE = {"application/vnd.jupyter.widget-state+json": {"state": {"a1": {"model_name": "FloatProgressModel"}},
                                                       "version_major": 2, "version_minor": 0}}


def stand_in() -> dict:
    """A notebook as nbconvert (and papermill) leave it: timestamps, widget state, a progress bar's widget view
    with its text fallback, a view with no fallback, a tagged cell, a markdown cell."""
    bar = {"output_type": "display_data", "metadata": {},
           "data": {"text/plain": "extract:  50%|#####     | 1/2", VIEW: {"model_id": "a1", "version_major": 2}}}
    lone = {"output_type": "display_data", "metadata": {}, "data": {VIEW: {"model_id": "b2", "version_major": 2}}}
    code = lambda source, outputs, **meta: {"cell_type": "code", "execution_count": 1, "source": source,  # noqa: E731
                                             "outputs": outputs, "metadata": {"execution": dict(STAMPS), **meta}}
    return {"nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3"}, "widgets": copy.deepcopy(STATE),
                         "papermill": {"start_time": "2026-12-01T20:44:38", "end_time": "2026-12-01T21:07:44",
                                       "duration": 1386.2, "parameters": {"BUDGET": "cpu"}}},
            "cells": [{"cell_type": "markdown", "metadata": {}, "source": "# Title é"},
                      code("feats = extract()", [bar, {"output_type": "stream", "name": "stdout", "text": "done in 3 s\n"}],
                           papermill={"duration": 2.0, "status": "completed"}),
                      code("w = widget()", [lone], tags=["nbval-ignore-output"]),
                      code("x = 1", [], tags=["parameters"])]}


def nbval_compared(nb: dict) -> list:
    """Per cell: its type, source and the outputs' keys and values nbval compares."""
    def compared(output):
        flat = {k: v for k, v in output.items() if k not in NBVAL_SKIPS and k != "data"}
        return {**flat, **{k: v for k, v in output.get("data", {}).items() if k not in NBVAL_SKIPS}}
    return [(c["cell_type"], c["source"], [compared(o) for o in c.get("outputs", [])]) for c in nb["cells"]]


def test_cleaning_removes_timestamps_and_widget_state_and_keeps_what_nbval_compares(tmp_path, capsys):
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(stand_in(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert main(["clean", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"cleaned {path}: execution timestamps in 3 cells, widget state (0.1 kB), papermill's run times, "
        "widget views in 1 outputs")
    before, after = stand_in(), json.loads(path.read_text(encoding="utf-8"))
    assert not clean.leftovers(after)
    assert "iopub" not in path.read_text() and "widget-state" not in path.read_text()
    assert [c["metadata"] for c in after["cells"]] == [{}, {}, {"tags": ["nbval-ignore-output"]}, {"tags": ["parameters"]}]
    assert after["metadata"] == {"kernelspec": {"name": "python3"}, "papermill": {"parameters": {"BUDGET": "cpu"}}}
    assert nbval_compared(after) == nbval_compared(before)
    bar, lone = after["cells"][1]["outputs"][0], after["cells"][2]["outputs"][0]
    assert bar["data"] == {"text/plain": "extract:  50%|#####     | 1/2"}          # the fallback renders
    assert lone == before["cells"][2]["outputs"][0]                                # no fallback: kept whole
    assert [c.get("execution_count") for c in after["cells"]] == [None, 1, 1, 1]
    assert path.read_text(encoding="utf-8").endswith("}\n") and "é" in path.read_text(encoding="utf-8")


def test_a_clean_notebook_is_left_as_it_is(tmp_path, capsys):
    path = tmp_path / "nb.ipynb"
    path.write_text(clean.notebook_text(clean.clean_notebook(stand_in())), encoding="utf-8")
    before = path.stat().st_mtime_ns, path.read_bytes()
    assert main(["clean", str(tmp_path)]) == 0
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before
    assert capsys.readouterr().out == f"clean already: {path}\n0 of 1 notebooks cleaned (execution timestamps and widget state removed)\n"


def test_cleaning_writes_through_the_atomic_helper(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(clean, "write_text", lambda path, text: written.append((path, text)))
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(stand_in()), encoding="utf-8")
    clean.clean_file(path)
    assert [p for p, _ in written] == [path] and "iopub" not in written[0][1]


def test_a_path_that_is_not_there_or_not_a_notebook_says_what_to_do(tmp_path, capsys):
    assert main(["clean", str(tmp_path / "nope.ipynb")]) == 2
    assert "no notebook or folder at" in capsys.readouterr().err
    (tmp_path / "bad.ipynb").write_text("{ half")
    assert main(["clean", str(tmp_path / "bad.ipynb")]) == 2
    err = capsys.readouterr().err
    assert "bad.ipynb is not a notebook's JSON" in err and "git checkout --" in err


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_committed_notebook_is_clean(path):
    found = clean.leftovers(json.loads(path.read_text(encoding="utf-8")))
    assert not found, f"{path.name} holds {', '.join(found)}: run `python -m helpers clean` and commit it"


def test_make_refresh_cleans_the_notebooks_it_re_executes():
    recipe = re.search(r"^refresh:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    lines = recipe.splitlines()
    assert any("nbconvert" in line for line in lines)
    assert "-m helpers clean $(NOTEBOOKS)" in lines[-1], recipe
