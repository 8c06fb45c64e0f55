"""Test-wide environment: offline, W&B offline, quiet progress bars, fixtures directory."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
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


def _shared_dir(config: pytest.Config, name: str) -> Path:
    """A folder every process of this test run shares: the session's base temp folder, or under
    pytest-xdist (make test: `-n auto`) the folder above the workers' own, so what one worker builds
    the other reuses instead of building it again."""
    base = config._tmp_path_factory.getbasetemp()
    folder = (base.parent if hasattr(config, "workerinput") else base) / name
    folder.mkdir(exist_ok=True)
    return folder


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Held by one process of the test run at a time (the other workers wait for it)."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per core this process may use, at most 4 (each worker imports torch and
    holds its own tiny models; CI has 2 cores)."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def _xdist_group(item: pytest.Item) -> str | None:
    """The work unit a test belongs to under `--dist loadgroup`: its `xdist_group` mark's name, else its
    module where it uses a fixture of that module of module or class scope (split across two workers,
    each would build it again: a sweep, a trained model), else none (it goes to whichever worker is free)."""
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    info = getattr(item, "_fixtureinfo", None)
    defs = [d for chain in (info.name2fixturedefs.values() if info else ()) for d in chain[-1:]]
    if any(d.scope in ("module", "class") and d.baseid for d in defs):
        return item.nodeid.split("::", 1)[0]
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """An xdist worker writes each grouped test's unit for the scheduler (`pytest_xdist_make_scheduler`).
    pytest-xdist 3.8 marks a group by appending it to the node id, which pytest 9.2 no longer lets a
    plugin change (pytest-xdist issue 1386): the groups would be dropped without a word."""
    if not getattr(config, "workerinput", None) or not config.getvalue("loadgroup"):  # (set by xdist on a worker)
        return
    groups = {item.nodeid: group for item in items if (group := _xdist_group(item)) is not None}
    path = _shared_dir(config, "xdist") / "groups.json"
    scratch = path.with_name(f"groups.{os.getpid()}.json")  # every worker writes the same map: whole files only
    scratch.write_text(json.dumps(groups))
    os.replace(scratch, path)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadgroup` as documented (the tests of one group run on one worker, the rest one by one on
    whichever is free), grouped by the map the workers wrote at collection."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        _groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:  # read once the workers' collections (and so the map) are complete
                path = _shared_dir(config, "xdist") / "groups.json"
                self._groups = json.loads(path.read_text()) if path.exists() else {}
            return self._groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the micro zoo builds the selected tests need (their modules' `ZOO_BUILDS`) in a process of
    their own: a default run prunes on one thread (OMP_NUM_THREADS=1), so the build trains on the other
    core meanwhile instead of in the first zoo test's setup. tamp's build lock makes a test's own
    `ensure_zoo` wait for it and then reuse it; if the background build fails, the test builds (and
    reports the failure) itself. Under pytest-xdist the workers share the folder and the first worker
    to get here starts the one build."""
    import subprocess
    import sys

    recipes = sorted({r for item in session.items for r in getattr(getattr(item, "module", None), "ZOO_BUILDS", ())})
    if not recipes or session.config.option.collectonly:
        return
    folder = _shared_dir(session.config, "zoo_cache")
    _ZOO_CACHE.update(folder=folder)
    try:  # one starter per test run: the others find the marker and leave the build to it
        os.close(os.open(folder / "background_build.started", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    code = ("import sys; from tamp.zoo.cache import ensure_zoo\n"
            "for name in sys.argv[2:]: ensure_zoo(name, sys.argv[1], progress=False)")
    with (folder / "background_build.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-c", code, str(folder), *recipes], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT)
    _ZOO_CACHE.update(proc=proc)


def pytest_sessionfinish(session: pytest.Session) -> None:
    proc = _ZOO_CACHE.get("proc")
    if proc is not None and proc.poll() is None:  # the zoo tests are done (or were interrupted); a test
        proc.terminate()                          # still waiting for the build takes its lock and builds
        proc.wait(timeout=60)


@pytest.fixture(scope="session")
def zoo_cache_dir(request: pytest.FixtureRequest) -> Path:
    """One cache folder for the test run's micro zoo builds (each recipe is trained once, then reused;
    by every xdist worker)."""
    folder = _ZOO_CACHE.get("folder")
    return folder if isinstance(folder, Path) else _shared_dir(request.config, "zoo_cache")


@pytest.fixture(scope="session")
def tamp_wheel(request: pytest.FixtureRequest) -> Path:
    """tamp's wheel, built once per test run by setuptools' own build backend (what `pip install .`
    calls); under xdist the first worker builds it and the others wait for it and reuse it."""
    import subprocess
    import sys

    dist = _shared_dir(request.config, "dist")
    with _file_lock(dist.parent / "dist.lock"):
        wheels = list(dist.glob("tamp-*.whl"))
        if not wheels:
            build = [sys.executable, "-c", "import sys; from setuptools import build_meta; "
                     "print(build_meta.build_wheel(sys.argv[1]))", str(dist)]
            proc = subprocess.run(build, cwd=REPO, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr[-3000:]
            wheels = list(dist.glob("tamp-*.whl"))
    (wheel,) = wheels
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
