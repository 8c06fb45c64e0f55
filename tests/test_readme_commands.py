"""Every command in the bash blocks of the README and of the documentation pages (docs/) is run (or,
where it needs a paper model's weights, composed and checked as the CLI does before it runs); a command
no rule covers fails the test.

docs/extending.md is the exception: its commands need the files its walk-throughs add, and
tests/test_docs.py runs them with those files in place.
Outputs go to a temporary folder (`paths.output_dir=`); the commands are otherwise as printed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import fresh_tiny

from tamp.cli.preflight import check_command
from tamp.core.paths import CONF_DIR

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
RUN_PREFIX = ".venv/bin/python -m tamp.run"


#: pages whose commands tests/test_docs.py runs with the walk-through's files in place
WALKTHROUGHS = ("extending.md",)


def documented_pages() -> list[Path]:
    """README.md and every page of the documentation site but the walk-throughs."""
    pages = sorted(p for p in (REPO / "docs").rglob("*.md") if p.name not in WALKTHROUGHS)
    return [REPO / "README.md", *pages]


def readme_commands_of(page: Path) -> list[str]:
    """The command lines of one page's bash blocks (comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def readme_commands() -> list[str]:
    """The command lines of the README's and the docs pages' bash blocks, each once, in page order."""
    return list(dict.fromkeys(c for page in documented_pages() for c in readme_commands_of(page)))


def _args(command: str) -> list[str]:
    return shlex.split(command)[len(shlex.split(RUN_PREFIX)):]


def _kind(command: str) -> str:
    """How a README command is proven: which test runs it."""
    if command.startswith(RUN_PREFIX):
        args = _args(command)
        if "-m" not in args:
            return "run"
        paper = any(a.startswith(("+experiment=table", "+experiment=fig")) for a in args)
        return "sweep_needs_weights" if paper else "sweep"
    if command.startswith(".venv/bin/python -m tamp.report"):
        return "report"
    if command.startswith(".venv/bin/python -m lmms_eval"):
        return "lmms_eval"
    if command in ("make demo", "make test", "make install && make test"):
        return "ci"  # .ci/run runs `make test` from a clean clone; test_make_demo runs the demo
    if command == "make help":
        return "make_help"
    if command == "make ablations":
        return "make_ablations"  # its 28 cells are checked below; the sweep itself takes minutes
    if command.startswith("make lock"):
        return "make_lock"
    return "uncovered"


def test_every_readme_command_is_covered() -> None:
    commands = readme_commands()
    assert commands, "no bash block in the README?"
    uncovered = [c for c in commands if _kind(c) == "uncovered"]
    assert not uncovered, f"README and docs commands no test runs: {uncovered}"


def test_the_docs_commands_are_collected() -> None:
    """The pages' own commands are among those checked (not only the README's)."""
    commands = readme_commands()
    assert "make ablations" in commands and "make lock UPGRADE=all" in commands
    assert any("+experiment=fig7_8_sparsity_patterns" in c for c in commands)
    assert any(c.startswith(".venv/bin/python -m lmms_eval") for c in commands)


