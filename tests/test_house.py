"""The house holds: the package map in `helpers/__init__.py` lists every module, and imports run one way
(learner modules -> nothing of the speed code, the pipeline or the tools; the speed code -> learner modules only;
the pipeline -> learner modules and the speed code)."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import helpers

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "helpers"
FOLDERS = ("fast", "pipeline", "tools")          # everything else at the top is a learner's module


def modules() -> list[str]:
    """Every module of the package as its dotted name below helpers ('models', 'fast.scoring', ...)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        if rel.name != "__init__":
            names.append(".".join(rel.parts))
    return names


def imports_of(name: str) -> set[str]:
    """The helpers modules `name` imports (dotted below helpers), read from its source."""
    path = PACKAGE / (name.replace(".", "/") + ".py")
    package = name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith("helpers"):
                    continue
                base = (node.module or "").split(".")[1:]
            else:
                base = package[:len(package) - node.level + 1] + ((node.module or "").split(".") if node.module else [])
            for alias in node.names:
                dotted = ".".join(base + [alias.name])
                out.add(dotted if dotted in modules() or dotted in FOLDERS else ".".join(base))
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("helpers.")}
    return {m for m in out if m}


def layer(name: str) -> str:
    top = name.split(".")[0]
    return top if top in FOLDERS else "main" if top == "__main__" else "learner"


def test_the_package_map_lists_every_module_once():
    doc = helpers.__doc__
    listed = re.findall(r"^    ([a-z_]+(?:\.[a-z_]+)?/?)\s{2,}", doc, re.M)
    want = [m for m in modules() if not m.startswith("exercises.")] + ["exercises/"]
    assert sorted(listed) == sorted(want), (sorted(set(want) - set(listed)), sorted(set(listed) - set(want)))


@pytest.mark.parametrize("name", [m for m in modules() if layer(m) != "main"])
def test_imports_run_one_way(name):
    allowed = {"learner": {"learner"}, "fast": {"learner", "fast"}, "pipeline": {"learner", "fast", "pipeline"},
               "tools": {"learner", "fast", "pipeline", "tools"}}[layer(name)]
    wrong = sorted(m for m in imports_of(name) if layer(m) not in allowed)
    assert not wrong, f"{name} ({layer(name)}) imports {wrong}"


def test_no_circles_and_no_imports_hidden_in_functions():
    tool = ROOT.parent / "shared" / "tools" / "import_map.py"
    if not tool.is_file():
        pytest.skip(f"{tool} is not beside this checkout (it is in the course's CI and workshops)")
    out = subprocess.run([sys.executable, str(tool), str(PACKAGE), "--strict"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
    floors = int(re.search(r"(\d+) floors", out.stdout).group(1))
    assert floors <= 7, out.stdout.splitlines()[0]
