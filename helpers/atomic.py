"""Files on disk: written atomically (a reader, or a rerun after a crash, sees the old file or the new one,
never half), and checksummed (`md5sum`).

    with atomic_path(run_dir / "best.pt") as tmp:
        torch.save(state, tmp)

Every file the course writes goes through `atomic_path`: checkpoints, feature caches, test rankings,
the data copy, the results tables.
"""
from __future__ import annotations

import hashlib
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


def md5sum(path: str | Path) -> str:
    """Hex md5 of a file, read in 1 MiB chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
