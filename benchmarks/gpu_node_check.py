"""The paper's studies as a GPU node runs them, on tiny models: evaluation placement, offload, processes.

What a cluster user relies on and a CPU-only machine cannot show. Each check prints a
table row and ends PASS or FAIL; the exit status is 1 if any check failed. `--device cpu` runs the
same script end to end on the CPU (offload simulated; the profiler comparison and the multi-GPU part
are skipped), which is how it is tested.

1. placement: a dense cell, a pruned cell and a pruned cell with offload (`runner=gpu` /
   `gpu_offload`, `eval=tiny`) through `tamp.cli.run_command.run`: results.json's `devices.eval` is the GPU,
   and every parameter and buffer is on it whenever generate() runs (offload leaves the blocks in
   CPU memory after pruning; the runner must move the whole model).
2. offload: wanda, sparsegpt, tamp (DAS + AMIA) and ecoflap pruned with and without
   `offload=True` on the device: identical masks and allocation scores; statistics (Wanda's squared
   norms, SparseGPT's Hessians) created on the device; the engine's counted host <-> device bytes
   against the copies the CUDA profiler records (Memcpy HtoD / DtoH larger than 16 bytes), and the
   ratio offload / no offload of both.
3. processes (2 or more GPUs only): `-m method=tamp,ecoflap,random_tokens,sparsegpt` through the CLI
   on 1 GPU and on 2 (`runner=ddp_gpu runner.devices=2`, Lightning's script launcher inside a
   multirun): same masks, one sweep folder, one summary line.

    python benchmarks/gpu_node_check.py [--device cuda|cpu] [--out DIR] [--skip processes]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from tamp.core.paths import CONF_DIR

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import tamp  # noqa: E402
from tamp.models.tiny import build_tiny  # noqa: E402

METHODS = {
    "wanda": {"pruner": "wanda"},
    "sparsegpt": {"pruner": "sparsegpt"},
    "tamp": {"pruner": "wanda", "allocation": {"name": "das"}, "tokens": {"name": "amia"}},
    "ecoflap": {"pruner": "wanda", "allocation": {"name": "ecoflap"}},
}
RESULTS: list[dict[str, Any]] = []


def record(check: str, ok: bool, **details: Any) -> None:
    RESULTS.append({"check": check, "ok": bool(ok), **details})
    shown = ", ".join(f"{k}={v}" for k, v in details.items())
    print(f"| {check} | {'PASS' if ok else 'FAIL'} | {shown} |", flush=True)


# ---------------------------------------------------------------------------------------- 1. placement
def check_placement(device: str, out: Path) -> None:
    from hydra import compose, initialize_config_dir

    from tamp.cli.run_command import run
    from tamp.cli.schema import register_schema
    from tamp.eval.lmms_model import TampLMM
    from tamp.eval.placement import model_devices

    runner = {"cuda": {"pruned": "runner=gpu", "offload": "runner=gpu_offload"},
              "cpu": {"pruned": "runner=cpu", "offload": "runner=cpu"}}[device]
    kinds = {
        "dense": ["method=dense", runner["pruned"]],
        "pruned": ["method=wanda", runner["pruned"], "runner.offload=false"],
        "offload": ["method=wanda", runner["offload"], "runner.offload=true"],
    }
    register_schema()
    expected = "cuda:0" if device == "cuda" else "cpu"
    for kind, overrides in kinds.items():
        seen: list[set[str]] = []
        original = TampLMM.generate_batch

        def spy(self, *args, _seen=seen, _original=original, **kwargs):
            _seen.append({str(d) for d in model_devices(self.model)} | {f"lm:{self.device}"})
            return _original(self, *args, **kwargs)

        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("run", overrides=[*overrides, "eval=tiny", "eval.limit=2", "calib.num_samples=2",
                                            "logger=none", "runner.progress=false"])
        run_dir = out / f"placement_{kind}"
        with mock.patch.object(TampLMM, "generate_batch", spy):
            run(cfg, run_dir)
        saved = json.loads((run_dir / "results.json").read_text())
        devices = saved.get("devices", {})
        wanted = {expected, f"lm:{expected}"}
        ok = saved["status"] == "completed" and devices.get("eval") == expected and bool(seen) \
            and all(s == wanted for s in seen)
        record(f"placement/{kind}", ok, recorded=devices.get("eval"), prune=devices.get("prune"),
               offload=devices.get("offload"), at_generate=sorted(set().union(*seen)) if seen else "never called")


# ---------------------------------------------------------------------------------------- 2. offload
def _prune(name: str, device: str, offload: bool, keep_masks: bool):
    bundle = build_tiny("llava_next", seed=0)
    samples = [bundle.example_sample(0) for _ in range(4)]
    cfg = {"method": METHODS[name], "sparsity": {"target": 0.5}, "device": device, "offload": offload,
           "progress": False, "keep_masks": keep_masks}
    return tamp.prune(bundle.model, samples, cfg, adapter=bundle.adapter)


def _profiled_copies(fn) -> tuple[Any, dict[str, int]]:
    """fn()'s result and the CUDA memcpy bytes (H2D, D2H) the profiler saw, copies over 16 bytes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        result = fn()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        trace = json.loads(path.read_text())
    totals = {"h2d": 0, "d2h": 0, "h2d_copies": 0, "d2h_copies": 0}
    for event in trace.get("traceEvents", []):
        name = str(event.get("name", ""))
        size = int((event.get("args") or {}).get("bytes", 0) or 0)
        if not name.startswith("Memcpy") or size <= 16:
            continue
        key = "h2d" if "HtoD" in name else "d2h" if "DtoH" in name else None
        if key:
            totals[key] += size
            totals[f"{key}_copies"] += 1
    return result, totals


