"""The two editions of the course: instructor (the committed notebooks) and student (`make student`).

The committed notebooks are the instructor edition: every exercise is solved between nbgrader's markers

    def masked_mean(tokens, mask):
        \"\"\"(B, T, D) tokens, (B, T) bool mask -> (B, D) ...\"\"\"
        ### BEGIN SOLUTION
        m = mask.unsqueeze(-1).float()
        return (tokens * m).sum(1) / m.sum(1)
        ### END SOLUTION

and executed, so nbval tests the solutions with the rest. The student edition replaces each marked region
with nbgrader's stub, indented like the BEGIN line,

        # YOUR CODE HERE
        raise NotImplementedError()

and clears that cell's outputs and execution count. A predict or change cell, whose region only sets the
answer (`prediction = 49`, at the cell's top level), gets `prediction = ...` instead, the variable name kept:
the check then says "not attempted". This is nbgrader's convention (its `ClearSolutions` preprocessor does
the same), written here in a few lines so that the course does not pull in nbgrader's server-side
dependencies (a database, a web app). Because the markers are nbgrader's, the notebooks can move to nbgrader
later (it also wants each such cell marked as a solution cell in its cell metadata).

The student edition also drops what would give an answer away before the learner has tried:
- every cell that calls `exercises.<name>.check(` loses its stored outputs (its "✓ Correct: ..." verdict);
- a cell tagged `reveals:<name>` in its metadata (a plain Jupyter tag, which nbval ignores) shows the answer
  of exercise <name>: the reference's source, a printed value the prediction asks for, a table the check
  reads. A tagged code cell loses its outputs. A tagged markdown cell, or a code cell that only calls
  `show_source(...)`, placed before the exercise's check cell moves to right after it; a tagged markdown
  cell after it is collapsed (`metadata.jupyter.source_hidden`, which JupyterLab and Notebook 7 honour).
  The learner sees each again by running (or expanding) it after the exercise.
Every other cell is copied as it is, outputs included; the instructor notebooks are never changed.

The edition's folder holds a marker file, MARKER; the edition is written only into a new or empty folder or
over an earlier edition (never into notebooks/, the repository's root or a folder of other files).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat

from ..atomic import write_text
from ..config import PATHS

BEGIN, END = "BEGIN SOLUTION", "END SOLUTION"        # nbgrader's delimiters, found anywhere in a line
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKER = ".student-edition"      # in the edition's folder: what `write_student_edition` may write over
REVEALS = "reveals:"             # a cell tag `reveals:<exercise>`: this cell gives that exercise's answer away
CHECK = re.compile(r"^exercises\.(\w+)\.check\(", re.M)     # the cell that checks an exercise


def answer_names(region: list[str]) -> list[str] | None:
    """The lines of a solution region -> the variables it sets when it only sets answers at the top level
    (`prediction = 49`: a predict or change exercise), else None (code to write)."""
    if any(line[:1].isspace() for line in region if line.strip()):
        return None
    try:
        body = ast.parse("\n".join(region)).body
    except SyntaxError:
        return None
    if not body or not all(isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
                           for s in body):
        return None
    return [s.targets[0].id for s in body]


def stub(region: list[str], indent: str) -> list[str]:
    """The stub that replaces a solution region: `name = ...` per answer, else nbgrader's two lines."""
    names = answer_names(region)
    return [f"{indent}{name} = ..." for name in names] if names else [indent + line for line in STUB]


def clear_solutions(source: str) -> str:
    """A code cell's source -> the same with each BEGIN/END SOLUTION region replaced by its indented stub."""
    out, region, indent = [], None, ""
    for number, line in enumerate(source.split("\n"), 1):
        if BEGIN in line:
            if region is not None:
                raise ValueError(f"line {number}: BEGIN SOLUTION inside another solution region")
            indent, region = line[:len(line) - len(line.lstrip())], []
        elif END in line:
            if region is None:
                raise ValueError(f"line {number}: END SOLUTION without a BEGIN SOLUTION before it")
            out += stub(region, indent)
            region = None
        elif region is not None:
            region.append(line)
        else:
            out.append(line)
    if region is not None:
        raise ValueError("BEGIN SOLUTION with no END SOLUTION after it")
    return "\n".join(out)


def revealed(cell) -> list[str]:
    """The exercises whose answer a cell gives away, from its `reveals:<name>` tags."""
    return [tag[len(REVEALS):] for tag in cell.get("metadata", {}).get("tags", []) if tag.startswith(REVEALS)]


