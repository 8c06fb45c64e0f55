"""A regular (not editable) install runs: the configs ship in the wheel and are found through the package.

The wheel is built with setuptools' own build backend (what `pip install .` calls) and unpacked as pip
unpacks a pure-Python wheel; a run is then made from a folder outside the checkout with only the unpacked
wheel on the path, so nothing can be found through the source tree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    build = [sys.executable, "-c", "import sys; from setuptools import build_meta; "
             "print(build_meta.build_wheel(sys.argv[1]))", str(dist)]
    proc = subprocess.run(build, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = dist.glob("tamp-*.whl")
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def _python(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_wheel_carries_every_config_group_and_study(installed: Path) -> None:
    shipped = {p.relative_to(installed / "tamp" / "conf") for p in (installed / "tamp" / "conf").rglob("*.yaml")}
    source = {p.relative_to(REPO / "tamp" / "conf") for p in (REPO / "tamp" / "conf").rglob("*.yaml")}
    source = {p for p in source if p.parts[0] != "local"}  # this machine's own settings never ship
    assert source and source <= shipped, sorted(map(str, source - shipped))
    assert (installed / "hydra_plugins" / "tamp_sweeper").is_dir(), "the sweeper plugin ships with tamp"


def test_a_run_from_the_installed_package_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = _python(installed, tmp_path, "-c", "import tamp.conf; print(tamp.conf.CONF_DIR)")
    assert where.returncode == 0, where.stderr[-2000:]
    assert Path(where.stdout.strip()) == installed / "tamp" / "conf", "tamp was imported from the checkout"
    run_dir = tmp_path / "run"
    proc = _python(installed, tmp_path, "-m", "tamp.run", "eval=none", "logger=none", "runner.progress=false",
                   f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "completed" and record["method"]["name"] == "wanda"
    assert "Primary config directory not found" not in proc.stderr
