"""helpers.atomic: a file is replaced whole or not at all."""
import numpy as np
import pytest

from helpers.atomic import atomic_path


def test_the_new_file_replaces_the_old_one_whole_and_no_temporary_file_stays(tmp_path):
    path = tmp_path / "sub" / "ranks.npz"
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.suffix == ".npz" and tmp != path
        np.savez(tmp, a=np.arange(3))                 # savez adds ".npz" unless the name ends with it
    assert np.load(path)["a"].tolist() == [0, 1, 2]
    assert [p.name for p in path.parent.iterdir()] == ["ranks.npz"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_an_error_leaves_the_old_file_and_removes_the_temporary_one(tmp_path):
    path = tmp_path / "table.md"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.md"]
