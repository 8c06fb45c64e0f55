"""Every outcome of a SLURM submission ends in one line tamp wrote: refused, summarized, or told what goes on.

No cluster is needed: SLURM's commands are shell scripts on PATH (`sbatch` answers with a job id,
`sacct` reports the state a test chooses, `srun` is there because submitit looks for it), and
hydra-submitit's own launcher and submitit's own executor and job objects do the rest, as on a login
node. A slow test kills one real job of submitit's local executor with SIGKILL (as the OOM killer does).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tamp.cli.preflight import PreflightError, preflight
from tamp.cli.submitted import SLURM_TOOLS

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
CELLS = ["method=wanda,magnitude", "eval=none", "logger=none", "runner.progress=false"]

SACCT = """#!/bin/sh
# job 4242's array tasks: task N is in the state $FAKE_SLURM_STATE_N (default $FAKE_SLURM_STATE, RUNNING)
echo "JobID|State|NodeList"
for n in 0 1 2 3; do
  eval "state=\\${FAKE_SLURM_STATE_$n:-\\${FAKE_SLURM_STATE:-RUNNING}}"
  echo "4242_$n|$state|node1"
done
"""


def _path_without_slurm() -> str:
    """This machine's PATH less any folder that holds a SLURM command (a login node's PATH has them)."""
    keep = [d for d in os.environ["PATH"].split(os.pathsep)
            if d and not any(os.path.exists(os.path.join(d, tool)) for tool in SLURM_TOOLS)]
    return os.pathsep.join(keep)


def _fake_slurm(tmp_path: Path, tools: tuple[str, ...] = SLURM_TOOLS) -> str:
    """A PATH where `tools` are the stand-in SLURM commands above."""
    bin_dir = tmp_path / "slurm_bin"
    bin_dir.mkdir()
    scripts = {"sbatch": '#!/bin/sh\necho "Submitted batch job 4242"\n', "srun": "#!/bin/sh\nexit 0\n", "sacct": SACCT}
    for tool in tools:
        (bin_dir / tool).write_text(scripts[tool])
        (bin_dir / tool).chmod(0o755)
    return f"{bin_dir}{os.pathsep}{_path_without_slurm()}"


def _tamp_run(sweep: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tamp.run", "-m", "hydra/launcher=slurm", f"hydra.sweep.dir={sweep}", *CELLS, *extra]


@pytest.mark.fast
def test_no_sbatch_here_is_refused_before_the_cells_are_checked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", _path_without_slurm())
    started = time.monotonic()
    with pytest.raises(PreflightError) as err:
        preflight(["-m", "hydra/launcher=slurm", "+experiment=table2_llava_next"], local=None)
    assert time.monotonic() - started < 15, "refused after the cells' checks (lmms-eval's task index) ran"
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("hydra/launcher=slurm submits through SLURM (sbatch, srun, sacct), and sbatch, srun, "
                              "sacct are not on this machine's PATH; valid: run the command on a login node")
    assert "hydra/launcher=local_parallel" in message
    monkeypatch.setenv("PATH", _fake_slurm(tmp_path, ("srun", "sacct")))  # only sbatch missing: named alone
    with pytest.raises(PreflightError, match=r"and sbatch is not on this machine's PATH"):
        preflight(["-m", "hydra/launcher=slurm_requeue", "method=wanda,tamp"], local=None)
    assert preflight(["-m", "hydra/launcher=local_parallel", "method=wanda", "eval=none"], local=None).cells == 1


def test_no_sbatch_with_the_pre_run_check_off_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    env = {**ENV, "PATH": _path_without_slurm(), "TAMP_PREFLIGHT": "0"}
    proc = subprocess.run(_tamp_run(sweep), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tamp: error: hydra/launcher=slurm submits through SLURM"), lines
    assert "Traceback" not in proc.stderr and not sweep.exists()


@pytest.mark.fast
def test_the_check_for_another_machine_shows_progress_and_reads_the_task_index_once(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """Every cell's eval check is refused here (the node has the datasets): lmms-eval is asked once, not per cell."""
    import tamp.eval.evaluate as evaluate
    from tamp.cli import preflight as preflight_module

    calls: list[list[str]] = []

    def resolve_tasks(tasks, include_paths=()):
        calls.append(list(tasks))
        raise FileNotFoundError("dataset lmms-lab/MME is not in the Hugging Face cache; valid: a cached dataset")

    monkeypatch.setenv("PATH", _fake_slurm(tmp_path))
    monkeypatch.setenv("TAMP_PROGRESS", "log")
    monkeypatch.setattr(evaluate, "resolve_tasks", resolve_tasks)
    preflight_module._task_problem.cache_clear()
    try:
        checked = preflight(["-m", "hydra/launcher=slurm", "eval=tiny", "logger=none",
                             "sparsity.target=0.3,0.4,0.5,0.6"], local=None)
    finally:
        preflight_module._task_problem.cache_clear()
    assert checked.cells == 4 and len(calls) == 1, calls
    assert any("dataset lmms-lab/MME is not in the Hugging Face cache" in s for s in checked.skipped)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "tamp: pre-run check of 4 cells for hydra/launcher=slurm"
    assert err[-1].startswith("tamp: pre-run check: cell 4/4, elapsed "), err


