"""The notebook runner of `make course` (helpers.tools.run_notebooks), the one budget switch and the one
per-cell limit, on tiny stand-in notebooks in tmp_path (a kernel starts for each: a few seconds)."""
import re
import subprocess
from pathlib import Path

import nbformat
import pytest

from helpers import config
from helpers.pipeline import recipes
from helpers.tools import run_notebooks

ROOT = Path(__file__).resolve().parent.parent
COURSE = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def stand_in(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [nbformat.v4.new_markdown_cell("# stand-in")] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


@pytest.fixture
def kernel_env(monkeypatch):
    """The kernel imports this checkout's helpers (it runs in the notebook's folder)."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("COURSE_BUDGET", raising=False)


def test_failing_cell_leaves_partly_executed_notebook_and_plain_message(tmp_path, kernel_env, capsys):
    nb = stand_in(tmp_path / "02_bad.ipynb", 'print("first cell ran")',
                  'def f():\n    raise ValueError("deliberate failure")\nf()', 'print("never")')
    out = tmp_path / "out"
    assert run_notebooks.main(["--out", str(out), str(nb)]) == 1
    said = capsys.readouterr().out
    ran = nbformat.read(out / nb.name, 4).cells
    assert ran[1].outputs[0].text == "first cell ran\n"
    assert [(o.output_type, o.ename, o.evalue) for o in ran[2].outputs] == [("error", "ValueError", "deliberate failure")]
    assert ran[3].outputs == [] and ran[3].execution_count is None
    assert f"FAILED: {nb}, cell 3 (In [2]): def f():" in said
    assert "error: ValueError: deliberate failure" in said
    assert f"The partly executed notebook, with the error in that cell: {out / nb.name}" in said
    assert "\x1b" not in said


def test_progress_lines_show_notebook_cell_bar_output_and_heartbeat(tmp_path, kernel_env, capsys):
    nb = stand_in(tmp_path / "01_ok.ipynb", 'print("hello")',
                  "# a slow cell\nimport time\ntime.sleep(2.6)\nprint('slow cell done')")
    out = tmp_path / "out"
    assert run_notebooks.main(["--out", str(out), "--heartbeat", "1", str(nb)]) == 0
    said = capsys.readouterr().out
    assert f"== {nb}: 2 code cells, budget 'cpu'" in said
    assert "[--------------------]  0/2 code cells" in said and "cell 2: print(\"hello\")" in said
    assert "[##########----------]  1/2 code cells" in said and "cell 3: import time" in said
    assert "   | hello\n" in said and "   | slow cell done\n" in said
    assert re.search(r"   \.\.\. cell 3 still running: 0m0[12]s", said)
    assert "== done in" in said and (out / nb.name).is_file()


def test_budget_switch_reaches_stand_in_notebooks_through_make(tmp_path, kernel_env):
    """`make course BUDGET=gpu` (data step skipped with -o; a stub python that runs the runner and logs the
    summary call) runs every notebook with COURSE_BUDGET=gpu, which `helpers.config.budget()` reads (tested below)."""
    nbs = [stand_in(tmp_path / f"0{i}_nb.ipynb", 'import os\nprint("BUDGET", os.environ["COURSE_BUDGET"])')
           for i in (5, 6)]
    out, log, stub = tmp_path / "out", tmp_path / "calls.log", tmp_path / "python"
    stub.write_text(f'#!/bin/sh\necho "$COURSE_BUDGET $*" >> {log}\n'
                    f'[ "$2" = helpers ] && [ "$3" = summary ] && exit 0\nexec {ROOT / ".venv/bin/python"} "$@"\n')
    stub.chmod(0o755)
    done = subprocess.run(["make", "-s", "-o", "data", "course", "BUDGET=gpu", f"PY={stub}", f"RUN_DIR={out}",
                           f"NOTEBOOKS={' '.join(map(str, nbs))}"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for nb in nbs:
        assert nbformat.read(out / nb.name, 4).cells[1].outputs[0].text == "BUDGET gpu\n"
    assert log.read_text().splitlines() == [
        f"gpu -m helpers.tools.run_notebooks --out {out} --timeout {run_notebooks.CELL_TIMEOUT} {nbs[0]} {nbs[1]}",
        f"gpu -m helpers summary --executed {out}"]
    assert "[##########----------]  1/2 code cells" not in done.stdout      # one code cell each
    assert f"== {nbs[1]}: 1 code cells, budget 'gpu'" in done.stdout


def test_every_course_notebook_with_a_budget_reads_the_one_switch():
    reading = {}
    for path in COURSE:
        sources = [c.source for c in nbformat.read(path, 4).cells if c.cell_type == "code"]
        assigned = [s for s in sources if re.search(r"^BUDGET\s*=", s, re.M)]
        if assigned or any("BUDGET" in s for s in sources):
            reading[path.name] = assigned
    assert sorted(reading) == ["05_joint_training.ipynb", "06_evaluation.ipynb",
                               "07_what_the_features_keep.ipynb", "08_what_matters.ipynb"]
    for name, assigned in reading.items():
        assert len(assigned) == 1 and re.search(r"^BUDGET = config\.budget\(\)", assigned[0], re.M), name


def test_budget_reads_course_budget_and_names_a_bad_one(monkeypatch):
    monkeypatch.delenv("COURSE_BUDGET", raising=False)
    assert config.budget() == "cpu"
    monkeypatch.setenv("COURSE_BUDGET", "gpu")
    assert config.budget() == "gpu"
    monkeypatch.setenv("COURSE_BUDGET", "tpu")
    with pytest.raises(ValueError, match=r"COURSE_BUDGET='tpu' is not a budget; choose one of \['cpu', 'gpu'\]"):
        config.budget()
    assert run_notebooks.main(["nothing.ipynb"]) == 2
    assert set(config.BUDGET_NAMES) == set(recipes.BUDGETS)


def test_one_cell_limit_for_course_and_test():
    makefile = (ROOT / "Makefile").read_text()
    assert re.findall(r"^CELL_TIMEOUT := (\d+)$", makefile, re.M) == [str(run_notebooks.CELL_TIMEOUT)]
    assert "--nbval-cell-timeout=$(CELL_TIMEOUT)" in makefile
    assert "--timeout $(CELL_TIMEOUT)" in makefile
    assert "--ExecutePreprocessor.timeout=$(CELL_TIMEOUT)" in makefile
    assert not re.search(r"timeout[= ]\d", makefile), "a per-cell limit other than CELL_TIMEOUT"
    assert run_notebooks.CELL_TIMEOUT >= 2 * 1400      # the slowest cell measured, with a margin
