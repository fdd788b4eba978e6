"""Command line: `python -m helpers reproduce [--seeds N] [--budget cpu|gpu] [--ablations]`, `python -m helpers summary`
and `python -m helpers student [--out DIR]`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import PATHS


def summary(executed: Path | None) -> None:
    """Print the executed notebooks and the course's headline results so far."""
    from . import data

    if executed is not None:
        print(f"executed notebooks in {executed.resolve()}:")
        for nb in sorted(executed.glob("*.ipynb")):
            print(f"  {nb.name}")
    subset = data.load_subset()     # `make course` ran `python -m helpers.data verify` already
    print(f"data: {len(subset.image_ids)} images, {len(subset.captions)} captions")
    q = data.label_quality(data.mine_labels(subset.captions), data.instance_labels(subset)).loc["ALL (micro)"]
    print(f"caption-mined labels vs instance labels (258 images): precision {q.precision:.2f}, recall {q.recall:.2f}")
    table = PATHS.results / "table.md"
    if table.is_file():
        print(f"\nresults ({table}):\n{table.read_text()}")
    else:
        print("no results yet: run `python -m helpers reproduce` (or notebook 06)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summary", help="headline results so far")
    s.add_argument("--executed", type=Path, help="folder of executed notebooks to list")
    r = sub.add_parser("reproduce", help="prepare, extract, train every model with N seeds, evaluate, write results/")
    r.add_argument("--seeds", type=int, default=None, help="seeds per model (default: 5 for decoupled and joint, 3 for the others)")
    r.add_argument("--budget", choices=["cpu", "gpu"], default="cpu")
    r.add_argument("--models", nargs="+", default=None, help="subset of the models (default: the factorial and blog)")
    r.add_argument("--ablations", action="store_true",
                   help="08's runs instead: the blog's bugs, the readers' proposals, the data-scale curve")
    st = sub.add_parser("student", help="write the student edition: exercise solutions replaced by stubs (nbgrader's markers)")
    st.add_argument("--out", type=Path, default=None, help="folder to write to (default: student/, git-ignored)")
    args = parser.parse_args(argv)
    if args.command == "student":
        from .editions import STUDENT_DIR, write_student_edition

        out = args.out or STUDENT_DIR
        written = write_student_edition(out=out)
        print(f"student edition: {len(written)} notebooks, {sum(written.values())} exercises to do -> {out}")
        return 0
    if args.command == "summary":
        summary(args.executed)
        return 0
    if args.ablations:
        from .ablations import reproduce_ablations

        print(reproduce_ablations(args.budget).read_text())
        return 0
    from .reproduce import MODEL_NAMES, reproduce

    table = reproduce(args.seeds, args.budget, tuple(args.models or MODEL_NAMES))
    print(table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
