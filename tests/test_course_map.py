"""Notebook 00's map of the course stays in step with the notebooks: one row per notebook, in order,
each with the compute time its own header states; the Makefile and the README count 06's runs as the recipe does."""
import re
from pathlib import Path

import nbformat

from helpers.pipeline import splits
from helpers.pipeline.recipes import MODEL_NAMES, seeds_for

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


def test_the_makefile_and_readme_say_how_many_runs_06_trains():
    """05 trains every model's seed 0 (`runs.train_all`); 06 trains the seeds of `splits.RETRAIN` of the primary's
    and first secondary's models (`splits.course_ranks`, reading their other seeds from `make splits`' files) and
    every seed of `recipes.seeds_for` of the others (`runs.evaluate_all`), reusing 05's, and scores what it trains:
    the numbers the Makefile and the README quote."""
    here = {m: splits.RETRAIN if m in splits.MODELS else seeds_for(m) for m in MODEL_NAMES}
    scored = sum(len(s) for s in here.values())
    trained = scored - sum(0 in s for s in here.values())
    read = sum(len(seeds_for(m)) for m in MODEL_NAMES) - scored
    root = NOTEBOOKS[0].parents[1]
    makefile, readme = (root / "Makefile").read_text(), (root / "README.md").read_text()
    said = re.findall(r"06 trains (?:and scores )?(\d+)", makefile + readme)
    assert said and set(said) == {str(trained)}, (said, trained)
    assert f"06 trains {trained} runs and scores {scored} in one cell" in makefile
    assert f"notebook 06 trains {trained} more runs" in readme and f"each of the {scored} runs it trains" in readme
    assert f"reads the other {read} from `make splits`" in readme