def _statistics_devices(name: str, device: str) -> list[str]:
    """The devices the pruner's statistics (squared norms, Hessians) are created on, with offload."""
    from tamp.pruning.sparsegpt import HessianStats
    from tamp.pruning.wanda import SquaredNormStats

    created: list[str] = []
    classes = (SquaredNormStats, HessianStats)
    originals = {cls: cls.__init__ for cls in classes}

    def spying(cls):
        def init(self, *args, **kwargs):
            originals[cls](self, *args, **kwargs)
            created.append(str(self.sum.device))
        return init

    with mock.patch.object(classes[0], "__init__", spying(classes[0])), \
            mock.patch.object(classes[1], "__init__", spying(classes[1])):
        _prune(name, device, True, keep_masks=False)
    return created


def check_offload(device: str) -> None:
    for name in METHODS:
        reports = {off: _prune(name, device, off, keep_masks=True) for off in (False, True)}
        same = all(torch.equal(reports[False].masks[k], reports[True].masks[k]) for k in reports[False].masks)
        scores_same = reports[False].allocation_scores == reports[True].allocation_scores
        record(f"offload/{name}/masks", same and scores_same, masks_equal=same, allocation_scores_equal=scores_same)

        created = _statistics_devices(name, device)
        where = sorted(set(created))
        want = "cuda:0" if device == "cuda" else "cpu"
        record(f"offload/{name}/statistics on the device", where == [want], created_on=where)

        counted, profiled = {}, {}
        for off in (False, True):
            if device == "cuda":
                report, seen = _profiled_copies(lambda off=off, name=name: _prune(name, device, off, keep_masks=False))
                profiled[off] = seen
            else:
                report = _prune(name, device, off, keep_masks=False)
            counted[off] = report.transfers["total"]
        ratio = counted[True]["bytes"] / max(1, counted[False]["bytes"])
        details = {"counted_bytes": f"{counted[False]['bytes']} -> {counted[True]['bytes']}",
                   "counted_ratio": f"{ratio:.2f}",
                   "counted_copies": f"{counted[False]['copies']} -> {counted[True]['copies']}"}
        ok = counted[True]["bytes"] >= counted[False]["bytes"]
        if device == "cuda":
            for off in (False, True):
                seen = profiled[off]["h2d"] + profiled[off]["d2h"]
                details[f"profiled_bytes_{'offload' if off else 'plain'}"] = seen
                # every copy the profiler sees is one the engine counted (within 5%, small syncs aside)
                ok &= abs(seen - counted[off]["bytes"]) <= 0.05 * max(seen, counted[off]["bytes"])
            details["profiled_ratio"] = (
                f"{(profiled[True]['h2d'] + profiled[True]['d2h']) / max(1, profiled[False]['h2d'] + profiled[False]['d2h']):.2f}"
            )
        record(f"offload/{name}/copies", ok, **details)


