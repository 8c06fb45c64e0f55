"""The design card's layout (conf/ and experiments/ at the top of the checkout, tamp/ code only) in both
kinds of install: `+experiment=NAME` must apply the study from a regular install and from an editable one.

The two differ where it matters: a wheel carries the configs inside tamp/ (tamp/conf, tamp/experiments),
an editable install maps those packages back onto the top-level folders, and Hydra reads config folders
from disk. A study group one of them cannot see does not fail: Hydra turns `+experiment=toy_demo` into the
plain value `experiment: toy_demo` (the label every study sets itself) and the run goes on with the
defaults. So each install is made in a fresh virtual environment that sees this environment's packages
through a .pth file (nothing is downloaded), and tamp's CLI composes toy_demo there from a folder outside
the checkout; the test fails unless the study's own settings and sweep come out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from tamp.cli.schema import register_schema
from tamp.cli.study import check_study_applied
from tamp.core.paths import CONF_DIR, EXPERIMENTS_DIR, package_dir

REPO = Path(__file__).resolve().parents[1]

#: under pytest-xdist these tests run on one worker: the wheel build and the editable install both write
#: setuptools' build/ and tamp.egg-info into the checkout, and must not do so at the same time
pytestmark = pytest.mark.xdist_group("builds_in_checkout")
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _venv(folder: Path) -> tuple[Path, Path]:
    """A virtual environment without pip whose site-packages also reads this environment's (a .pth line:
    the packages, not the .pth files there, so not this environment's own install of tamp)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "_test_environment.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python, site


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory, tamp_wheel: Path) -> tuple[Path, Path]:
    """`pip install .`: the wheel unpacked into site-packages, as pip installs a pure-Python wheel."""
    python, site = _venv(tmp_path_factory.mktemp("wheel_venv") / "venv")
    with zipfile.ZipFile(tamp_wheel) as archive:
        archive.extractall(site)
    return python, site / "tamp"


@pytest.fixture(scope="module")
def editable_install(tmp_path_factory) -> tuple[Path, Path]:
    """`make install`'s `pip install -e .`: uv (in the lock) or pip, no dependencies, no build isolation."""
    python, _ = _venv(tmp_path_factory.mktemp("editable_venv") / "venv")
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    install = ([uv, "pip", "install", "--python", str(python)] if uv
               else [sys.executable, "-m", "pip", "--python", str(python), "install"])
    proc = subprocess.run([*install, "--no-deps", "--no-build-isolation", "-e", str(REPO)],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return python, REPO


def _run(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("kind", ["wheel_install", "editable_install"])
def test_a_study_composes_in_each_install(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    python, root = request.getfixturevalue(kind)
    where = _run(python, tmp_path, "-c", "from tamp.core.paths import CONF_DIR, EXPERIMENTS_DIR; "
                 "print(CONF_DIR); print(EXPERIMENTS_DIR)")
    assert where.returncode == 0, where.stderr[-2000:]
    assert where.stdout.split() == [str(root / "conf"), str(root / "experiments")], f"{kind}: {where.stdout}"
    proc = _run(python, tmp_path, "-m", "tamp.run", "+experiment=toy_demo", "--cfg", "all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["hydra"]["runtime"]["choices"].get("experiment") == "toy_demo", f"{kind}: the study was not applied"
    assert (cfg["model"]["name"], cfg["calib"]["name"]) == ("zoo", "zoo"), f"{kind}: the defaults ran"
    assert "tamp_70" in str(cfg["hydra"]["sweeper"]["params"].get("+cell")), f"{kind}: the study's sweep is lost"


def test_a_study_the_search_path_lacks_is_refused_not_run_as_a_label(tmp_path: Path) -> None:
    """The trap itself, with Hydra's own compose: tamp's conf/ copied elsewhere has no `experiment` group."""
    shutil.copytree(CONF_DIR, tmp_path / "conf", ignore=shutil.ignore_patterns("local", "__pycache__"))
    register_schema()
    with initialize_config_dir(config_dir=str(tmp_path / "conf"), version_base="1.3"):
        cfg = compose("run", overrides=["+experiment=toy_demo"], return_hydra_config=True)
    assert cfg.experiment == "toy_demo" and cfg.model.name != "zoo"  # what Hydra gives: a label on the defaults
    with pytest.raises(ValueError, match=r"^\+experiment=toy_demo was not applied as a study"):
        check_study_applied(cfg.experiment, cfg.hydra.runtime.choices)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("run", overrides=["+experiment=toy_demo"], return_hydra_config=True)
    check_study_applied(cfg.experiment, cfg.hydra.runtime.choices)  # tamp's own conf/: applied


def test_an_unknown_study_is_one_line_naming_the_studies() -> None:
    from tamp.cli.preflight import PreflightError, preflight

    with pytest.raises(PreflightError) as err:
        preflight(["-m", "+experiment=toy_dmeo"])
    message = str(err.value)
    assert "\n" not in message and message.startswith("+experiment=toy_dmeo: 'toy_dmeo' is not an option")
    assert "toy_demo" in message and "table2_llava_next" in message


def test_the_packages_listed_for_the_install_are_those_on_disk() -> None:
    """pyproject.toml lists the packages (conf/ and experiments/ are mapped into tamp): a package folder
    missing from the list would be missing from every wheel."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for top in ("tamp", "hydra_plugins")
               for p in (REPO / top).rglob("__init__.py")}
    expected = on_disk | {"tamp.conf", "tamp.experiments", "hydra_plugins"}
    assert listed == expected, f"list in pyproject.toml: {sorted(expected - listed)}; remove: {sorted(listed - expected)}"
    assert (CONF_DIR / "run.yaml").is_file() and (EXPERIMENTS_DIR / "toy_demo.yaml").is_file()


def test_a_bare_folder_shadowing_a_config_package_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tamp/conf/ left by an older checkout (ignored files, __pycache__) would shadow the mapped package."""
    (tmp_path / "oldtamp" / "conf" / "local").mkdir(parents=True)
    (tmp_path / "oldtamp" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ImportError, match=r"oldtamp\.conf resolves to .*oldtamp/conf, a folder without __init__"):
            package_dir("oldtamp.conf")
    finally:
        sys.modules.pop("oldtamp", None)
