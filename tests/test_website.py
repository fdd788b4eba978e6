"""website/build.py's own logic, without Sphinx or a browser (those are `make site` and `make site-test`):
which notebooks, in which order, the landing page's lines and verdict table, the offline check, the pins."""
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("website_build", ROOT / "website" / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def test_notebooks_in_course_order(tmp_path):
    for name in ["10_later.ipynb", "02_b.ipynb", "00_a.ipynb", "scratch.ipynb", "1_short.ipynb"]:
        (tmp_path / name).write_text("{}")
    assert [p.name for p in build.course_notebooks(tmp_path)] == ["00_a.ipynb", "02_b.ipynb", "10_later.ipynb"]
    with pytest.raises(FileNotFoundError, match="no notebooks matching"):
        build.course_notebooks(tmp_path / "empty")


def test_title_and_goal():
    notebook = {"cells": [{"cell_type": "code", "source": "x = 1"},
                          {"cell_type": "markdown", "source": ["# 09 · Later\n", "\n",
                                                               "**You will be able to** do one thing.\n"]}]}
    assert build.title_and_goal(notebook, Path("09_later.ipynb")) == ("09 · Later", "do one thing.")
    untitled = {"cells": [{"cell_type": "markdown", "source": "## Not a title"}]}
    with pytest.raises(ValueError, match="09_later.ipynb: its first markdown cell"):
        build.title_and_goal(untitled, Path("09_later.ipynb"))


def test_markdown_table_drops_the_empty_index_and_escapes():
    rows = [["", "claim", "verdict"], ["0", "a | b", "*not* supported"]]
    assert build.markdown_table(rows) == ("| claim | verdict |\n|---|---|\n| a \\| b | \\*not\\* supported |")


def test_the_verdict_table_comes_from_the_committed_notebook():
    source, rows = build.verdict_table(build.course_notebooks())
    assert source.name.startswith("07_")
    header, *body = rows
    assert "verdict" in header and body, rows
    assert {len(row) for row in rows} == {len(header)}
    assert all(row[-1] for row in body), "every claim has a verdict"


def test_landing_page_lists_every_notebook_and_the_verdict():
    page = build.landing_page(build.course_notebooks())
    for path in build.course_notebooks():
        title, _ = build.title_and_goal(build.read_notebook(path), path)
        assert f"[**{title}**](notebooks/{path.name})" in page
        assert f"\nnotebooks/{path.stem}\n" in page  # in the toctree, hence the navigation
    assert "| verdict |" in page and "{{" not in page


def test_external_loads_finds_what_a_browser_would_fetch(tmp_path):
    (tmp_path / "page.html").write_text(
        '<script src="https://cdn.example.org/a.js"></script>\n'
        '<link rel="stylesheet" href="//fonts.example.org/css">\n'
        '<img src="http://example.org/figure.png">\n'
        '<a href="https://arxiv.org/abs/1707.05612">a citation</a>\n'           # a link: fine
        '<script src="_static/local.js"></script><img src="_images/f.png">\n'    # local: fine
        '<pre>http://farm5.staticflickr.com/4031/x.jpg</pre>\n')                # text: fine
    (tmp_path / "style.css").write_text(
        "@import 'https://fonts.example.org/x.css';\n"
        "a{background:url(\"data:image/svg+xml;charset=utf-8,%3Csvg xmlns='http://www.w3.org/2000/svg'\")}")
    found = build.external_loads(tmp_path)
    assert len(found) == 4, found
    assert [f.split(":")[0] for f in found] == ["page.html"] * 3 + ["style.css"]


def test_site_requirements_are_plain_pins():
    lines = [line for line in (ROOT / "requirements-site.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][0-9A-Za-z.]*", line) for line in lines), lines
    names = {line.split("==")[0].lower() for line in lines}
    assert {"sphinx", "myst-nb", "sphinx-book-theme", "playwright", "pytest"} <= names
