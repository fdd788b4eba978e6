"""Notebook 00's map of the course stays in step with the notebooks: one row per notebook, in order,
each with the compute time its own header states."""
import re
from pathlib import Path

import nbformat

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _map_rows() -> list[list[str]]:
    cell = next(c for c in nbformat.read(NOTEBOOKS[0], 4).cells if c.source.startswith("## The map"))
    rows = [line.strip("|").split("|") for line in cell.source.splitlines() if line.startswith("| 0")]
    return [[part.strip() for part in row] for row in rows]


def _header_time(path: Path) -> str:
    """'about 1 min' from '**Time:** about 1 min on a 2-core machine ...'."""
    header = nbformat.read(path, 4).cells[0].source
    return re.search(r"\*\*Time:\*\* (about [\d.]+ (?:s|min))", header).group(1)


def test_the_map_lists_every_notebook_in_order():
    assert [row[0][:2] for row in _map_rows()] == [p.name[:2] for p in NOTEBOOKS]


def test_each_row_quotes_its_notebooks_header_time():
    for row, path in zip(_map_rows(), NOTEBOOKS):
        assert row[2].startswith(_header_time(path)), (path.name, row[2], _header_time(path))