def test_jobs_that_end_without_a_result_are_failed_cells_of_the_summary_line(tmp_path: Path) -> None:
    """Out of memory and scancel: no UncompletedJobError page, one summary line naming each cell and why."""
    sweep = tmp_path / "sweep"
    env = {**ENV, "PATH": _fake_slurm(tmp_path), "FAKE_SLURM_STATE_0": "OUT_OF_MEMORY",
           "FAKE_SLURM_STATE_1": "CANCELLED by 1000"}
    proc = subprocess.run(_tamp_run(sweep), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "UncompletedJobError" not in proc.stderr, proc.stderr[-3000:]
    assert "tamp: submitted 2 jobs to SLURM (job 4242, tasks 4242_0..4242_1)" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "0/2 cells completed; failed: "
        "0_wanda_0.5_seed42 (SLURM job 4242_0 ended without a result: out of memory (raise hydra.launcher.mem_gb); "
        "log .submitit/4242_0/4242_0_0_log.err), "
        "1_magnitude_0.5_seed42 (SLURM job 4242_1 ended without a result: cancelled (scancel, or the cluster); "
        "log .submitit/4242_1/4242_1_0_log.err)"
    )


def test_ctrl_c_while_waiting_says_the_jobs_keep_running_and_how_to_cancel_or_collect(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    env = {**ENV, "PATH": _fake_slurm(tmp_path)}  # every task RUNNING
    proc = subprocess.Popen(_tamp_run(sweep), cwd=REPO, env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("tamp: submitted 2 jobs to SLURM"):
                time.sleep(1.0)  # inside the wait
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = "".join(lines) + rest
    assert proc.returncode == 130, stderr[-3000:]
    assert "results.json" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    tail = rest.strip().splitlines()
    assert tail == [
        "tamp: stopped waiting; 2 of the 2 submitted jobs have not finished and keep running on the cluster: "
        "4242_0, 4242_1",
        f"tamp: cancel them with `scancel 4242`; their cells write their results under {sweep}: collect them when "
        f"they end with `python -m tamp.report {sweep}`",
    ], stderr[-3000:]


@pytest.mark.slow  # a real cell runs, then a second sweep plans (about 60 s on two shared cores)
def test_a_reordered_grid_finds_its_cells_by_their_settings(tmp_path: Path) -> None:
    """The same cells in another order: the completed one is not run again, the failed one runs in its own folder."""
    sweep = tmp_path / "sweep"
    env = {**ENV, "TAMP_PREFLIGHT": "0"}  # sparsity.target=1.5 fails in its cell (as any cell can), not before

    def sweep_once(targets: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "tamp.run", "-m", f"hydra.sweep.dir={sweep}", f"sparsity.target={targets}",
               "calib.num_samples=1", "eval=none", "logger=none", "runner.progress=false"]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)

    first = sweep_once("0.5,1.5")
    assert first.returncode == 1, first.stderr[-2000:]
    done = {p: p.read_bytes() for p in sorted((sweep / "0_wanda_0.5_seed42").rglob("*")) if p.is_file()}
    assert json.loads((sweep / "0_wanda_0.5_seed42" / "results.json").read_text())["status"] == "completed"

    second = sweep_once("1.5,0.5")
    assert second.returncode == 1, second.stderr[-2000:]
    assert second.stderr.strip().splitlines()[-1].startswith(
        "1/2 cells completed: 1 before, 0 now; failed: 1_wanda_1.5_seed42 (ValueError: sparsity.target=1.5")
    launched = second.stdout + second.stderr
    assert "#1 : sparsity.target=1.5" in launched and "sparsity.target=0.5 " not in launched, launched[-2000:]
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == [
        "0_wanda_0.5_seed42", "1_wanda_1.5_seed42", "multirun.yaml"]
    assert {p: p.read_bytes() for p in sorted((sweep / "0_wanda_0.5_seed42").rglob("*")) if p.is_file()} == done


@pytest.mark.slow  # two real cells as submitit local jobs (about 90 s on two shared cores)
def test_a_killed_job_fails_its_cell_and_the_other_cells_are_summarized(tmp_path: Path) -> None:
    """The first job to start is killed with SIGKILL before it can write anything (as the OOM killer would)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('SUBMITIT_LOCAL_GLOBALID') is not None:  # a task of a submitit local job\n"
        "    try:\n"
        "        os.close(os.open(os.environ['KILL_MARK'], os.O_CREAT | os.O_EXCL | os.O_WRONLY))\n"
        "    except FileExistsError:\n"
        "        pass\n"
        "    else:\n"
        "        os.kill(os.getpid(), 9)\n"
    )
    sweep = tmp_path / "sweep"
    env = {**ENV, "PYTHONPATH": str(hooks), "KILL_MARK": str(tmp_path / "killed")}
    cmd = [sys.executable, "-m", "tamp.run", "-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}",
           "calib.num_samples=2", *CELLS]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "UncompletedJobError" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("1/2 cells completed; failed: "), last
    failed = last.split("; failed: ", 1)[1]
    assert " ended without a result: " in failed and "_log.err)" in failed, failed
    (results,) = sweep.glob("*/results.json")
    assert json.loads(results.read_text())["status"] == "completed"
    assert not failed.startswith(results.parent.name)
    shutil.rmtree(sweep / ".submitit", ignore_errors=True)


@pytest.mark.fast
def test_the_sweep_plan_matches_cells_by_settings_not_by_number(tmp_path: Path) -> None:
    """An earlier multirun's completed cell 1 (sparsity 0.6) is found wherever 0.6 stands in the new grid; the
    new cells take numbers no folder has, and nothing in the earlier folder changes."""
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from tamp.cli import CONF_DIR
    from tamp.cli.resweep import _job_config, plan_sweep
    from tamp.cli.schema import register_schema

    register_schema()
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().hydra.config_loader
        config = compose("run", overrides=[f"hydra.sweep.dir={sweep}"], return_hydra_config=True)
        HydraConfig.instance().set_config(config)
        earlier, task = _job_config(loader, config, ["sparsity.target=0.6"], 1, sweep)  # as the first multirun ran it
        (earlier / ".hydra").mkdir(parents=True)
        (earlier / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": 1}}}))
        (earlier / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["sparsity.target=0.6"]))
        record = {"status": "completed", "config": OmegaConf.to_container(task, resolve=True)}
        (earlier / "results.json").write_text(json.dumps(record))
        before = {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()}
        HydraConfig.instance().set_config(config)

        plan = plan_sweep(loader, config, [["sparsity.target=0.6"], ["sparsity.target=0.7"], ["sparsity.target=0.5"]])
    assert [(cell.index, cell.job_dir.name, cell.completed) for cell in plan.cells] == [  # type: ignore[union-attr]
        (1, "1_wanda_0.6_seed42", True), (0, "0_wanda_0.7_seed42", False), (2, "2_wanda_0.5_seed42", False)]
    assert [cell.overrides for cell in plan.to_run] == [["sparsity.target=0.7"], ["sparsity.target=0.5"]]
    assert {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()} == before
