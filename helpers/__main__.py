"""`python -m helpers summary [--executed DIR]`: where the executed notebooks are and the results so far."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def summary(executed: Path | None) -> None:
    """Print the executed notebooks and the course's headline measurements so far."""
    from . import data

    if executed is not None:
        print(f"executed notebooks in {executed.resolve()}:")
        for nb in sorted(executed.glob("*.ipynb")):
            print(f"  {nb.name}")
    subset = data.load_subset()
    print(f"data: {data.verify()}")
    split = {name: len(subset.split_ids(name)) for name in ("train", "val", "test")}
    print(f"split (images): {split}")
    q = data.label_quality(data.mine_labels(subset.captions), data.instance_labels(subset)).loc["ALL (micro)"]
    print(f"caption-mined labels vs instance labels (258 images): precision {q.precision:.2f}, recall {q.recall:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summary", help="headline results so far")
    s.add_argument("--executed", type=Path)
    args = parser.parse_args(argv)
    summary(args.executed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
