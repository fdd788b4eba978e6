"""The built website in a real browser (`make site-test`): Python's http.server serves build/site/ on
127.0.0.1, headless Chromium (Debian's `chromium`, driven by Playwright) loads every page, and each
page must render its title, load every figure, resolve every same-site link and fetch nothing from
outside the site. Screenshots of the landing page and of notebook 06 go to build/site-test/.

It needs the site built (`make site`) and Chromium (`sudo apt-get install chromium`, or CHROMIUM=path);
without Chromium it stops with that message, or skips where SITE_TEST_SKIP_WITHOUT_CHROMIUM=1 asks it to.
It lives outside tests/, so `make unit` (`pytest tests`) never collects it.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(os.environ.get("SITE_DIR", ROOT / "build" / "site")).resolve()
SHOTS = Path(os.environ.get("SITE_TEST_OUT", ROOT / "build" / "site-test")).resolve()
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
VIEWPORT = {"width": 1280, "height": 900}
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM or not os.access(CHROMIUM, os.X_OK):  # one clear message, not one error per test
    _message = ("Chromium not found: the website test loads every page in headless Chromium. Install it with "
                "`sudo apt-get install chromium` (Debian/Ubuntu), or set CHROMIUM=/path/to/chromium.")
    if os.environ.get("SITE_TEST_SKIP_WITHOUT_CHROMIUM") == "1":
        pytest.skip(_message, allow_module_level=True)
    pytest.fail(_message, pytrace=False)
if not (SITE / "index.html").is_file():
    pytest.fail(f"No website at {SITE}: build it first with `make site`.", pytrace=False)
# The works the references page must cite, each by a phrase of its title.
CITED = ["the blog", "VSE++", "Stacked Cross Attention for Image-Text Matching",
         "Learning Transferable Visual Models From Natural Language Supervision",
         "SimCLR",
         "Representation Learning with Contrastive Predictive Coding",
         "Top-down Neural Attention by Excitation Backprop"]


def site_pages() -> list[str]:
    """Every HTML page of the built site, relative to it (the theme's own files under _static excluded)."""
    return sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html")
                  if not p.relative_to(SITE).parts[0].startswith("_"))


def notebook_title(path: Path) -> str:
    """The first markdown cell's `# ` heading."""
    cell = next(c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "markdown")
    first = "".join(cell["source"]).splitlines()[0]
    assert first.startswith("# "), f"{path.name}: first markdown cell does not start with a `# ` title"
    return first[2:].strip()


def figure_count(path: Path) -> int:
    """How many image outputs (figures) the executed notebook holds."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return sum(1 for c in cells for o in c.get("outputs", [])
               if {"image/png", "image/jpeg", "image/svg+xml"} & set(o.get("data", {})))


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output to the failures
        pass


@pytest.fixture(scope="module")
def server():
    """Base URL of build/site/ served by http.server on 127.0.0.1 and a free port."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(SITE)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through Playwright (Playwright's own browser download is never used)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


class Visit:
    """One page loaded in the browser, with what it asked for from outside the site and what failed."""

    def __init__(self, browser, base: str, path: str):
        self.url = urllib.parse.urljoin(base, path)
        self.outside, self.failed, self.errors = [], [], []
        self.page = browser.new_page(viewport=VIEWPORT)
        self.page.route("**/*", functools.partial(self._only_this_site, base))
        self.page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.status} {r.url}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.response = self.page.goto(self.url, wait_until="load")
        # Wait for every image, lazy ones included, to finish (load or fail).
        self.page.evaluate("""() => Promise.all([...document.images].map(img => {
            img.loading = "eager";
            return img.complete ? null : new Promise(done => { img.onload = img.onerror = done; });
        }))""")

    def _only_this_site(self, base, route):
        """Requests to the local server go through; anything else is recorded and refused."""
        if route.request.url.startswith(base):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def close(self):
        self.page.close()


@pytest.fixture
def visit(browser, server):
    """visit("page.html") -> a Visit; its page is closed after the test."""
    visits = []

    def load(path: str) -> Visit:
        visits.append(Visit(browser, server, path))
        return visits[-1]

    yield load
    for v in visits:
        v.close()


_checked_links: dict[str, str] = {}  # same-site URL (with #anchor) -> "" if it resolves, else why not


def link_problem(url: str) -> str:
    """"" when a same-site URL gives HTTP 200 (and its #anchor is an id on that page), else the problem."""
    if url not in _checked_links:
        target, _, anchor = url.partition("#")
        try:
            with urllib.request.urlopen(target, timeout=10) as response:
                body = response.read().decode("utf-8", errors="replace")
                problem = "" if response.status == 200 else f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            body, problem = "", f"HTTP {error.code}"
        anchor = urllib.parse.unquote(anchor)
        if not problem and anchor and f'id="{anchor}"' not in body:
            problem = f"no element with id {anchor!r} on that page"
        _checked_links[url] = problem
    return _checked_links[url]


