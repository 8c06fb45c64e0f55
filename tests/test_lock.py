"""The installed environment is exactly requirements.lock, and the lock satisfies pyproject.toml.

A warm machine can hide a drifting lock (a package installed by hand, a version pip upgraded): these
fail with one line per package naming it, so a fresh install and this machine cannot differ silently.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.fast  # the unit tier: make test-fast

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
# what a virtual environment holds besides the lock: its seed installer and tamp itself (editable)
NOT_LOCKED = {"pip", "tamp"}


def parse_lock(text: str, environment: dict[str, str] | None = None) -> dict[str, str]:
    """{canonical name: version} of the lock's entries whose markers hold in `environment`."""
    env = environment or default_environment()
    pins: dict[str, str] = {}
    logical = re.sub(r"\\\n", " ", text)  # join continuation lines (hashes)
    for line in logical.splitlines():
        line = line.split(" --hash=")[0].split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        (spec,) = req.specifier
        assert spec.operator == "==", f"{LOCK.name}: '{line}' is not an exact pin"
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in md.distributions()}


def drift(lock: dict[str, str], have: dict[str, str]) -> list[str]:
    """One line per package that differs between the lock and the environment."""
    lines = []
    for name in sorted(set(lock) | set(have)):
        if name in NOT_LOCKED:
            continue
        want, got = lock.get(name), have.get(name)
        if got is None:
            lines.append(f"{name}: locked at {want} but not installed")
        elif want is None:
            lines.append(f"{name}: {got} is installed but not in {LOCK.name}")
        elif want != got:
            lines.append(f"{name}: installed {got}, {LOCK.name} says {want}")
    return lines


def test_installed_environment_is_the_lock():
    problems = drift(parse_lock(LOCK.read_text()), installed())
    assert not problems, ("the environment differs from the lock (run `make install`, or `make lock` "
                          "after changing pyproject.toml):\n" + "\n".join(problems))


def test_lock_satisfies_every_dependency_of_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    pins = parse_lock(LOCK.read_text())
    env = default_environment()
    stale = []
    for text in wanted:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        version = pins.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            stale.append(f"{req.name}: pyproject wants '{req.specifier}', lock has {version}")
    assert not stale, "requirements.lock is stale, run `make lock`:\n" + "\n".join(stale)


def test_drift_names_each_package_on_one_line():
    lock = {"torch": "2.15.0", "filelock": "4.2.12", "numpy": "2.4.6"}
    have = {"torch": "2.15.0", "filelock": "4.3.1", "extra-pkg": "1.0", "pip": "24.0", "tamp": "0.1.0"}
    assert drift(lock, have) == [
        "extra-pkg: 1.0 is installed but not in requirements.lock",
        "filelock: installed 4.3.1, requirements.lock says 4.2.12",
        "numpy: locked at 2.4.6 but not installed",
    ]


def test_lock_markers_pick_one_version_per_python():
    text = ("numpy==2.4.6 ; python_full_version < '3.12' \\\n    --hash=sha256:aa\n"
            "numpy==2.5.5 ; python_full_version >= '3.12' \\\n    --hash=sha256:bb\n"
            "pywin32==311 ; sys_platform == 'win32'\n    # via x\n")
    env = {**default_environment(), "python_full_version": "3.11.7", "sys_platform": "linux"}
    assert parse_lock(text, env) == {"numpy": "2.4.6"}
    env = {**env, "python_full_version": "3.12.1"}
    assert parse_lock(text, env) == {"numpy": "2.5.5"}


@pytest.mark.parametrize("line", ["torch>=2.6", "torch"])
def test_lock_rejects_a_loose_entry(line):
    with pytest.raises((AssertionError, ValueError)):
        parse_lock(line + "\n")
