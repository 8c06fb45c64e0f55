"""Task code that calls sys.exit fails its cell, not the sweep: the next cell runs and the summary prints.

lmms-eval's videomme and egoschema utils call `sys.exit(...)` on a missing video. Without a guard the
SystemExit passes every `except Exception` and ends the whole multirun with no summary line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from paper_tasks import hf_home, write_local_tasks
from tiny_models import fresh_tiny

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true", "TAMP_PREFLIGHT": "0"}


def test_sys_exit_in_task_code_is_a_one_line_task_error(tmp_path, monkeypatch):
    """videomme's own utils on a local copy with one video missing: TaskExitError naming the video."""
    from tamp.eval.evaluate import TaskExitError, evaluate

    monkeypatch.setenv("HF_HOME", str(hf_home(tmp_path)))
    include = write_local_tasks(tmp_path, ["videomme"])
    missing = next((hf_home(tmp_path) / "videomme" / "data").glob("vid1.mp4"))
    missing.unlink()
    bundle = fresh_tiny("qwen2_5_omni")
    with pytest.raises(TaskExitError) as err:
        evaluate(bundle.model, bundle.processor, bundle.adapter, ["videomme"], include_paths=include, batch_size=1,
                 gen_kwargs={"max_new_tokens": 2}, bootstrap_iters=0)
    message = str(err.value)
    assert "\n" not in message and message.startswith("lmms-eval task code exited while scoring videomme: ")
    assert f"video path:{missing} does not exist" in message


SCRIPT = """
import sys
import tamp.cli.run_command as entry

real = entry.run

def run(cfg, run_dir, cache_dir=None):  # the first cell's code calls sys.exit, as task code may
    if cfg.seed == 1:
        sys.exit("video path:/data/videomme/data/x.mp4 does not exist, please check")
    return real(cfg, run_dir, cache_dir)

entry.run = run
sys.argv = ["tamp.run", *sys.argv[1:]]
entry.cli()
"""


def test_a_cell_that_exits_fails_alone_and_the_sweep_prints_its_summary(tmp_path: Path):
    cmd = [sys.executable, "-c", SCRIPT, "-m", f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=seed${seed}",
           "seed=1,2", "method=dense", "eval=none", "logger=none", "runner.progress=false"]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "1/2 cells completed; failed: seed1 (CellExit: the cell's code exited: video path:/data/videomme/data/x.mp4 "
        "does not exist, please check)"
    )
    assert json.loads((tmp_path / "seed2" / "results.json").read_text())["status"] == "completed"
    assert json.loads((tmp_path / "seed1" / "results.json").read_text())["status"] == "failed"
