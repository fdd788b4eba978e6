"""Build the course's website into build/site/: the committed executed notebooks in course order, a
landing page (what the course is, one line per notebook, the verdict table) and a references page.

    python website/build.py [OUT]        # what `make site` runs, with .venv-site's Python

The notebooks are rendered from their stored outputs, never executed. The sources are staged in
build/site-src/ (this folder's pages and conf.py, the notebooks, the generated landing page), Sphinx
with MyST-NB builds them, and the result is checked for scripts, styles or fonts loaded from outside
the site: the build needs no internet, and neither does a reader.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEBSITE = ROOT / "website"
NOTEBOOKS = ROOT / "notebooks"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"  # the same notebooks, in the same order, as `make test` runs
VERDICT_HEADING = "## The verdict"
PAGES = ["conf.py", "references.md"]  # copied as they are; index.md is a template


def course_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The course's notebooks in course order: 00_*.ipynb, 01_*.ipynb, ..."""
    notebooks = sorted(folder.glob(NOTEBOOK_GLOB))
    if not notebooks:
        raise FileNotFoundError(f"no notebooks matching {NOTEBOOK_GLOB} in {folder}")
    return notebooks


def read_notebook(path: Path) -> dict:
    """A notebook's JSON, as committed."""
    return json.loads(path.read_text(encoding="utf-8"))


def cell_text(cell: dict) -> str:
    """A cell's source as one string (nbformat stores it as a list of lines or as one string)."""
    source = cell.get("source", "")
    return source if isinstance(source, str) else "".join(source)


def title_and_goal(notebook: dict, path: Path) -> tuple[str, str]:
    """The first markdown cell's `# ` heading (the page's title) and its "You will be able to" line."""
    first = next((cell_text(c) for c in notebook["cells"] if c["cell_type"] == "markdown"), "")
    lines = first.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"{path.name}: its first markdown cell must start with the notebook's `# ` title")
    goal = next((line for line in lines if line.startswith("**You will be able to**")), "")
    return lines[0][2:].strip(), goal.removeprefix("**You will be able to**").strip()


