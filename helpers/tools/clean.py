"""Committed notebooks without what changes at every run: `python -m helpers clean [PATH ...]` (which
`make refresh` runs after re-executing the notebooks) removes each cell's execution timestamps (metadata
"execution", and papermill's per-cell timings), the notebook's widget state (metadata "widgets", and
papermill's start, end and duration) and the widget views of outputs that have another representation.

Nothing nbval compares changes: cell sources, outputs (their text, data and text/plain fallbacks), execution
counts and tags stay as they are. nbval skips the widget view (its model id is random); an output whose only
representation is a widget view is kept whole, since dropping the view would leave it blank. Files are
written back in nbformat's layout (one-space indent, UTF-8), atomically.
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

from ..atomic import write_text
from ..config import PATHS

CELL_KEYS = ("execution", "papermill")              # cell metadata: timestamps, papermill's timings and status
NOTEBOOK_KEYS = ("widgets",)                        # notebook metadata: the widgets' saved state
PAPERMILL_TIMES = ("start_time", "end_time", "duration")   # in the notebook's metadata["papermill"]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def leftovers(nb: dict) -> list[str]:
    """A notebook's JSON -> what `clean_notebook` would remove from it, in words ([] when it is clean)."""
    found = []
    cells = [c for c in nb.get("cells", []) if any(k in c.get("metadata", {}) for k in CELL_KEYS)]
    if cells:
        found.append(f"execution timestamps in {len(cells)} cells")
    meta = nb.get("metadata", {})
    state = [meta[k] for k in NOTEBOOK_KEYS if k in meta]
    if state:
        found.append(f"widget state ({len(json.dumps(state)) / 1000:.1f} kB)")
    if any(k in meta.get("papermill", {}) for k in PAPERMILL_TIMES):
        found.append("papermill's run times")
    views = [o for c in nb.get("cells", []) for o in c.get("outputs", []) if _has_fallback_view(o)]
    if views:
        found.append(f"widget views in {len(views)} outputs")
    return found


def clean_notebook(nb: dict) -> dict:
    """A notebook's JSON -> a copy without `leftovers`: sources and outputs untouched but for widget views
    that have another representation."""
    nb = copy.deepcopy(nb)
    for key in NOTEBOOK_KEYS:
        nb.get("metadata", {}).pop(key, None)
    for key in PAPERMILL_TIMES:
        nb.get("metadata", {}).get("papermill", {}).pop(key, None)
    for cell in nb.get("cells", []):
        for key in CELL_KEYS:
            cell.get("metadata", {}).pop(key, None)
        for output in cell.get("outputs", []):
            if _has_fallback_view(output):
                del output["data"][WIDGET_VIEW]
    return nb


def _has_fallback_view(output: dict) -> bool:
    data = output.get("data", {})
    return WIDGET_VIEW in data and len(data) > 1


def notebook_text(nb: dict) -> str:
    """The file's text as nbformat (and nbconvert) write it: one-space indent, UTF-8, a final newline."""
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def read_notebook(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a notebook's JSON ({e}); restore it with `git checkout -- {path}`") from e


def clean_file(path: str | Path) -> list[str]:
    """Clean one notebook in place (atomically) -> what was removed ([] and no write when it was clean)."""
    path = Path(path)
    nb = read_notebook(path)
    found = leftovers(nb)
    if found:
        write_text(path, notebook_text(clean_notebook(nb)))
    return found


def notebook_paths(paths: list[str | Path]) -> list[Path]:
    """Files and folders (their *.ipynb) -> notebook files; none given: the course's notebooks/NN_*.ipynb."""
    if not paths:
        return sorted(PATHS.notebooks.glob("[0-9][0-9]_*.ipynb"))
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(p.glob("*.ipynb"))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no notebook or folder at {p}; give .ipynb files or folders "
                                    "(none: the course's notebooks/)")
    return out


def main(paths: list[str | Path]) -> int:
    """`python -m helpers clean [PATH ...]`: clean each notebook and say what was removed."""
    try:
        files = notebook_paths(paths)
        cleaned = 0
        for path in files:
            found = clean_file(path)
            cleaned += bool(found)
            print(f"cleaned {path}: {', '.join(found)}" if found else f"clean already: {path}")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{cleaned} of {len(files)} notebooks cleaned (execution timestamps and widget state removed)")
    return 0
