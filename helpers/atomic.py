"""Files on disk: written atomically (a reader, or a rerun after a crash, sees the old file or the new one,
never half), and checksummed (`md5sum`).

    with atomic_path(run_dir / "best.pt") as tmp:
        torch.save(state, tmp)

Every file the course writes goes through `atomic_path`: checkpoints, feature caches, test rankings,
the data copy, the results tables (`write_text`, `write_json`, `write_csv` for text), the student edition.
`tests/test_atomic.py` scans the package's source and fails on any other write.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder (same suffix, so savers that add one do not); when the
    block ends without an error, the file is flushed to disk and moved onto `path` (os.replace, atomic
    on one file system); on an error it is deleted and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)              # mkstemp (and safetensors) create files only their owner can read
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically -> path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj, **dumps) -> Path:
    """Write `json.dumps(obj, **dumps)` and a newline to `path` atomically -> path."""
    return write_text(path, json.dumps(obj, **dumps) + "\n")


def write_csv(table, path: str | Path, **to_csv) -> Path:
    """Write a DataFrame as CSV (`table.to_csv(..., **to_csv)`) to `path` atomically -> path."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, **to_csv)
    return Path(path)


def file_digest(path: str | Path, name: str = "md5") -> str:
    """Hex digest (hashlib's `name`: md5, sha256, ...) of a file's bytes, read in chunks by `hashlib.file_digest`."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, name).hexdigest()


def md5sum(path: str | Path) -> str:
    """Hex md5 of a file."""
    return file_digest(path, "md5")