# ---------------------------------------------------------------------------------------- 3. processes
def check_processes(out: Path) -> None:
    count = torch.cuda.device_count()
    if count < 2:
        record("processes/1 vs 2 GPUs", True, skipped=f"{count} GPU(s): needs 2 (tests/test_process_count.py "
               "covers 1 vs 2 processes on CPU)")
        return
    sys.path.insert(0, str(REPO / "tests"))
    from test_process_count import _masks_by_cell, write_calibration

    calib = write_calibration(out / "calib")
    presets = "tamp,ecoflap,random_tokens,sparsegpt"
    common = ["-m", f"method={presets}", "calib.source=llava_json", f"calib.path={calib}",
              f"calib.media_dir={calib.parent / 'media'}", "calib.num_samples=4", "eval=none", "logger=none",
              "runner.save_masks=true", "runner.progress=false", "model.dtype=float32"]
    procs = {}
    for label, runner in (("one", ["runner=gpu", "runner.precision=32-true"]),
                          ("two", ["runner=ddp_gpu", "runner.devices=2", "runner.precision=32-true"])):
        cmd = [sys.executable, "-m", "tamp.run", *common, *runner, f"hydra.sweep.dir={out / label}",
               f"paths.output_dir={out / label}_outputs"]
        procs[label] = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
        if procs[label].returncode != 0:
            record(f"processes/{label}", False, error=procs[label].stderr[-500:])
            return
    one, two = _masks_by_cell(out / "one"), _masks_by_cell(out / "two")
    summaries = [line for line in procs["two"].stderr.splitlines() if "cells completed" in line]
    for (preset, _), masks in one.items():
        other = next(m for (p, _), m in two.items() if p == preset)
        differ = sum(int((masks[k] != other[k]).sum()) for k in masks)
        record(f"processes/{preset}", differ == 0, mask_entries_differing=differ)
    record("processes/one sweep, one summary", summaries == ["4/4 cells completed"]
           and not (out / "two_outputs").exists(), summary_lines=summaries)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--out", default=None, help="folder for run folders and gpu_node_check.json")
    parser.add_argument("--skip", default="", help="comma-separated: placement, offload, processes")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu for the CPU version", file=sys.stderr)
        return 2
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_node_check_"))
    out.mkdir(parents=True, exist_ok=True)
    skip = {s for s in args.skip.split(",") if s}
    torch.set_num_threads(1)  # tiny models: CPU threads only contend
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; out: {out}\n\n| check | result | details |\n|---|---|---|")
    start = time.perf_counter()
    if "placement" not in skip:
        check_placement(args.device, out)
    if "offload" not in skip:
        check_offload(args.device)
    if "processes" not in skip and args.device == "cuda":
        check_processes(out)
    failed = [r["check"] for r in RESULTS if not r["ok"]]
    summary = {"device": name, "seconds": round(time.perf_counter() - start, 1), "results": RESULTS, "failed": failed}
    (out / "gpu_node_check.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"\n{len(RESULTS) - len(failed)}/{len(RESULTS)} checks passed in {summary['seconds']} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
