"""The study path on a GPU node: a tiny model's sweep scored on the device and reported, per runner.

What a study on a cluster does, at the smallest size: `python -m tamp.run -m method=dense,wanda,tamp`
on tiny:llava_next (conf/model/tiny_llava_next.yaml, its own example conversations as calibration),
scored on a local copy of one real suite task (Table 2's AI2D: lmms-eval's own task code on two
documents, tests/paper_tasks.py), then `python -m tamp.report` on the sweep folder. Once per runner:

- cuda: `runner=gpu_offload` (blocks visit the GPU one at a time, the whole model is moved there to
  be scored) and `runner=ddp_gpu runner.devices=1` (Lightning's ddp script launcher, NCCL, bf16-true);
- cpu: `runner=cpu runner.offload=true` and `runner=ddp_cpu runner.devices=1` (how it is tested).

Each cell's results.json must say completed, name the device as where it was scored (`devices.eval`:
cuda:0 / cpu) and pruned, and hold the task's score; the report must write its markdown table (a row
per method), its CSV and its figures. One table row per runner, per cell and per report, with the
recorded devices and seconds.

    python benchmarks/gpu_study_path.py [--device cuda|cpu] [--out DIR]

From benchmarks/gpu_node_check.py: `check_study_path(args.device, out, record)`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
METHODS = ("dense", "wanda", "tamp")
#: Table 2's AI2D: image multiple choice scored by lmms-eval's regex filter (no judge, no video files)
TASK = "ai2d"
TARGET = 0.5  # conf/sparsity/unstructured.yaml's default: the pruned cells' sparsity
RUNNERS: dict[str, dict[str, list[str]]] = {
    "cuda": {"gpu_offload": ["runner=gpu_offload"], "ddp_gpu": ["runner=ddp_gpu", "runner.devices=1"]},
    "cpu": {"cpu_offload": ["runner=cpu", "runner.offload=true"], "ddp_cpu": ["runner=ddp_cpu", "runner.devices=1"]},
}
#: the smallest study: two calibration conversations, two documents, four answer tokens
COMMON = ["model=tiny_llava_next", "calib=tiny", "calib.num_samples=2", f"eval.tasks=[{TASK}]", "eval.limit=2",
          "eval.batch_size=1", "eval.max_new_tokens=4", "logger=none", "runner.progress=false"]
TIMEOUT_S = 240  # one multirun; a GPU node takes seconds (a hung NCCL init must not eat the node's time)

Record = Callable[..., None]


def local_task(root: Path) -> tuple[str, Path, tuple[str, ...]]:
    """(include path, HF_HOME, metric keys) of a two-document local copy of TASK under root."""
    sys.path.insert(0, str(REPO / "tests"))
    from paper_tasks import PAPER_TASKS, hf_home, write_local_tasks

    (include,) = write_local_tasks(root, [TASK])
    home = hf_home(root)
    home.mkdir(parents=True, exist_ok=True)
    return include, home, PAPER_TASKS[TASK].metrics


def environment(home: Path) -> dict[str, str]:
    """The subprocesses' environment: offline, W&B off, HF_HOME where the local task's utils look."""
    env = dict(os.environ)
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               WANDB_MODE="offline", WANDB_SILENT="true", TOKENIZERS_PARALLELISM="false")
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny tensors: threads only contend
    return env


def run_sweep(runner: list[str], include: str, sweep: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """One multirun of METHODS with this runner into `sweep`, a folder that does not exist yet (a finished
    cell there would be skipped by the sweeper)."""
    cmd = [sys.executable, "-m", "tamp.run", "-m", f"method={','.join(METHODS)}", *COMMON, *runner,
           f"eval.include_paths=['{include}']", f"paths.output_dir={sweep.parent / 'outputs'}",
           f"hydra.sweep.dir={sweep}"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def score(scores: dict[str, Any], metrics: tuple[str, ...]) -> dict[str, float | None]:
    """The task's metrics as results.json holds them (a key may drop lmms-eval's ',none' filter suffix)."""
    task = scores.get(TASK, {})
    return {m: task.get(m, task.get(m.removesuffix(",none"))) for m in metrics}


def check_cell(label: str, saved: dict[str, Any], device: str, offload: bool, metrics: tuple[str, ...],
               record: Record) -> None:
    """A cell completed, was scored (and pruned) on the device, and holds the task's finite score."""
    devices = saved.get("devices") or {}
    expected = "cuda:0" if device == "cuda" else "cpu"
    method = saved.get("method", {}).get("name")
    values = score(saved.get("scores") or {}, metrics)
    prune = devices.get("prune")
    pruned = method != "dense"
    timings = saved.get("timings") or {}
    ok = (saved.get("status") == "completed" and devices.get("eval") == expected
          and devices.get("offload") is offload
          and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values.values())
          and (str(prune).split(":")[0] == device if pruned else prune is None)
          and abs(saved.get("sparsity", {}).get("achieved", -1) - (TARGET if pruned else 0.0)) < 1e-3)
    details = {"status": saved.get("status"), "eval": devices.get("eval"), "prune": prune,
               "offload": devices.get("offload"), "sparsity": saved.get("sparsity", {}).get("achieved"),
               "score": values, "total_s": round(timings.get("total_s", float("nan")), 2),
               "eval_s": round(timings.get("eval_s", float("nan")), 2)}
    if saved.get("error"):
        details["error"] = str(saved["error"])[-500:]
    record(label, ok, **details)


