"""helpers.atomic: a file is replaced whole or not at all, and the package writes no file around it."""
import ast
from pathlib import Path

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


# ----------------------------------------------------------------------------- no file is written around it

HELPERS = Path(__file__).resolve().parents[1] / "helpers"
WRITE_METHODS = {"write_text", "write_bytes", "save", "savefig", "to_csv", "to_json", "to_parquet", "to_pickle",
                 "to_excel", "to_feather", "to_hdf", "to_markdown"}     # pandas' to_*: only with a path argument
WRITE_FUNCTIONS = {"torch.save", "np.save", "np.savez", "np.savez_compressed", "numpy.save", "numpy.savez",
                   "save_file", "safetensors.torch.save_file", "json.dump", "pickle.dump", "nbformat.write",
                   "shutil.copy", "shutil.copy2", "shutil.copyfile", "shutil.copytree", "shutil.move",
                   "os.replace", "os.rename", "urllib.request.urlretrieve", "urlretrieve"}


def _name(node) -> str:
    """`a.b.c` of a call's function, '' when it is not a plain dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _name(node.value)
        return f"{inner}.{node.attr}" if inner else f"?.{node.attr}"
    return ""


def _writing_mode(node) -> bool:
    """Is this `open` mode argument one that writes ('w', 'a', 'x', '+'), or not a literal we can read?"""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return bool(set(node.value) & set("wax+"))
    return True


def _writes(call: ast.Call) -> bool:
    name = _name(call.func)
    method = name.rsplit(".", 1)[-1]
    if name in WRITE_FUNCTIONS:
        return True
    if name in ("open", "io.open"):
        mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
        return mode is not None and _writing_mode(mode)
    if method == "open" and "." in name:        # Path.open(mode), gzip.open(path, mode); Image.open(path) reads
        modes = [a for a in call.args[:2] if isinstance(a, ast.Constant) and isinstance(a.value, str)
                 and set(a.value) <= set("rwabxt+")] + [k.value for k in call.keywords if k.arg == "mode"]
        return any(_writing_mode(m) for m in modes)
    if method.startswith("to_") and method in WRITE_METHODS:
        return bool(call.args) or any(k.arg in ("path", "path_or_buf", "excel_writer", "buf") for k in call.keywords)
    return method in WRITE_METHODS and "." in name


def direct_writes(source: str) -> list[int]:
    """Line numbers of the calls in `source` that write a file other than the temporary path of an
    enclosing `with atomic_path(...) as tmp:` block (the call must name `tmp`)."""
    found = []

    def visit(node, temps: frozenset):
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:                 # `with atomic_path(p) as tmp, open(tmp, "wb") as f:`
                visit(item.context_expr, temps)
                if (isinstance(item.context_expr, ast.Call) and isinstance(item.optional_vars, ast.Name)
                        and _name(item.context_expr.func).rsplit(".", 1)[-1] == "atomic_path"):
                    temps = temps | {item.optional_vars.id}
            for child in node.body:
                visit(child, temps)
            return
        if isinstance(node, ast.Call) and _writes(node):
            named = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            if not named & temps:
                found.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child, temps)

    visit(ast.parse(source), frozenset())
    return found


# A resumable download keeps its partial file, `<name>.part`, between runs (HTTP Range resume), which a
# temporary file that vanishes on failure cannot do; the final name appears only by os.replace, at once.
RESUMABLE = {"helpers/download.py": {"_stream", "fetch"}}


def _exempt(path: Path, source: str, line: int) -> bool:
    names = RESUMABLE.get(str(path.relative_to(HELPERS.parent)), set())
    return any(isinstance(f, ast.FunctionDef) and f.name in names and f.lineno <= line <= f.end_lineno
               for f in ast.walk(ast.parse(source)))


def test_every_file_the_package_writes_goes_through_atomic_path():
    offenders = [f"{path.relative_to(HELPERS.parent)}:{line}: {path.read_text().splitlines()[line - 1].strip()}"
                 for path in sorted(HELPERS.rglob("*.py")) if path.name != "atomic.py" or path.parent != HELPERS
                 for line in direct_writes(path.read_text()) if not _exempt(path, path.read_text(), line)]
    assert not offenders, ("these lines write a file directly; write through `helpers.atomic` (atomic_path, "
                           "write_text, write_json, write_csv) instead:\n" + "\n".join(offenders))


@pytest.mark.parametrize("line", [
    'open(path, "w").write(text)', 'open(path, mode="ab")', 'open(path, "ab" if offset else "wb")',
    'path.open("w")', 'gzip.open(path, "wt")', 'path.write_text(text)', 'path.write_bytes(data)',
    'df.to_csv(path, index=False)', 'df.to_json(path, orient="records")', 'torch.save(state, path)',
    'np.savez(path, a=a)', 'np.save(path, a)', 'json.dump(obj, f)', 'save_file(tensors, path)',
    'img.save(path, format="JPEG")', 'nbformat.write(nb, path)', 'shutil.copyfile(a, b)', 'os.replace(a, b)',
    'with atomic_path(path) as tmp:\n    torch.save(state, path)',          # inside the block, but not to tmp
    'with atomic_path(path) as tmp:\n    pass\ntorch.save(state, tmp)',      # to tmp, after the block
])
def test_the_scan_finds_each_kind_of_direct_write(line):
    assert direct_writes(line)


@pytest.mark.parametrize("line", [
    'open(path)', 'open(path, "rb")', 'Image.open(path)', 'path.read_text()', 'df.to_csv(index=False)',
    'df.to_json(orient="records")', 'json.dumps(obj)', 'np.load(path)', 'text.replace("a", "b")',
    'df.rename(columns={"id": "caption_id"})',
    'with atomic_path(path) as tmp:\n    torch.save(state, tmp)',
    'with atomic_path(path) as tmp:\n    df.to_csv(tmp, index=False)',
    'with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:\n    f.write(b"")',
])
def test_the_scan_lets_reads_and_atomic_writes_pass(line):
    assert not direct_writes(line)