@pytest.mark.parametrize("path", site_pages())
def test_page(visit, server, path):
    """Title and heading rendered, figures loaded, same-site links resolve, nothing fetched from outside."""
    v = visit(path)
    assert v.response is not None and v.response.status == 200, f"{path}: HTTP {v.response and v.response.status}"

    heading = v.page.evaluate("""() => {
        // The article's heading, not the print-only copy above it (search.html has no article).
        const h1 = document.querySelector("article h1") || document.querySelector("main h1:not(.onlyprint h1)");
        if (!h1) return "";
        const copy = h1.cloneNode(true);
        copy.querySelectorAll(".headerlink").forEach(a => a.remove());
        return copy.textContent.trim();
    }""")
    assert heading, f"{path}: no <h1> heading rendered"
    assert v.page.title().startswith(heading), f"{path}: <title> {v.page.title()!r} is not the heading {heading!r}"
    notebook = next((nb for nb in NOTEBOOKS if path == f"notebooks/{nb.stem}.html"), None)
    if notebook:
        assert heading == notebook_title(notebook), f"{path}: heading {heading!r} is not the notebook's title"

    images = v.page.evaluate("""() => [...document.images].map(img =>
        ({src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0}))""")
    broken = [img["src"] for img in images if not img["ok"]]
    assert not broken, f"{path}: images that did not load: {broken}"
    if notebook:
        assert len(images) >= figure_count(notebook), \
            f"{path}: {len(images)} images shown, but the notebook holds {figure_count(notebook)} figures"

    hrefs = v.page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
    here = v.url.partition("#")[0]
    same_site = {h for h in hrefs if h.startswith(server) and h.partition("#")[0] != here}
    dead = {h: link_problem(h) for h in sorted(same_site) if link_problem(h)}
    assert not dead, f"{path}: links that do not resolve: {dead}"

    assert not v.outside, f"{path}: asked for resources outside the site: {v.outside}"
    assert not v.failed, f"{path}: requests that failed: {v.failed}"
    assert not v.errors, f"{path}: JavaScript errors: {v.errors}"


def test_every_notebook_has_a_page_in_course_order(visit):
    """The sidebar lists every committed notebook in course order, then the references; its title
    leads back to the landing page."""
    nav = visit("index.html").page.eval_on_selector_all(
        "nav.bd-links a.reference.internal", "els => els.map(a => a.getAttribute('href'))")
    expected = [f"notebooks/{nb.stem}.html" for nb in NOTEBOOKS] + ["references.html"]
    assert nav == expected, f"sidebar navigation {nav} is not the course order {expected}"
    page = visit(f"notebooks/{NOTEBOOKS[-1].stem}.html").page
    assert page.get_attribute("a.navbar-brand", "href") == "../index.html"


def test_landing_page(visit):
    """The landing page links each notebook by its title and shows the verdict table; screenshot kept."""
    v = visit("index.html")
    body = v.page.inner_text("article")
    for nb in NOTEBOOKS:
        assert v.page.locator(f"article a[href='notebooks/{nb.stem}.html']").count(), f"no link to {nb.name}"
        assert notebook_title(nb) in body, f"{nb.name}'s title is missing from the landing page"
    tables = v.page.eval_on_selector_all("article table", """tables => tables.map(t => ({
        header: [...t.querySelectorAll("thead th")].map(th => th.textContent.trim()),
        rows: t.querySelectorAll("tbody tr").length}))""")
    verdict = [t for t in tables if any("verdict" in h.lower() for h in t["header"])]
    assert verdict and verdict[0]["rows"] > 0, f"no verdict table with rows on the landing page: {tables}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    v.page.screenshot(path=SHOTS / "landing.png", full_page=True)


def test_references_page(visit):
    """The references page cites the blog and the works the course measures against."""
    body = visit("references.html").page.inner_text("article")
    missing = [work for work in CITED if work.lower() not in body.lower()]
    assert not missing, f"references page does not cite: {missing}"


def test_notebook_06_screenshot(visit):
    """Notebook 06 (evaluation: retrieval and the +8.5% claim) as a reader first sees it; screenshot kept."""
    page = next((f"notebooks/{nb.stem}.html" for nb in NOTEBOOKS if nb.name.startswith("06_")), None)
    assert page, "no notebook 06 in notebooks/"
    v = visit(page)
    assert v.page.locator("article img").count() > 0, "notebook 06 shows no figures"
    SHOTS.mkdir(parents=True, exist_ok=True)
    v.page.screenshot(path=SHOTS / f"{Path(page).stem}.png")
