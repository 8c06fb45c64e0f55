"""SLURM launch presets: requeue on pre-emption, N GPUs per node; checked by what they would submit.

The presets are composed with Hydra and handed to hydra-submitit's own SlurmLauncher, whose submitit
executor writes the sbatch script it would submit (a stand-in `srun` on PATH, no cluster needed);
the tests read the script. The pre-run check refuses a multi-GPU world that SLURM would start with
one task (Lightning fails that on the node, after the queue), and accepts GPU cells submitted from a
login node without GPUs. A slow test requeues a real (local) submitit job at its time limit and
checks that the cell resumes from its checkpoint and completes.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from block_delay import with_block_delay
from hydra.utils import instantiate

from tamp.cli.preflight import PreflightError, check_command

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def _sbatch(compose_cfg, tmp_path: Path, monkeypatch, *overrides: str) -> tuple[str, object]:
    """The sbatch script and the submitit executor hydra-submitit's SlurmLauncher builds for one cell."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    srun = bin_dir / "srun"
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = compose_cfg([*overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}"], hydra=True)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    captured = {}

    def map_array(executor, fn, *args):
        captured["executor"] = executor
        return []

    import submitit

    with mock.patch.object(submitit.AutoExecutor, "map_array", map_array):
        launcher.launch([["method=wanda"]], initial_job_idx=0)
    executor = captured["executor"]
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit X", "uid")
    return script, executor._executor


def test_slurm_requeue_preset_requeues_on_timeout_and_preemption(compose_cfg, tmp_path: Path, monkeypatch) -> None:
    script, executor = _sbatch(compose_cfg, tmp_path, monkeypatch, "hydra/launcher=slurm_requeue")
    assert "#SBATCH --requeue" in script
    assert "#SBATCH --signal=USR2@300" in script
    assert executor.max_num_timeout == 20
    plain, plain_executor = _sbatch(compose_cfg, tmp_path / "plain", monkeypatch, "hydra/launcher=slurm")
    assert "--requeue" not in plain and plain_executor.max_num_timeout == 0, "the plain preset never requeues"


def test_slurm_ddp_preset_starts_one_task_per_gpu(compose_cfg, tmp_path: Path, monkeypatch) -> None:
    script, executor = _sbatch(
        compose_cfg, tmp_path, monkeypatch, "hydra/launcher=slurm_ddp", "runner=ddp_gpu", "runner.devices=8"
    )
    assert "#SBATCH --ntasks-per-node=8" in script and "#SBATCH --gpus-per-node=8" in script
    assert "#SBATCH --requeue" in script and executor.max_num_timeout == 20
    assert "srun" in script, "submitit starts the tasks with srun: Lightning's SLURM environment joins them"


def _check(*overrides: str) -> int:
    """The pre-run check as tamp.run makes it: for the launcher's machines (local=None)."""
    return check_command(["-m", "eval=none", "logger=none", *overrides], local=None)


def test_preflight_needs_one_slurm_task_per_device(login_node) -> None:
    with pytest.raises(PreflightError) as err:
        _check("hydra/launcher=slurm", "runner=ddp_gpu", "runner.devices=8", "calib.num_samples=8",
               "method=wanda,sparsegpt")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("runner.devices=8 under SLURM needs one task per device, but the launcher asks for "
                              "tasks_per_node=1; use hydra/launcher=slurm_ddp")
    with pytest.raises(PreflightError, match="runner.devices=auto under SLURM needs one task per device"):
        _check("hydra/launcher=slurm_ddp", "runner=ddp_gpu", "method=wanda")
    assert _check("hydra/launcher=slurm_ddp", "runner=ddp_gpu", "runner.devices=8", "calib.num_samples=8",
                  "method=wanda,tamp") == 2


def test_gpu_cells_can_be_submitted_from_a_login_node_without_gpus(login_node) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal below cannot happen here")
    # the setups' runner (gpu_offload) asks for CUDA: refused for a local run, fine for SLURM nodes
    with pytest.raises(PreflightError, match="runner.accelerator=cuda but no CUDA device is present"):
        _check("runner=gpu_offload", "method=wanda")
    assert _check("hydra/launcher=slurm_requeue", "runner=gpu_offload", "method=wanda,tamp") == 2


@pytest.mark.slow
def test_a_timed_out_submitit_job_is_requeued_and_resumes(tmp_path: Path) -> None:
    """submitit's local executor sends USR2 30 s before a 2-minute limit; the job is requeued and resumes."""
    env = with_block_delay(ENV, 45)  # two blocks of 45 s each: the signal at 90 s comes between
    cmd = [sys.executable, "-m", "tamp.run", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=2",
           f"hydra.sweep.dir={tmp_path}", "method=wanda", "calib.num_samples=2", "eval=none", "logger=none",
           "runner.progress=false"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = tmp_path.glob("*/results.json")
    record = json.loads(results.read_text())
    assert record["status"] == "completed"
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / ".submitit").rglob("*.err"))
    assert "Requeued job" in logs and "Caught signal SIGUSR2" in logs, logs[-3000:]
    assert not (results.parent / "checkpoint").exists(), "a completed cell keeps no checkpoint"