def only_shows_source(cell) -> bool:
    """True for a code cell whose every statement calls `show_source(...)` (possibly in a `for` loop)."""
    try:
        body = ast.parse(cell.source).body
    except SyntaxError:
        return False

    def shows(stmt) -> bool:
        if isinstance(stmt, ast.For):
            return all(shows(s) for s in stmt.body)
        return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
                and getattr(stmt.value.func, "id", None) == "show_source")

    return cell.cell_type == "code" and bool(body) and all(shows(s) for s in body)


def clear_outputs(cell) -> None:
    if cell.cell_type == "code":
        cell.outputs, cell.execution_count = [], None


def hide_revealing_cells(cells: list) -> list:
    """Cells in order -> the student's order: each tagged markdown or show-only cell placed before its
    exercise's check cell moves to right after it (after the last such exercise, with several tags), in
    their order; tagged cells lose their outputs, and tagged markdown left after its check is collapsed."""
    checked = {name: i for i, cell in enumerate(cells) if cell.cell_type == "code" for name in CHECK.findall(cell.source)}
    after = {}                                            # check cell index -> cells moved to right after it
    kept = []
    for i, cell in enumerate(cells):
        names = revealed(cell)
        unknown = [n for n in names if n not in checked]
        if unknown:
            raise ValueError(f"cell {cell.get('id')}: tagged {REVEALS}{unknown[0]}, but no cell of this notebook "
                             f"checks that exercise (`exercises.{unknown[0]}.check(`); fix or remove the tag")
        if not names:
            kept.append((i, cell))
            continue
        clear_outputs(cell)
        last = max(checked[n] for n in names)
        if last > i and (cell.cell_type == "markdown" or only_shows_source(cell)):
            after.setdefault(last, []).append(cell)
            continue
        if cell.cell_type == "markdown":
            cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
        kept.append((i, cell))
    return [c for i, cell in kept for c in [cell, *after.get(i, [])]]


def student_notebook(nb: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, int]:
    """An instructor notebook -> (its student edition, the number of cells whose solutions were cleared)."""
    nb = nbformat.from_dict(nb)                       # a deep copy: the instructor notebook is left as it is
    cleared = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and CHECK.search(cell.source):
            clear_outputs(cell)                           # the check's stored verdict
        if BEGIN not in cell.source and END not in cell.source:
            continue
        if cell.cell_type != "code":
            raise ValueError(f"cell {cell.get('id')}: solution markers belong in code cells only")
        cell.source = clear_solutions(cell.source)
        clear_outputs(cell)
        cleared += 1
    nb.cells = hide_revealing_cells(nb.cells)
    return nb, cleared


def check_edition_folder(out: Path, notebooks: Path) -> None:
    """ValueError unless `out` may receive the student edition: not the notebooks' folder, the repository's
    root or a file, and either missing, empty or an earlier edition (it holds MARKER)."""
    out = Path(out).resolve()
    if out in (Path(notebooks).resolve(), PATHS.notebooks.resolve(), PATHS.root.resolve()):
        raise ValueError(f"--out {out} is the course's notebooks or repository folder: the student edition "
                         f"would overwrite the instructor notebooks; pass a folder of its own, e.g. {PATHS.student}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a folder for the student edition")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ValueError(f"--out {out} already holds files and is not an earlier student edition (no {MARKER} "
                         f"in it); pass a new or empty folder, or move those files away first")


def write_student_edition(notebooks: Path | None = None, out: Path | None = None) -> dict[Path, int]:
    """Write the student edition of every notebook `NN_*.ipynb` in `notebooks` (default: the course's) to
    `out` (default: student/, git-ignored) -> {file written: number of exercise cells cleared in it}."""
    notebooks, out = Path(notebooks or PATHS.notebooks), Path(out or PATHS.student)
    check_edition_folder(out, notebooks)
    write_text(out / MARKER, "The student edition of the course, written by `python -m helpers student`.\n")
    written = {}
    for path in sorted(notebooks.glob("[0-9][0-9]_*.ipynb")):
        nb, cleared = student_notebook(nbformat.read(path, as_version=nbformat.NO_CONVERT))
        nbformat.validate(nb)
        text = nbformat.writes(nb)
        write_text(out / path.name, text if text.endswith("\n") else text + "\n")   # as nbformat.write ends it
        written[out / path.name] = cleared
    return written
