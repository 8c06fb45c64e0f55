"""A run whose output is not a terminal (SLURM, nohup) logs readable lines, end to end.

One log line per pruned block with elapsed time and ETA, in stderr and run.log; no carriage-return
progress bars; no W&B banner; no numexpr thread line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOGGING = "hydra/job_logging=tamp"


def _job_logging(compose_cfg) -> dict:
    return compose_cfg([], hydra=True).hydra.job_logging


def test_run_yaml_selects_the_job_logging(compose_cfg):
    logging_cfg = _job_logging(compose_cfg)
    assert logging_cfg.handlers.console.stream == "ext://sys.stderr", (
        "conf/run.yaml: override hydra/job_logging: tamp"
    )
    assert logging_cfg.loggers["numexpr.utils"].level == "WARNING"


def test_redirected_run_logs_blocks_and_nothing_noisy(compose_cfg, tmp_path: Path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WANDB_SILENT", "WANDB_QUIET", "TAMP_PROGRESS"))
    }
    for var in (
        "OMP_NUM_THREADS",
        "NUMEXPR_MAX_THREADS",
        "NUMEXPR_NUM_THREADS",
    ):  # numexpr's line needs them unset
        env.pop(var, None)
    env |= {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TAMP_PREFLIGHT": "0"}
    extra = [] if _job_logging(compose_cfg).handlers.console.stream == "ext://sys.stderr" else [LOGGING]
    cmd = [sys.executable, "-m", "tamp.run", f"hydra.run.dir={tmp_path}", "eval=tiny", "eval.limit=4",
           "calib.num_samples=2", "logger=wandb", *extra]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_log = (tmp_path / "run.log").read_text()
    for text in (proc.stderr, run_log):
        assert "pruning: block 1/2, elapsed" in text and "pruning: block 2/2, elapsed" in text
        assert "ETA" not in text  # two blocks: no rate (and no ETA) after the first
        assert f"resolved config (saved to {tmp_path / 'config_resolved.yaml'}):" in text
        assert "  sparsity: {target: 0.5, pattern: unstructured}" in text
    assert "W&B offline run" in run_log and "wandb sync" in run_log
    everything = proc.stdout + proc.stderr + run_log
    assert "\r" not in everything, "a progress bar was drawn into a non-terminal"
    assert not [line for line in everything.splitlines() if line.startswith("wandb:")]
    assert "NumExpr" not in everything
