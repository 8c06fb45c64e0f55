"""The researcher's loop: a SLURM submission from a login node, a machine's own
`local` config, a sweep stopped with Ctrl-C, and the names runs get."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from block_delay import with_block_delay
from omegaconf import OmegaConf

from tamp.cli.preflight import PreflightError, check_command, preflight
from tamp.tracking.run_names import RunName, name_of_config, seed_label

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
STUDY = ["-m", "hydra/launcher=slurm", "+experiment=table2_llava_next"]
LOCAL_CONFIG = """# @package _global_
defaults:
  - override /hydra/launcher: slurm
paths:
  data_dir: {data}
hydra:
  launcher:
    partition: gpu-a100
    account: my-lab
"""


def test_a_slurm_submission_is_checked_for_the_nodes_and_says_what_it_left_to_them(login_node) -> None:
    """Issue 26.2: from a login node without a GPU, `runner.accelerator=cuda` was refused (`use runner=cpu`)."""
    checked = preflight(STUDY, local=None)
    assert (checked.cells, checked.remote) == (7, "slurm")
    skipped = " | ".join(checked.skipped)
    assert "model.name=llava-hf/llama3-llava-next-8b-hf (not in this machine's Hugging Face cache)" in skipped
    assert "calib.path=data/LLaVA-NeXT-Data/llava_next_raw_format/llava_next_raw_format_processed.json (not found " \
           "here)" in skipped
    if not torch.cuda.is_available():
        assert "runner.accelerator=cuda (no CUDA device here)" in skipped
    note = checked.note()
    assert note.startswith("tamp: checked 7 cells for the machines of hydra/launcher=slurm") and "\n" not in note
    # what the config alone can tell is still checked, in one line, before anything is submitted
    with pytest.raises(PreflightError, match="unknown config key 'method.foo'"):
        preflight([*STUDY, "method.foo=1"], local=None)
    with pytest.raises(PreflightError, match="sparsity.target=1.5 is out of range"):
        preflight([*STUDY, "sparsity.target=1.5"], local=None)
    # the basic launcher runs here: this machine's devices count
    assert preflight(["-m", "method=wanda,tamp"], local=None).remote is None


def test_files_this_machine_sees_are_checked_for_a_remote_launcher_too(tmp_path: Path, login_node) -> None:
    bad = tmp_path / "calib.json"
    bad.write_text('[{"id": "a", "conversations": [')
    with pytest.raises(PreflightError, match=f"calibration file {bad} is not valid JSON"):
        preflight([*STUDY, f"calib.path={bad}"], local=None)
    # a checkpoint folder this machine does not see may be on the node's disk: left to the job, said so
    remote = preflight([*STUDY, "model.name=/node/scratch/ckpt"], local=None)
    assert "model.name=/node/scratch/ckpt (not found here)" in remote.skipped
    with pytest.raises(PreflightError, match="does not exist"):  # run here, the same name is an error
        check_command(["model.name=/node/scratch/ckpt"])


def _fake_sbatch(bin_dir: Path, log: Path) -> None:
    """An `sbatch` that records the script it is given and refuses it (nothing is queued here), and the `srun`
    and `sacct` that tamp and submitit look for to tell a SLURM machine."""
    bin_dir.mkdir()
    commands = {"sbatch": f'cat "$@" >> {log}\necho "sbatch: error: a test cluster queues nothing" >&2\nexit 1',
                "srun": "exit 1", "sacct": "exit 0"}
    for name, body in commands.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_a_local_config_sets_the_cluster_and_the_cli_submits_from_a_login_node(tmp_path: Path) -> None:
    """`conf/local/default.yaml` (git-ignored) picks SLURM, its partition and the data paths; `python -m tamp.run
    -m +experiment=...` then reaches sbatch with them instead of refusing the GPU config on a CPU machine."""
    local = tmp_path / "conf" / "local"
    local.mkdir(parents=True)
    (local / "default.yaml").write_text(LOCAL_CONFIG.format(data=tmp_path / "shared"))
    log = tmp_path / "sbatch.log"
    _fake_sbatch(tmp_path / "bin", log)
    env = {**ENV, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{ENV['PATH']}"}
    cmd = [sys.executable, "-m", "tamp.run", "-m", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
           "+experiment=table2_llava_next", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert "no CUDA device is present" not in proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("tamp: checked")]
    assert len(notes) == 1 and "hydra/launcher=slurm" in notes[0], proc.stderr[-3000:]
    assert f"calib.path={tmp_path / 'shared'}/LLaVA-NeXT-Data" in notes[0]  # the local config's data_dir
    script = log.read_text()
    assert "#SBATCH --partition=gpu-a100" in script and "#SBATCH --account=my-lab" in script
    assert "#SBATCH --array=0-6" in script  # the study's 7 cells, one array job each
    assert proc.returncode != 0 and "a test cluster queues nothing" in proc.stderr  # refused, and said so


def test_the_local_group_is_optional_and_git_ignored(compose_cfg) -> None:
    assert compose_cfg([], hydra=True).hydra.launcher._target_.endswith("BasicLauncher")
    ignored = subprocess.run(["git", "check-ignore", "conf/local/default.yaml"], cwd=REPO, capture_output=True)
    assert ignored.returncode == 0, "conf/local/default.yaml must never be committed"


@pytest.mark.parametrize(
    ("overrides", "folder"),
    [
        ([], "wanda_0.5_seed42"),
        (["method=dense", "sparsity.target=0.6"], "dense"),  # the reference prunes nothing: no target
        (["method=das", "method.tokens.name=random", "sparsity.target=0.6", "seed=1"], "das+tokens=random_0.6_seed1"),
        (["method=das", "method/tokens=attention"], "das+tokens=attention_0.5_seed42"),
        (["method=sparsegpt", "sparsity=nm_2_4"], "sparsegpt_0.5_2-4_seed42"),
        (["method=tamp", "calib.seed=7", "seed=3"], "tamp_0.5_seed3-calib.seed7"),
    ],
)
def test_sweep_folders_tell_the_cells_apart(compose_cfg, overrides: list[str], folder: str) -> None:
    """Issue 26.5: `3_das_0.6`, `4_das_0.6`, `5_das_0.6` were three token selectors; dense was `2_dense_0.6`."""
    cfg = compose_cfg(overrides, hydra=True)
    cfg.hydra.job.num = 3
    assert OmegaConf.select(cfg, "hydra.sweep.subdir") == f"3_{folder}"
    assert OmegaConf.select(cfg, "hydra.run.dir").endswith(f"_{folder}")
    assert name_of_config(cfg).folder() == folder


def test_seed_labels_and_wandb_names() -> None:
    assert seed_label({"seed": 1, "calib.seed": 1}) == 1
    assert seed_label({"seed": 1, "calib.seed": 7}) == "seed=1,calib.seed=7"
    assert RunName("tamp", 0.5, "2:4", 3).wandb("llava-hf/llava-v1.6") == "llava-v1.6/tamp/50%-2:4/seed3"


def test_an_interrupted_multirun_summarizes_the_cells_it_reached(tmp_path: Path, capsys) -> None:
    from tamp.cli.sweep_summary import SweepSummary, summarize_interrupted

    assert not summarize_interrupted()  # no multirun in progress: nothing to say
    summary = SweepSummary()
    summary.on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    for name, status in (("0_wanda_0.5_seed42", "completed"), ("1_tamp_0.5_seed42", "interrupted")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"status": status}))
    assert summarize_interrupted()
    assert capsys.readouterr().err.splitlines() == [
        "1/2 cells completed; failed: 1_tamp_0.5_seed42 (status 'interrupted': the cell did not finish)",
    ]
    assert SweepSummary.active is None and not summarize_interrupted()


@pytest.mark.slow
def test_a_sweep_stopped_with_ctrl_c_prints_its_summary_line(tmp_path: Path) -> None:
    """Issue 26.4: Ctrl-C ended a multirun with a traceback and no summary."""
    cmd = [sys.executable, "-m", "tamp.run", "-m", f"hydra.sweep.dir={tmp_path}", "model=tiny_llava", "logger=none",
           "method=sparsegpt,wanda", "runner.progress=false", "calib.num_samples=4"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=with_block_delay(ENV, 30),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    progress = tmp_path / "0_sparsegpt_0.5_seed42" / "checkpoint" / "progress.json"
    deadline = time.time() + 240
    while not (progress.exists() and json.loads(progress.read_text())["completed_blocks"] >= 1):
        assert proc.poll() is None and time.time() < deadline, "the sweep ended before it could be interrupted"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    assert lines[-2].startswith("tamp: interrupted by SIGINT; results.json says \"interrupted\""), err[-2000:]
    assert lines[-1].startswith("0/") and ("failed: 0_sparsegpt_0.5_seed42 (status 'interrupted': the cell did not "
                                           "finish)") in lines[-1], err[-2000:]
    assert "Traceback" not in err