def _login_node(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM's commands on PATH, as on a login node; each refuses to run (nothing is submitted here)."""
    bin_dir.mkdir()
    for tool in ("sbatch", "srun", "sacct"):
        (bin_dir / tool).write_text(f"#!/bin/sh\necho '{tool}: a test login node runs nothing' >&2\nexit 1\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def _compose_params() -> list:
    """The README's commands in the default run; the docs pages' own paper studies (each a grid of cells
    whose every eval task is looked up, 5-20 s a command) under `make test-slow`."""
    readme = set(readme_commands_of(REPO / "README.md"))
    return [c if c in readme or _kind(c) != "sweep_needs_weights" else pytest.param(c, marks=pytest.mark.slow)
            for c in readme_commands() if c.startswith(RUN_PREFIX)]


@pytest.mark.parametrize("command", _compose_params())
def test_readme_run_commands_compose_and_check(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Those that need the paper's weights run on a GPU node: checked here without this machine's devices;
    those that submit to SLURM are checked as on a login node."""
    if "hydra/launcher=slurm" in command:
        _login_node(tmp_path / "bin", monkeypatch)
    assert check_command(_args(command), local=_kind(command) != "sweep_needs_weights") >= 1


@pytest.mark.parametrize("command", [c for c in readme_commands() if _kind(c) == "run"])
def test_readme_single_runs_complete(command: str, tmp_path: Path) -> None:
    args = [*_args(command), f"paths.output_dir={tmp_path}"]
    proc = subprocess.run([sys.executable, "-m", "tamp.run", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "results in" in proc.stdout


def test_make_help_lists_the_targets() -> None:
    proc = subprocess.run(["make", "help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "make demo" in proc.stdout and "make lock" in proc.stdout


def test_make_ablations_runs_a_sweep_whose_every_cell_checks() -> None:
    """`make ablations` sweeps experiments/toy_ablations.yaml: 14 methods (dense included) x 2 targets."""
    make = (REPO / "Makefile").read_text()
    assert "-m +experiment=toy_ablations" in make
    assert check_command(["-m", "+experiment=toy_ablations"]) == 28


@pytest.mark.slow
def test_readme_sweep_then_report(tmp_path: Path) -> None:
    sweep = next(c for c in readme_commands() if _kind(c) == "sweep")
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "tamp.run", *_args(sweep), f"hydra.sweep.dir={sweep_dir}"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reports = [c for c in readme_commands() if _kind(c) == "report"]
    assert len(reports) >= 3  # from results.json, from the offline W&B runs, and logged to W&B
    for report in reports:
        (sweep_dir / "report.md").unlink(missing_ok=True)
        argv = shlex.split(report.replace("outputs/multirun/<time>", str(sweep_dir)))
        proc = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, env=ENV, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, f"{report}: {proc.stderr[-2000:]}"
        assert (sweep_dir / "report.md").is_file() and (sweep_dir / "report.csv").is_file(), report


@pytest.mark.slow
def test_readme_lmms_eval_command_scores_a_saved_model(tmp_path: Path) -> None:
    from tamp.models.tiny import save_tiny

    save_tiny(fresh_tiny("llava_next"), tmp_path / "run" / "model")
    command = next(c for c in readme_commands() if _kind(c) == "lmms_eval")
    command = command.replace("RUN/model", str(tmp_path / "run" / "model"))
    command = command.replace("outputs/lmms_eval", str(tmp_path / "out"))
    proc = subprocess.run([sys.executable, *shlex.split(command)[1:], "--limit", "2"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list((tmp_path / "out").rglob("*results*.json")), "lmms-eval exits 0 on failure: no results written"


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in readme_commands() if _kind(c) == "make_lock"])
def test_readme_lock_commands(command: str, tmp_path: Path) -> None:
    """`make lock` reproduces the committed lock exactly; the UPGRADE forms resolve (into a copy)."""
    copy = tmp_path / "requirements.lock"
    shutil.copy(REPO / "requirements.lock", copy)
    proc = subprocess.run([*shlex.split(command), f"LOCK={copy}"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if command == "make lock":
        assert copy.read_text() == (REPO / "requirements.lock").read_text(), "the lock is not what `make lock` makes"


@pytest.mark.slow
def test_make_demo(tmp_path: Path) -> None:
    proc = subprocess.run(["make", "demo", f"DEMO_DIR={tmp_path / 'demo'}"], cwd=REPO, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Avg Rel.%" in (tmp_path / "demo" / "report.md").read_text()


def _blocks(language: str, page: str = "README.md") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (REPO / page).read_text(), flags=re.S)


def test_readme_python_example_runs(tmp_path: Path) -> None:
    """The README's "From Python" example as printed, its output folder moved to a temporary one
    (docs/api.md's longer one: tests/test_docs.py)."""
    (example,) = _blocks("python")
    assert 'tamp.prune(model, samples, "tamp", sparsity=0.5' in example
    code_lines = [line for line in example.splitlines() if line.strip()]
    assert len(code_lines) <= 13, f"the README's example is {len(code_lines)} lines"
    script = tmp_path / "example.py"
    script.write_text(example.replace("outputs/api_example", str(tmp_path / "api_example")))
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[0].startswith("overall sparsity planned 0.50"), proc.stdout
    saved = tmp_path / "api_example" / "tamp_50"
    assert {"config.json", "sparsity_manifest.json", "masks.safetensors"} <= {p.name for p in saved.iterdir()}


def test_readme_is_short() -> None:
    """A README read in five minutes; the rest is the documentation site."""
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines"


def test_readme_local_config_composes(tmp_path: Path) -> None:
    """docs/cluster.md's conf/local/default.yaml (kept outside the checkout through hydra.searchpath here)."""
    (local,) = [block for block in _blocks("yaml", "docs/cluster.md") if "override /hydra/launcher: slurm" in block]
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "default.yaml").write_text(local)
    from hydra import compose, initialize_config_dir

    from tamp.cli.schema import register_schema

    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("run", overrides=[f"hydra.searchpath=[file://{tmp_path}]", "calib=sharegpt4v"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert (cfg.hydra.launcher.partition, cfg.hydra.launcher.account) == ("gpu", "my-lab")
    assert cfg.calib.path.startswith("/shared/datasets/") and cfg.paths.output_dir == "/scratch/me/tamp"
