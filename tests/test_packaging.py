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

#: under pytest-xdist these tests run on one worker: the wheel build and the editable install both write
#: setuptools' build/ and tamp.egg-info into the checkout, and must not do so at the same time
pytestmark = pytest.mark.xdist_group("builds_in_checkout")


@pytest.fixture(scope="module")
def installed(tmp_path_factory, tamp_wheel: Path) -> Path:
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(tamp_wheel) as archive:
        archive.extractall(site)
    return site


def _python(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _yamls(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*.yaml")}


def test_the_wheel_carries_every_config_group_and_study(installed: Path) -> None:
    """conf/ and experiments/ of the checkout become tamp/conf and tamp/experiments of the wheel."""
    shipped = _yamls(installed / "tamp" / "conf")
    source = {p for p in _yamls(REPO / "conf") if p.parts[0] != "local"}
    assert source and source == shipped, sorted(map(str, source ^ shipped))  # local/: this machine's, never shipped
    assert _yamls(REPO / "experiments") == _yamls(installed / "tamp" / "experiments") != set()
    for plugin in ("tamp_sweeper", "tamp_experiments"):  # the sweeper, and the source of the `experiment` group
        assert (installed / "hydra_plugins" / plugin / "__init__.py").is_file(), f"{plugin} ships with tamp"
    assert not (installed / "hydra_plugins" / "__init__.py").exists(), "hydra_plugins must stay a namespace package"


def test_a_run_from_the_installed_package_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = _python(installed, tmp_path, "-c", "import tamp.core.paths; print(tamp.core.paths.CONF_DIR)")
    assert where.returncode == 0, where.stderr[-2000:]
    assert Path(where.stdout.strip()) == installed / "tamp" / "conf", "tamp was imported from the checkout"
    run_dir = tmp_path / "run"
    proc = _python(installed, tmp_path, "-m", "tamp.run", "eval=none", "logger=none", "runner.progress=false",
                   f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "completed" and record["method"]["name"] == "wanda"
    assert "Primary config directory not found" not in proc.stderr
