"""A multirun ends with one summary line and a non-zero exit when a cell failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tamp.cli.sweep_summary import Cell, SweepSummary, find_cells, summary_line

REPO = Path(__file__).resolve().parents[1]
TARGET = "tamp.cli.sweep_summary.SweepSummary"
# the preflight rejects sparsity.target=1.5 before Hydra starts; off, the cell fails at run time as
# any cell can (a missing file, an OOM) and records it in its results.json
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "TAMP_PREFLIGHT": "0",
}


def _registered(compose_cfg) -> bool:
    cfg = compose_cfg([], hydra=True)
    return any(cb.get("_target_") == TARGET for cb in (cfg.hydra.get("callbacks") or {}).values())


def test_run_yaml_registers_the_callback(compose_cfg):
    assert _registered(compose_cfg), f"conf/run.yaml: add hydra.callbacks.sweep_summary._target_: {TARGET}"


def _cell(root: Path, name: str, results: dict | None, hydra_marker: bool = True) -> None:
    job = root / name
    if hydra_marker:
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text("[]\n")
    job.mkdir(parents=True, exist_ok=True)
    if results is not None:
        (job / "results.json").write_text(json.dumps(results))


def test_cells_are_read_from_their_results(tmp_path: Path):
    old = tmp_path / "9_old"  # a cell of an earlier multirun into the same directory
    _cell(tmp_path, "9_old", {"status": "failed", "error": "old"})
    past = time.time() - 3600
    for path in [old / "results.json", old / ".hydra" / "overrides.yaml"]:
        os.utime(path, (past, past))
    since = time.time() - 1
    _cell(tmp_path, "0_dense_0.0", {"status": "completed"})
    _cell(tmp_path, "1_owl_0.5", {"status": "failed", "error": "RuntimeError: CUDA out of memory\nmore"})
    _cell(tmp_path, "2_tamp_0.5", {"status": "running"})
    _cell(tmp_path, "10_wanda_0.5", None)  # killed before it wrote anything
    _cell(tmp_path, "3_ecoflap_0.5", {"status": "completed"}, hydra_marker=False)
    cells = find_cells(tmp_path, since)
    assert [c.name for c in cells] == [
        "0_dense_0.0",
        "1_owl_0.5",
        "2_tamp_0.5",
        "3_ecoflap_0.5",
        "10_wanda_0.5",
    ]
    assert summary_line(cells) == (
        "2/5 cells completed; failed: 1_owl_0.5 (RuntimeError: CUDA out of memory), "
        "2_tamp_0.5 (status 'running': the cell did not finish), 10_wanda_0.5 (no results.json written)"
    )
    assert summary_line([Cell("0", True)]) == "1/1 cells completed"


def test_callback_exits_non_zero_only_when_a_cell_failed(tmp_path: Path, capsys):
    from omegaconf import OmegaConf

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    callback = SweepSummary()
    callback.on_multirun_start(config)
    _cell(tmp_path, "0_wanda_0.5", {"status": "completed"})
    callback.on_multirun_end(config)
    assert capsys.readouterr().err == "1/1 cells completed\n"
    _cell(tmp_path, "1_wanda_0.6", {"status": "failed", "error": "ValueError: bad"})
    with pytest.raises(SystemExit) as exit_:
        callback.on_multirun_end(config)
    assert exit_.value.code == 1
    assert capsys.readouterr().err == "1/2 cells completed; failed: 1_wanda_0.6 (ValueError: bad)\n"


def test_sweep_with_a_failing_cell_prints_the_summary_and_exits_1(compose_cfg, tmp_path: Path):
    extra = [] if _registered(compose_cfg) else [f"+hydra.callbacks.sweep_summary._target_={TARGET}"]
    cmd = [
        sys.executable,
        "-m",
        "tamp.run",
        "-m",
        f"hydra.sweep.dir={tmp_path}",
        "sparsity.target=0.5,1.5",
        "calib.num_samples=2",
        "logger=none",
        "runner.progress=false",
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (
        "1/2 cells completed; failed: 1_wanda_1.5_seed42 (ValueError: sparsity.target=1.5 is out of range; "
        "valid: 0 <= target < 1)"
    )
    assert json.loads((tmp_path / "0_wanda_0.5_seed42" / "results.json").read_text())["status"] == "completed"


def test_the_summary_counts_cells_completed_before():
    cells = [Cell("0_wanda_0.5", True), Cell("1_wanda_0.6", True), Cell("2_wanda_0.7", False, "ValueError: bad")]
    assert summary_line(cells[:2], before=1) == "2/2 cells completed: 1 before, 1 now"
    assert summary_line(cells, before=1) == "2/3 cells completed: 1 before, 1 now; failed: 2_wanda_0.7 (ValueError: bad)"


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def test_a_sweep_run_again_runs_only_the_cell_that_failed(tmp_path: Path):
    """The same multirun after a fix: the completed cell is skipped, untouched; only the failed one runs."""
    sweep, ckpt = tmp_path / "sweep", tmp_path / "ckpt"
    mine = ckpt / "0.6"  # a person's folder where the second cell would save: that cell fails, nothing is lost
    mine.mkdir(parents=True)
    (mine / "notes.md").write_text("mine\n")
    cmd = [sys.executable, "-m", "tamp.run", "-m", f"hydra.sweep.dir={sweep}", "sparsity.target=0.5,0.6",
           f"runner.save_dir={ckpt}/${{sparsity.target}}", "calib.num_samples=1", "logger=none", "runner.progress=false"]
    first = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)  # TAMP_PREFLIGHT=0
    assert first.returncode == 1, first.stderr[-2000:]
    assert first.stderr.strip().splitlines()[-1].startswith(
        "1/2 cells completed; failed: 1_wanda_0.6_seed42 (SaveTargetRefused: runner.save_dir="), first.stderr[-2000:]
    assert (mine / "notes.md").read_text() == "mine\n"
    done = {**_tree(sweep / "0_wanda_0.5_seed42"), **{f"ckpt/{k}": v for k, v in _tree(ckpt / "0.5").items()}}
    mine.rename(tmp_path / "moved_away")  # the fix

    second = subprocess.run(cmd, cwd=REPO, env={**ENV, "TAMP_PREFLIGHT": "1"}, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stderr.strip().splitlines()[-1] == "2/2 cells completed: 1 before, 1 now"
    launched = second.stdout + second.stderr  # Hydra's launcher lists the jobs it starts: `#1 : sparsity.target=0.6`
    assert "#0 :" not in launched and "#1 : sparsity.target=0.6" in launched, launched[-2000:]
    assert {**_tree(sweep / "0_wanda_0.5_seed42"), **{f"ckpt/{k}": v for k, v in _tree(ckpt / "0.5").items()}} == done
    record = json.loads((sweep / "1_wanda_0.6_seed42" / "results.json").read_text())
    assert record["status"] == "completed" and (ckpt / "0.6" / "sparsity_manifest.json").exists()

    third = subprocess.run(cmd, cwd=REPO, env={**ENV, "TAMP_PREFLIGHT": "1"}, capture_output=True, text=True,
                           timeout=600)
    assert third.returncode == 0 and third.stderr.strip().splitlines()[-1] == "2/2 cells completed: 2 before, 0 now"
