"""The course's pins against Binder's base environment (repo2docker's Python 3.11 lock, recorded in
tests/data/binder-base-py3.11.txt with the Requires-Dist of its Jupyter packages): Binder installs our pip
list over that environment, and pip never re-checks the base packages it does not install, so every one of
them must still be satisfied afterwards, and our pins must not need base packages that pip would move to an
unpinned version."""
from __future__ import annotations

from pathlib import Path

import pytest
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

from test_environment import ENV_YML, POST_BUILD, REQUIREMENTS, canonical, parse_pins

# pip's parser loads its vendored pkg_resources, which warns about itself; nothing to act on here.
pytestmark = pytest.mark.filterwarnings("ignore:pkg_resources is deprecated:DeprecationWarning")

BASE_FILE = Path(__file__).resolve().parent / "data" / "binder-base-py3.11.txt"


def read_base(path: Path = BASE_FILE) -> tuple[dict[str, str], dict[tuple[str, str], list[Requirement]]]:
    """The recorded file -> ({name: version} of the lock, {(name, version): [requirements]})."""
    base, requires, section = {}, {}, None
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "base":
            name, version = line.split("==")
            base[canonicalize_name(name)] = version
        else:
            package, _, reqs = line.partition(" | ")
            name, version = package.split("==")
            requires[(canonicalize_name(name), version)] = [Requirement(r) for r in reqs.split("; ") if r]
    return base, requires


def conflicts(base: dict[str, str], requires: dict, pins: dict[str, str]) -> list[str]:
    """What breaks when `pins` go over `base`: a requirement of an installed package that its version misses."""
    final = base | pins
    problems = []
    for (name, version), reqs in sorted(requires.items()):
        if final.get(name) != version:
            continue                                      # not the version that ends up installed
        for req in reqs:
            dep = canonicalize_name(req.name)
            if dep in final and not req.specifier.contains(final[dep], prereleases=True):
                who = "the course pins" if dep in pins else "Binder's base has"
                owner = "the course's pin" if name in pins else "Binder's base"
                problems.append(f"{name}=={version} ({owner}) requires {req}, but {who} {dep}=={final[dep]}")
    return problems


def test_recorded_base_is_repo2dockers_python_3_11_lock():
    text = BASE_FILE.read_text()
    assert "jupyterhub/repo2docker" in text and "environment.py-3.11-linux-64.lock" in text
    base, requires = read_base()
    assert base["python"].startswith("3.11.") and base["notebook"] == "7.4.7" and base["jupyterlab"] == "4.4.9"
    assert "jupyterlab<4.5,>=4.4.9" in map(str, requires[("notebook", "7.4.7")])


def test_course_pins_fit_binders_base_environment():
    base, requires = read_base()
    pins = canonical(parse_pins(REQUIREMENTS))
    problems = conflicts(base, requires, pins)
    assert not problems, ("requirements.txt (and environment.yml) against Binder's base, pip check would fail:\n  "
                          + "\n  ".join(problems) + "\npin the package that must move (e.g. notebook, "
                          "jupyter_server) in requirements.txt and environment.yml, and record its Requires-Dist "
                          f"in {BASE_FILE.name}")


def test_every_moved_jupyter_package_has_its_requirements_recorded():
    """A pin of a recorded Jupyter package at a new version is checked only once its metadata is recorded."""
    base, requires = read_base()
    pins = canonical(parse_pins(REQUIREMENTS))
    recorded = {name for name, _ in requires}
    missing = sorted(f"{n}=={v}" for n, v in pins.items() if n in recorded and (n, v) not in requires)
    assert not missing, (f"add each one's Requires-Dist (from its wheel's METADATA) to {BASE_FILE.name}: {missing}")


def test_the_check_catches_the_conflict_binder_had():
    """The old pins (jupyterlab 4.6.6 over the base's notebook 7.4.7) are reported, naming both sides."""
    base, requires = read_base()
    problems = conflicts(base, requires, {"jupyterlab": "4.6.6"})
    assert any(p.startswith("notebook==7.4.7 (Binder's base) requires jupyterlab<4.5,>=4.4.9, but the course "
                            "pins jupyterlab==4.6.6") for p in problems), problems


def test_environment_yml_uses_conda_forge_without_defaults():
    assert "  - conda-forge\n  - nodefaults\n" in ENV_YML.read_text()


def test_post_build_prepares_the_data_and_says_how_long():
    """Without the data every Binder session's notebook 01 stops on SubsetError."""
    commands = [line.strip() for line in POST_BUILD.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    prepare = [i for i, c in enumerate(commands) if c == "python -m helpers.data prepare"]
    install = [i for i, c in enumerate(commands) if c.startswith("pip install --no-deps -e .")]
    assert prepare and install and prepare[0] > install[0], "postBuild: `python -m helpers.data prepare` after the install"
    assert any(c.startswith("echo") and "720 MB" in c and "min" in c for c in commands[:prepare[0]])
