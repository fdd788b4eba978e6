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
"""
from __future__ import annotations

from pathlib import Path

import nbformat

from ..config import PATHS

BEGIN, END = "BEGIN SOLUTION", "END SOLUTION"        # nbgrader's delimiters, found anywhere in a line
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")


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


def write_student_edition(notebooks: Path | None = None, out: Path | None = None) -> dict[Path, int]:
    """Write the student edition of every notebook `NN_*.ipynb` in `notebooks` (default: the course's) to
    `out` (default: student/, git-ignored) -> {file written: number of exercise cells cleared in it}."""
    notebooks, out = Path(notebooks or PATHS.notebooks), Path(out or PATHS.student)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for path in sorted(notebooks.glob("[0-9][0-9]_*.ipynb")):
        nb, cleared = student_notebook(nbformat.read(path, as_version=nbformat.NO_CONVERT))
        nbformat.validate(nb)
        nbformat.write(nb, out / path.name)
        written[out / path.name] = cleared
    return written
