"""A sweep's W&B project reads like the paper: group = the sweep, descriptive names, clean keys, Rel.%."""

from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from block_delay import with_block_delay

from tamp.cli.report_command import main as report_main
from tamp.reporting.wandb_offline import find_offline_runs, load_offline_wandb, read_offline_run
from tamp.tracking.wandb_keys import clean_metric, group_name, rel_metrics, run_name, summary_metrics

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def test_clean_metric_names() -> None:
    assert clean_metric("exact_match,none") == "exact_match"
    assert clean_metric("acc,flexible-extract") == "acc_flexible-extract"
    assert clean_metric("acc") == "acc"


def test_run_names_say_model_method_sparsity_and_seed() -> None:
    assert run_name("llava-hf/llama3-llava-next-8b-hf", "tamp", 0.5, seed=42) == "llama3-llava-next-8b-hf/tamp/50%/seed42"
    assert run_name("tiny:llava", "wanda", 0.5, "2:4", seed=1) == "tiny:llava/wanda/50%-2:4/seed1"
    assert run_name("/runs/x/model/", "dense", 0.0, dense=True, seed=1) == "model/dense"  # draws nothing
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


SEEDS = (1, 2)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """dense and wanda 60% on the zoo model over two seeds (dense scores are not 0, so Rel.% exists), W&B offline.

    Two calibration samples and 16 documents of two fragile tasks: the two seeds' draws give other masks
    and other scores (`seed` draws the calibration samples, so it changes these methods' masks).
    """
    root = tmp_path_factory.mktemp("sweep") / "2026-01-01" / "10-00-00"
    cmd = [
        sys.executable, "-m", "tamp.run", "-m", f"hydra.sweep.dir={root}", "model=zoo_llava_next", "calib=zoo",
        "eval=zoo", "eval.tasks=[tamp_zoo_count,tamp_zoo_position]", "eval.limit=16", "calib.num_samples=2",
        "runner=cpu", "logger=wandb", "method=dense,wanda", "sparsity.target=0.6",
        f"seed={','.join(map(str, SEEDS))}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (root / "stderr.txt").write_text(proc.stderr)
    return root


def _cells(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}


def test_offline_runs_hold_group_names_seeds_and_rel(sweep: Path) -> None:
    runs = [read_offline_run(p) for p in find_offline_runs([sweep])]
    assert sorted(r.name for r in runs) == ["zoo/dense", "zoo/dense", "zoo/wanda/60%/seed1", "zoo/wanda/60%/seed2"]
    assert {r.group for r in runs} == {"2026-01-01/10-00-00"}  # an ad-hoc sweep: its folder
    assert all(r.state == "finished" for r in runs)
    by_name = {r.name: r for r in runs}
    assert "seed=2" in by_name["zoo/wanda/60%/seed2"].tags
    pruned, dense = by_name["zoo/wanda/60%/seed1"].summary, by_name["zoo/dense"].summary
    assert not [k for k in pruned if "," in k]  # raw lmms-eval keys live only under summary["results"]
    assert dense["rel/avg"] == pytest.approx(100.0)
    tasks = ("tamp_zoo_count", "tamp_zoo_position")
    expected = [100 * pruned[f"score/{t}"] / dense[f"score/{t}"] for t in tasks]
    assert [pruned[f"rel/{t}"] for t in tasks] == pytest.approx(expected)
    assert pruned["rel/avg"] == pytest.approx(sum(expected) / 2)


def test_a_seed_sweep_draws_other_calibration_samples_and_the_report_averages_them(sweep: Path, tmp_path: Path) -> None:
    """Issue 26.1: `seed` is the calibration draw, as the official code's --seed; repeats are mean ± std."""
    cells = _cells(sweep)
    assert sorted(cells) == ["0_dense", "1_dense", "2_wanda_0.6_seed1", "3_wanda_0.6_seed2"]  # names tell them apart
    one, two = cells["2_wanda_0.6_seed1"], cells["3_wanda_0.6_seed2"]
    assert (one["config"]["calib"]["seed"], two["config"]["calib"]["seed"]) == SEEDS  # calib.seed follows seed
    assert one["calibration"]["seed"] == 1 and len(one["calibration"]["ids"]) == 2
    assert one["calibration"]["ids"] != two["calibration"]["ids"], "both seeds drew the same calibration records"
    tasks = ("tamp_zoo_count", "tamp_zoo_position")
    scores = [[c["scores"][t]["exact_match,none"] for t in tasks] for c in (one, two)]
    assert scores[0] != scores[1], "two calibration draws gave the same scores: the seed changed nothing"
    assert report_main([str(sweep), "--out", str(tmp_path)]) == 0
    markdown = (tmp_path / "report.md").read_text()
    assert "| Method | Sparsity | n |" in markdown and "seeds 1, 2." in markdown
    with open(tmp_path / "report.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["method"] == "wanda")
    assert (row["n"], row["seeds"]) == ("2", "1 2")
    for i, task in enumerate(tasks):
        assert float(row[f"score:{task}"]) == pytest.approx((scores[0][i] + scores[1][i]) / 2)
        assert float(row[f"score_std:{task}"]) == pytest.approx(statistics.stdev([scores[0][i], scores[1][i]]))
    assert f"| wanda | 60% | 2 | {float(row['score:tamp_zoo_count']):.3f} ± " in markdown


def test_the_cells_log_no_third_party_bars_and_their_resolved_config(sweep: Path) -> None:
    """Issue 26.7: off a terminal, no transformers / lmms-eval bars; the resolved config printed and saved."""
    stderr = (sweep / "stderr.txt").read_text()
    for bar in ("Loading weights", "Postprocessing", "Writing model shards", "\r"):
        assert bar not in stderr, bar
    assert stderr.count("resolved config (saved to ") == 4
    saved = yaml.safe_load((sweep / "3_wanda_0.6_seed2" / "config_resolved.yaml").read_text())
    assert saved["seed"] == 2 and saved["calib"]["seed"] == 2 and saved["method"]["name"] == "wanda"
    assert "  calib: {name: zoo, source: llava_json" in stderr  # one line per group


def test_report_reads_offline_runs_like_results_files(sweep: Path, tmp_path: Path) -> None:
    assert report_main([str(sweep), "--out", str(tmp_path / "files")]) == 0
    assert report_main(["--wandb-dir", str(sweep), "--group", "2026-01-01/10-00-00",
                        "--out", str(tmp_path / "wandb")]) == 0
    files, wandb = ((tmp_path / d / "report.csv").read_text() for d in ("files", "wandb"))
    assert files == wandb
    assert len(load_offline_wandb([sweep])) == 4
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
    assert "avg_rel/zoo/wanda/0.6" in run.summary
    # the report's own run, logged into the sweep's folder, is never read back as a cell
    into_sweep = [sys.executable, "-m", "tamp.report", str(sweep), "--wandb-log", "tamp"]  # out: the sweep itself
    proc = subprocess.run(into_sweep, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(find_offline_runs([sweep])) == 5
    assert report_main(["--wandb-dir", str(sweep), "--out", str(tmp_path / "again")]) == 0
    assert len(load_offline_wandb([sweep])) == 4


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


def test_only_the_last_attempt_of_a_run_directory_counts() -> None:
    from tamp.reporting.wandb_source import latest_attempts

    first, second, other, bare = ({"run_dir": d, "n": i} for i, d in enumerate(["/s/0_w", "/s/0_w", "/s/1_w", "wandb:p/x"]))
    kept = latest_attempts([second, first, other, bare], ["20260102_1000", "20260101_0900", "20260101_0900", ""])
    assert kept == [second, other, bare]  # the later start wins; runs without a directory all stay


@pytest.mark.slow
def test_a_resumed_cell_reads_from_wandb_as_its_last_attempt(tmp_path: Path) -> None:
    """Issue 26.4: after a successful resume the W&B report footnoted the interrupted attempt as a failed run."""
    run_dir = tmp_path / "cell"
    cmd = [sys.executable, "-m", "tamp.run", f"hydra.run.dir={run_dir}", "logger=wandb", "calib.num_samples=4",
           "runner.progress=false", "eval=tiny", "eval.limit=2"]
    slow = with_block_delay(ENV, 30)
    proc = subprocess.Popen(cmd, cwd=REPO, env=slow, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    progress = run_dir / "checkpoint" / "progress.json"
    deadline = time.time() + 240
    while not (progress.exists() and json.loads(progress.read_text())["completed_blocks"] >= 1):
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # SLURM pre-emption
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "tamp: interrupted by SIGTERM" in err, err[-2000:]
    assert json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"
    resumed = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    attempts = sorted(read_offline_run(p).state for p in find_offline_runs([run_dir]))
    assert attempts == ["failed", "finished"]  # one W&B run per attempt
    (result,) = load_offline_wandb([run_dir])
    assert result["status"] == "completed"
    assert report_main(["--wandb-dir", str(run_dir), "--out", str(tmp_path / "report")]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "did not complete" not in markdown and "interrupted" not in markdown and "failed" not in markdown
