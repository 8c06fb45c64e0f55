"""A sweep's W&B project reads like the paper: group = the sweep, descriptive names, clean keys, Rel.%."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tamp.cli.report import main as report_main
from tamp.reporting.wandb_offline import find_offline_runs, load_offline_wandb, read_offline_run
from tamp.tracking.wandb_keys import clean_metric, group_name, rel_metrics, run_name, summary_metrics

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def test_clean_metric_names() -> None:
    assert clean_metric("exact_match,none") == "exact_match"
    assert clean_metric("acc,flexible-extract") == "acc_flexible-extract"
    assert clean_metric("acc") == "acc"


def test_run_names_say_model_method_and_sparsity() -> None:
    assert run_name("llava-hf/llama3-llava-next-8b-hf", "tamp", 0.5) == "llama3-llava-next-8b-hf/tamp/50%"
    assert run_name("tiny:llava", "wanda", 0.5, "2:4") == "tiny:llava/wanda/50%-2:4"
    assert run_name("/runs/x/model/", "dense", 0.0, dense=True) == "model/dense"
    assert run_name("m/n", "owl", 0.625) == "n/owl/62.5%"


def test_group_is_the_experiment_else_the_sweep(tmp_path: Path) -> None:
    assert group_name("table2", tmp_path) == "table2"
    assert group_name(None, tmp_path / "2026-01-01" / "10-00-00") == "2026-01-01/10-00-00"
    assert group_name(None, None) is None


def test_rel_and_summary_keys() -> None:
    dense = {"scores": {"a": {"acc,none": 0.8}, "b": {"em,none": 0.5}, "z": {"em,none": 0.0}},
             "primary_metric": {"a": "acc,none", "b": "em,none", "z": "em,none"}}
    pruned = {"status": "completed", "scores": {"a": {"acc,none": 0.4, "acc_stderr,none": 0.1},
                                                "b": {"em,none": 0.5}, "z": {"em,none": 0.2}},
              "primary_metric": dense["primary_metric"], "sparsity": {"target": 0.5, "achieved": 0.5}}
    rel = rel_metrics(pruned, dense)
    assert rel == pytest.approx({"rel/a": 50.0, "rel/b": 100.0, "rel/avg": 75.0})  # z: dense 0, no Rel.%
    keys = summary_metrics(pruned, dense)
    assert not [k for k in keys if "," in k]
    assert keys["scores/a/acc"] == 0.4 and keys["score/a"] == 0.4 and keys["rel/avg"] == pytest.approx(75.0)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """dense and magnitude 50% on the zoo model (dense scores are not 0, so Rel.% exists), W&B offline."""
    root = tmp_path_factory.mktemp("sweep") / "2026-01-01" / "10-00-00"
    cmd = [
        sys.executable, "-m", "tamp.run", "-m", f"hydra.sweep.dir={root}", "model=zoo_llava", "calib=zoo",
        "eval=zoo", "eval.tasks=[tamp_zoo_color,tamp_zoo_shape]", "eval.limit=4", "calib.num_samples=2",
        "runner=cpu", "runner.progress=false", "logger=wandb", "method=dense,magnitude",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_offline_runs_hold_group_names_and_rel(sweep: Path) -> None:
    runs = {r.name: r for r in map(read_offline_run, find_offline_runs([sweep]))}
    assert set(runs) == {"zoo/dense", "zoo/magnitude/50%"}
    assert {r.group for r in runs.values()} == {"2026-01-01/10-00-00"}  # an ad-hoc sweep: its folder
    assert all(r.state == "finished" for r in runs.values())
    pruned, dense = runs["zoo/magnitude/50%"].summary, runs["zoo/dense"].summary
    assert not [k for k in pruned if "," in k]  # raw lmms-eval keys live only under summary["results"]
    assert dense["rel/avg"] == pytest.approx(100.0)
    expected = [100 * pruned[f"score/{t}"] / dense[f"score/{t}"] for t in ("tamp_zoo_color", "tamp_zoo_shape")]
    assert [pruned["rel/tamp_zoo_color"], pruned["rel/tamp_zoo_shape"]] == pytest.approx(expected)
    assert pruned["rel/avg"] == pytest.approx(sum(expected) / 2)


def test_report_reads_offline_runs_like_results_files(sweep: Path, tmp_path: Path) -> None:
    assert report_main([str(sweep), "--out", str(tmp_path / "files")]) == 0
    assert report_main(["--wandb-dir", str(sweep), "--group", "2026-01-01/10-00-00",
                        "--out", str(tmp_path / "wandb")]) == 0
    files, wandb = ((tmp_path / d / "report.csv").read_text() for d in ("files", "wandb"))
    assert files == wandb
    assert len(load_offline_wandb([sweep])) == 2
    assert report_main(["--wandb-dir", str(sweep), "--group", "other", "--out", str(tmp_path / "x")]) == 1


def test_report_logs_a_summary_run_with_the_rel_table_and_plots(sweep: Path, tmp_path: Path) -> None:
    # as a user runs it: its own process, so no W&B session of an earlier test can leak into it
    cmd = [sys.executable, "-m", "tamp.report", str(sweep), "--out", str(tmp_path), "--wandb-log", "tamp"]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = map(read_offline_run, find_offline_runs([tmp_path]))
    assert (run.name, run.group, run.job_type) == ("report", "2026-01-01/10-00-00", "report")  # beside the cells
    assert run.summary["rel_table"]["_type"] == "table-file"
    assert {"plots/sparsity_vs_rel", "plots/sparsity_per_block"} <= set(run.summary)
    assert run.summary["avg_rel/zoo/dense/0"] == pytest.approx(100.0)
    assert "avg_rel/zoo/magnitude/0.5" in run.summary
    # the report's own run, logged into the sweep's folder, is never read back as a cell
    into_sweep = [sys.executable, "-m", "tamp.report", str(sweep), "--wandb-log", "tamp"]  # out: the sweep itself
    proc = subprocess.run(into_sweep, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(find_offline_runs([sweep])) == 3
    assert report_main(["--wandb-dir", str(sweep), "--out", str(tmp_path / "again")]) == 0
    assert len(load_offline_wandb([sweep])) == 2


def test_a_run_log_cut_short_is_named_by_its_folder_never_empty(sweep: Path, tmp_path: Path, capsys) -> None:
    source = next(p for p in find_offline_runs([sweep]) if read_offline_run(p).name == "zoo/dense")
    folder = tmp_path / source.name
    folder.mkdir()
    (log,) = source.glob("run-*.wandb")
    (folder / log.name).write_bytes(log.read_bytes()[:7])  # the W&B header only: no run record yet
    run = read_offline_run(folder)
    assert (run.name, run.complete) == (folder.name, False)
    assert report_main(["--wandb-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder) in err[0] and "run record" in err[0]
