"""Test-wide environment: offline, W&B offline, quiet progress bars, fixtures directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# tiny tensors: one thread per process is faster than two fighting over CI's two cores (subprocesses inherit)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
from tamp.core.paths import CONF_DIR  # noqa: E402


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def compose_cfg():
    """`compose_cfg(overrides, hydra=False)`: conf/run.yaml composed by Hydra's own compose API.

    The one way tests build a run config (as lightning-hydra-template's `cfg_train`): the schema and
    every component's settings are registered first, exactly as `python -m tamp.run` does.
    """
    from hydra import compose, initialize_config_dir

    from tamp.cli.schema import register_schema

    def _compose(overrides: list[str] | tuple[str, ...] = (), hydra: bool = False):
        register_schema()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("run", overrides=list(overrides), return_hydra_config=hydra)

    return _compose


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hugging Face Hub client offline even where its constants were read before the test set the env."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


#: (the folder, the background build) of this session's micro zoo builds: see pytest_collection_finish
_ZOO_CACHE: dict[str, object] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the micro zoo builds the selected tests need (their modules' `ZOO_BUILDS`) in a process of
    their own: a default run prunes on one thread (OMP_NUM_THREADS=1), so the build trains on the other
    core meanwhile instead of in the first zoo test's setup. tamp's build lock makes a test's own
    `ensure_zoo` wait for it and then reuse it; if the background build fails, the test builds (and
    reports the failure) itself."""
    import subprocess
    import sys

    recipes = sorted({r for item in session.items for r in getattr(getattr(item, "module", None), "ZOO_BUILDS", ())})
    if not recipes or session.config.option.collectonly:
        return
    folder = session.config._tmp_path_factory.mktemp("zoo_cache")
    code = ("import sys; from tamp.zoo.cache import ensure_zoo\n"
            "for name in sys.argv[2:]: ensure_zoo(name, sys.argv[1], progress=False)")
    with (folder / "background_build.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-c", code, str(folder), *recipes], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT)
    _ZOO_CACHE.update(folder=folder, proc=proc)


def pytest_sessionfinish(session: pytest.Session) -> None:
    proc = _ZOO_CACHE.get("proc")
    if proc is not None and proc.poll() is None:  # a session that ended before its zoo tests ran
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="session")
def zoo_cache_dir(tmp_path_factory) -> Path:
    """One cache folder for the session's micro zoo builds (each recipe is trained once, then reused)."""
    folder = _ZOO_CACHE.get("folder")
    return folder if isinstance(folder, Path) else tmp_path_factory.mktemp("zoo_cache")


@pytest.fixture(scope="session")
def tamp_wheel(tmp_path_factory) -> Path:
    """tamp's wheel, built once per session by setuptools' own build backend (what `pip install .` calls)."""
    import subprocess
    import sys

    dist = tmp_path_factory.mktemp("dist")
    build = [sys.executable, "-c", "import sys; from setuptools import build_meta; "
             "print(build_meta.build_wheel(sys.argv[1]))", str(dist)]
    proc = subprocess.run(build, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = dist.glob("tamp-*.whl")
    return wheel


@pytest.fixture
def login_node(tmp_path: Path, monkeypatch) -> None:
    """SLURM's commands on PATH, as on a login node (stand-ins: the check only looks for them)."""
    bin_dir = tmp_path / "login_bin"
    bin_dir.mkdir()
    for tool in ("sbatch", "srun", "sacct"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
