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

and clears that cell's outputs and execution count; every other cell is copied as it is, outputs included.
This is nbgrader's convention (its `ClearSolutions` preprocessor does the same), written here in a few
lines so that the course does not pull in nbgrader's server-side dependencies (a database, a web app).
Because the markers are nbgrader's, the notebooks can move to nbgrader later (it also wants each such
cell marked as a solution cell in its cell metadata).

The edition's folder holds a marker file, MARKER; the edition is written only into a new or empty folder or
over an earlier edition (never into notebooks/, the repository's root or a folder of other files).
"""
from __future__ import annotations

from pathlib import Path

import nbformat

from ..atomic import write_text
from ..config import PATHS

BEGIN, END = "BEGIN SOLUTION", "END SOLUTION"        # nbgrader's delimiters, found anywhere in a line
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKER = ".student-edition"      # in the edition's folder: what `write_student_edition` may write over


def clear_solutions(source: str) -> str:
    """A code cell's source -> the same with each BEGIN/END SOLUTION region replaced by the indented stub."""
    out, inside = [], False
    for number, line in enumerate(source.split("\n"), 1):
        if BEGIN in line:
            if inside:
                raise ValueError(f"line {number}: BEGIN SOLUTION inside another solution region")
            indent = line[:len(line) - len(line.lstrip())]
            out += [indent + stub for stub in STUB]
            inside = True
        elif END in line:
            if not inside:
                raise ValueError(f"line {number}: END SOLUTION without a BEGIN SOLUTION before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("BEGIN SOLUTION with no END SOLUTION after it")
    return "\n".join(out)


def student_notebook(nb: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, int]:
    """An instructor notebook -> (its student edition, the number of cells whose solutions were cleared)."""
    nb = nbformat.from_dict(nb)                       # a deep copy: the instructor notebook is left as it is
    cleared = 0
    for cell in nb.cells:
        if BEGIN not in cell.source and END not in cell.source:
            continue
        if cell.cell_type != "code":
            raise ValueError(f"cell {cell.get('id')}: solution markers belong in code cells only")
        cell.source = clear_solutions(cell.source)
        cell.outputs, cell.execution_count = [], None
        cleared += 1
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