class _TableParser(HTMLParser):
    """Rows of cell texts of the first <table> in some HTML (a pandas DataFrame's output)."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self._tables = 0

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._tables += 1
        elif self._tables == 1 and tag == "tr":
            self.rows.append([])
        elif self._tables == 1 and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if self._tables == 1 and tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._tables += 1  # only the first table is read

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def verdict_table(notebooks: list[Path]) -> tuple[Path, list[list[str]]]:
    """The notebook with a "## The verdict" section and the rows of the first table shown below it."""
    for path in notebooks:
        cells = read_notebook(path)["cells"]
        start = next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                      and VERDICT_HEADING in cell_text(c).splitlines()), None)
        if start is None:
            continue
        for cell in cells[start + 1:]:
            for output in cell.get("outputs", []):
                html = output.get("data", {}).get("text/html", "")
                html = html if isinstance(html, str) else "".join(html)
                if "<table" in html:
                    parser = _TableParser()
                    parser.feed(html)
                    return path, parser.rows
        raise ValueError(f"{path.name}: no table output after its '{VERDICT_HEADING}' heading; "
                         "is the notebook committed executed?")
    raise ValueError(f"no notebook has a '{VERDICT_HEADING}' section: the landing page needs its table")


def markdown_table(rows: list[list[str]]) -> str:
    """A MyST (GitHub-style) table; pandas' index column, empty in the header, is dropped."""
    if rows and rows[0] and rows[0][0] == "":
        rows = [row[1:] for row in rows]

    def escape(text: str) -> str:
        return re.sub(r"([\\|*_`\[\]<>])", r"\\\1", text)

    header, *body = rows
    lines = ["| " + " | ".join(map(escape, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(escape, row)) + " |" for row in body]
    return "\n".join(lines)


def about_the_course(readme: Path = ROOT / "README.md") -> str:
    """What the course is: the README's paragraphs between its title and its first section."""
    text = readme.read_text(encoding="utf-8").split("\n## ", 1)[0]
    return text.split("\n", 1)[1].strip()


def landing_page(notebooks: list[Path]) -> str:
    """website/index.md with the course description, the notebook list, the verdict and the toctree."""
    items, entries = [], []
    for path in notebooks:
        title, goal = title_and_goal(read_notebook(path), path)
        items.append(f"- [**{title}**](notebooks/{path.name})" + (f": you will be able to {goal}" if goal else ""))
        entries.append(f"notebooks/{path.stem}")
    source, rows = verdict_table(notebooks)
    verdict = (f"The blog's claims against what the course measures, as "
               f"[{title_and_goal(read_notebook(source), source)[0]}](notebooks/{source.name}#the-verdict) "
               "shows them (its committed, executed output: every verdict there is computed from an "
               "interval, never typed in).\n\n" + markdown_table(rows))
    page = (WEBSITE / "index.md").read_text(encoding="utf-8")
    for key, value in {"about": about_the_course(), "notebooks": "\n".join(items),
                       "verdict": verdict, "toctree": "\n".join(entries)}.items():
        page = page.replace("{{ " + key + " }}", value)
    return page


def stage(src: Path, notebooks: list[Path]) -> None:
    """Lay out Sphinx's source folder: conf.py, the pages, the generated landing page, the notebooks."""
    shutil.rmtree(src, ignore_errors=True)
    (src / "notebooks").mkdir(parents=True)
    for name in PAGES:
        shutil.copy2(WEBSITE / name, src / name)
    (src / "index.md").write_text(landing_page(notebooks), encoding="utf-8")
    for path in notebooks:
        shutil.copy2(path, src / "notebooks" / path.name)


# A resource the browser would fetch from another host: <script src>, <link href> (stylesheets, fonts,
# icons), <img>/<iframe>/<source> src, and CSS url()/@import, absolute (http:, https:) or scheme-relative.
_EXTERNAL = re.compile(r"""<(?:script|img|iframe|source|embed|audio|video)\b[^>]*?\bsrc\s*=\s*["']?(?:https?:)?//"""
                       r"""|<link\b[^>]*?\bhref\s*=\s*["']?(?:https?:)?//"""
                       r"""|url\(\s*["']?(?:https?:)?//|@import\s+["'](?:https?:)?//""", re.IGNORECASE)


def external_loads(site: Path) -> list[str]:
    """`file: snippet` for every script, style, font or image the built site would load from the web."""
    found = []
    for path in sorted(site.rglob("*")):
        if path.suffix in (".html", ".css"):
            text = path.read_text(encoding="utf-8", errors="replace")
            for match in _EXTERNAL.finditer(text):
                found.append(f"{path.relative_to(site)}: {text[match.start():match.start() + 120]}")
    return found


def build(out: Path) -> None:
    """Stage, build with Sphinx (warnings are errors), check that nothing loads from the web."""
    from sphinx.cmd.build import build_main

    start = time.perf_counter()
    notebooks = course_notebooks()
    src, doctrees = out.parent / f"{out.name}-src", out.parent / f"{out.name}-doctrees"
    stage(src, notebooks)
    for folder in (out, doctrees):  # a clean build: no page of a renamed notebook is left behind
        shutil.rmtree(folder, ignore_errors=True)
    if build_main(["-b", "html", "-q", "-W", "--keep-going", "-d", str(doctrees), str(src), str(out)]):
        sys.exit("== site: Sphinx failed (its messages are above)")
    if loads := external_loads(out):
        sys.exit("== site: these pages would load from the web, which an offline reader cannot:\n  "
                 + "\n  ".join(loads))
    print(f"== site: {len(notebooks)} notebooks built into {out}/ in {time.perf_counter() - start:.0f} s; "
          f"open {out}/index.html")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="build/site", help="output folder (default: build/site)")
    build((ROOT / parser.parse_args().out).resolve())