def check_report(label: str, sweep: Path, env: dict[str, str], record: Record) -> None:
    """`python -m tamp.report <sweep>` writes report.md (a row per method), report.csv and its figures."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tamp.report", str(sweep)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    seconds = round(time.perf_counter() - start, 1)
    owned = sweep / ".tamp_report.json"
    listed = sorted(json.loads(owned.read_text())["files"]) if owned.exists() else []
    markdown = (sweep / "report.md").read_text() if (sweep / "report.md").exists() else ""
    rows = [m for m in METHODS if f"| {m} |" in markdown]
    pngs = [p.name for p in sorted(sweep.glob("*.png")) if p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"]
    csv = sweep / "report.csv"
    ok = (proc.returncode == 0 and rows == list(METHODS) and csv.exists() and csv.stat().st_size > 0
          and bool(pngs) and {"report.md", "report.csv", *pngs} <= set(listed)
          and all((sweep / name).is_file() for name in listed))
    details: dict[str, Any] = {"files": listed, "method_rows": rows, "seconds": seconds}
    if proc.returncode != 0:
        details["error"] = proc.stderr.strip()[-500:]
    record(label, ok, **details)


def check_runner(device: str, name: str, runner: list[str], include: str, metrics: tuple[str, ...],
                 out: Path, env: dict[str, str], record: Record) -> None:
    """One runner's sweep: the multirun's summary line, each cell, the report."""
    sweep = out / f"study_{name}"
    start = time.perf_counter()
    try:
        proc = run_sweep(runner, include, sweep, env)
    except subprocess.TimeoutExpired:
        record(f"study/{name}", False, command=" ".join(runner), error=f"no answer in {TIMEOUT_S} s")
        return
    seconds = round(time.perf_counter() - start, 1)
    summary = [line for line in proc.stderr.splitlines() if "cells completed" in line]
    want = f"{len(METHODS)}/{len(METHODS)} cells completed"
    details: dict[str, Any] = {"command": " ".join(runner), "summary": summary, "seconds": seconds}
    if proc.returncode != 0:
        details["error"] = proc.stderr.strip()[-800:]
    record(f"study/{name}", proc.returncode == 0 and summary == [want], **details)

    cells = {}
    for path in sorted(sweep.glob("*/results.json")):
        saved = json.loads(path.read_text())
        cells[saved.get("method", {}).get("name")] = saved
    offload = "runner.offload=true" in runner or runner[0] == "runner=gpu_offload"
    for method in METHODS:
        if method not in cells:
            record(f"study/{name}/{method}", False, error=f"no results.json for {method} under {sweep}")
            continue
        check_cell(f"study/{name}/{method}", cells[method], device, offload, metrics, record)
    check_report(f"study/{name}/report", sweep, env, record)


def check_study_path(device: str, out: Path, record: Record) -> None:
    """The study path on `device` (cuda or cpu): both of its runners, every cell, the reports, all in a new
    folder under `out` (study_XXXX: nothing that was there is read, overwritten or deleted)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="study_", dir=Path(out).resolve()))
    start = time.perf_counter()
    try:
        include, home, metrics = local_task(out / "study_task")
    except Exception as err:  # a table row, not a traceback that ends the node's other checks
        record("study/local task", False, error=f"{type(err).__name__}: {err}"[:500])
        return
    record("study/local task", True, task=TASK, include=include, seconds=round(time.perf_counter() - start, 1))
    env = environment(home)
    for name, runner in RUNNERS[device].items():
        try:
            check_runner(device, name, runner, include, metrics, out, env, record)
        except Exception as err:
            record(f"study/{name}", False, error=f"{type(err).__name__}: {err}"[:500])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--out", default=None, help="folder for the local task, the sweeps and their reports")
    args = parser.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu for the CPU version", file=sys.stderr)
        return 2
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_study_path_"))
    results: list[dict[str, Any]] = []

    def record(check: str, ok: bool, **details: Any) -> None:
        results.append({"check": check, "ok": bool(ok), **details})
        shown = ", ".join(f"{k}={v}" for k, v in details.items())
        print(f"| {check} | {'PASS' if ok else 'FAIL'} | {shown} |", flush=True)

    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; out: {out}\n\n| check | result | details |\n|---|---|---|")
    start = time.perf_counter()
    check_study_path(args.device, out, record)
    failed = [r["check"] for r in results if not r["ok"]]
    seconds = round(time.perf_counter() - start, 1)
    (out / "gpu_study_path.json").write_text(json.dumps({"device": name, "seconds": seconds, "results": results,
                                                          "failed": failed}, indent=1, default=str))
    print(f"\n{len(results) - len(failed)}/{len(results)} checks passed in {seconds} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
