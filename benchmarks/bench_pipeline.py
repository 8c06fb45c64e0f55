"""Benchmark: wall time and peak memory of the layer-wise pipeline per method, on a LLaVA-NeXT-shaped model.

The model is a random Llama decoder (the language model of LLaVA-NeXT, scaled down by default: hidden
1024, 8 blocks, GQA 16 / 4 heads, SwiGLU 2816) run alone: its inputs are random hidden states
(`inputs_embeds`) whose first positions are marked as image tokens, the rest text, the last few text
positions answer labels. No vision tower runs; calibration cost after block 0's inputs is the same.

Each measurement runs in a fresh subprocess, so one method's allocations do not hide another's peak.
Peak memory: on CPU a background thread samples the process RSS (psutil) every few milliseconds and
reports the peak above the RSS before the phase (ru_maxrss is a process-lifetime high-water mark and
would hide anything below the model build's own peak); on GPU torch.cuda.max_memory_allocated above
the allocation before the phase.

    python benchmarks/bench_pipeline.py                       # scaled-down, CPU, 16 x 1200 tokens
    python benchmarks/bench_pipeline.py --samples 4           # quicker on a small CPU
    python benchmarks/bench_pipeline.py --device cuda --full  # LLaVA-NeXT-8B shape, 128 x 2900, bf16

On a CPU shared with other jobs, `--threads 1` (and `--repeats`) gives far steadier numbers: with more
torch threads than free cores, descheduled threads stall every parallel op and inflate both wall and
CPU time unevenly across phases.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHASES = ("forwards", "wanda", "tamp", "tamp_reference", "sparsegpt")
METHODS: dict[str, dict[str, Any]] = {
    "wanda": {"pruner": "wanda"},
    "tamp": {"pruner": "wanda", "allocation": {"name": "das"}, "tokens": {"name": "amia"}},
    "tamp_reference": {
        "pruner": "wanda",
        "allocation": {"name": "das", "variant": "reference"},
        "tokens": {"name": "amia", "variant": "reference"},
    },
    "sparsegpt": {"pruner": "sparsegpt"},
}
#: the pipeline's goals (issue 34): a phase's wall time at most GOAL times another's, on the idle box
GOALS = (("wanda", "forwards", 2.0), ("tamp", "wanda", 1.6), ("sparsegpt", "wanda", 2.0))
SHAPES = {
    "small": {"hidden": 1024, "blocks": 8, "heads": 16, "kv_heads": 4, "intermediate": 2816},
    "full": {"hidden": 4096, "blocks": 32, "heads": 32, "kv_heads": 8, "intermediate": 14336},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--full", action="store_true", help="LLaVA-NeXT-8B shape, 128 samples x 2900 tokens, bf16")
    p.add_argument("--samples", type=int, default=None, help="calibration samples (16; --full: 128)")
    p.add_argument("--tokens", type=int, default=None, help="tokens per sample (1200; --full: 2900)")
    p.add_argument("--image-fraction", type=float, default=0.92, help="leading positions marked image")
    p.add_argument("--blocks", type=int, default=None, help="override the number of decoder blocks")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: float32 on CPU, else bf16)")
    p.add_argument("--offload", action="store_true", help="keep blocks and activations on CPU between uses")
    p.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=1, help="runs per phase (interleaved); best wall time kept")
    p.add_argument("--worker", choices=PHASES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.samples = args.samples or (128 if args.full else 16)
    args.tokens = args.tokens or (2900 if args.full else 1200)
    args.dtype = args.dtype or ("float32" if args.device == "cpu" and not args.full else "bfloat16")
    return args


# ---------------------------------------------------------------------------------------------- model
def build(args: argparse.Namespace):
    """(model, adapter, samples): a random Llama decoder and hidden-state calibration samples."""
    import transformers as tf

    from tamp.data.sample import IMAGE, TEXT, CalibSample
    from tamp.models.decoder_lm import DecoderLMAdapter

    shape = dict(SHAPES["full" if args.full else "small"])
    if args.blocks:
        shape["blocks"] = args.blocks
    config = tf.LlamaConfig(
        vocab_size=32064,
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["blocks"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=max(4096, args.tokens),
        tie_word_embeddings=False,
    )
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the target dtype: no float32 copy of an 8B model
    try:
        with torch.device("cuda" if args.device.startswith("cuda") and not args.offload else "cpu"):
            model = tf.LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default)
    gen = torch.Generator().manual_seed(1)
    num_image = int(args.tokens * args.image_fraction)
    samples = []
    for _ in range(args.samples):
        embeds = (torch.randn(1, args.tokens, shape["hidden"], generator=gen) * 0.02).to(dtype)
        ids = torch.full((args.tokens,), TEXT, dtype=torch.long)
        ids[:num_image] = IMAGE
        labels = torch.full((1, args.tokens), -100, dtype=torch.long)
        labels[0, -32:] = torch.randint(0, config.vocab_size, (32,), generator=gen)
        samples.append(CalibSample(inputs={"inputs_embeds": embeds}, modality_ids=ids, labels=labels))
    return model, DecoderLMAdapter(model, None), samples, shape


# ---------------------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory above the level at start: CUDA allocator statistics or sampled process RSS."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self._stop = threading.Event()
        self._peak = 0
        self._base = 0

    def _sample(self) -> None:
        import psutil

        proc = psutil.Process()
        while not self._stop.is_set():
            self._peak = max(self._peak, proc.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            import psutil

            self._base = self._peak = psutil.Process().memory_info().rss
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self._peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()

    @property
    def delta_gib(self) -> float:
        return (self._peak - self._base) / 2**30


# ---------------------------------------------------------------------------------------------- phases
def run_phase(args: argparse.Namespace) -> dict[str, Any]:
    """Build, then time one phase under the memory monitor (inside a worker subprocess)."""
    import tamp
    from tamp.pipeline.engine import LayerwiseEngine

    if args.threads:
        torch.set_num_threads(args.threads)
    model, adapter, samples, shape = build(args)
    calls = _count_block_calls()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with PeakMemory(args.device) as mem:
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        if args.worker == "forwards":
            engine = LayerwiseEngine(
                model, adapter, samples, device=device, offload=args.offload, progress=False
            )
            store = engine.captured()
            for index in range(len(engine.blocks)):
                engine.forward_block(index, store)
            timings = {"capture_s": engine.timings.capture_s}
        else:
            config = {
                "method": METHODS[args.worker],
                "sparsity": {"target": 0.5},
                "device": args.device,
                "offload": args.offload,
                "progress": False,
            }
            report = tamp.prune(model, samples, config, adapter=adapter)
            timings = report.timings
        sync()
        wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    return {
        "phase": args.worker,
        "block_passes": calls[0] / len(samples),
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_gib": mem.delta_gib,
        "timings": timings,
        "shape": shape,
    }


def _count_block_calls() -> list[int]:
    """Count the engine's block forwards (one sample through one block): [calls], updated in place.

    Block passes (calls / samples) are the pipeline's unit of work: a method's floor against another
    is the ratio of its passes, and what a ratio has above that is the method's own work.
    """
    from tamp.pipeline import engine

    calls, run_block = [0], engine.run_block

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return run_block(*args, **kwargs)

    engine.run_block = counted
    return calls


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): less sensitive to other load than wall."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def spawn(args: argparse.Namespace, phase: str) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", phase, "--device", args.device]
    argv += ["--samples", str(args.samples), "--tokens", str(args.tokens), "--dtype", args.dtype]
    argv += ["--image-fraction", str(args.image_fraction)]
    if args.full:
        argv.append("--full")
    if args.offload:
        argv.append("--offload")
    if args.blocks:
        argv += ["--blocks", str(args.blocks)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{phase} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> str:
    shape = next(iter(results.values()))["shape"]
    num_image = int(args.tokens * args.image_fraction)
    where = "GPU max_memory_allocated" if args.device.startswith("cuda") else "sampled RSS"
    lines = [
        f"Llama decoder (LLaVA-NeXT language model) hidden {shape['hidden']}, {shape['blocks']} blocks, "
        f"heads {shape['heads']}/{shape['kv_heads']}, SwiGLU {shape['intermediate']}, {args.dtype}, "
        f"random weights; run alone on hidden-state inputs: {args.samples} samples x {args.tokens} tokens "
        f"(first {num_image} marked image, the rest text); device {args.device}"
        f"{', offload' if args.offload else ''}, torch threads {args.threads or torch.get_num_threads()}; "
        f"peak memory = {where} above the level before the phase; best wall of {args.repeats} "
        "interleaved run(s) per phase, each in a fresh process.",
        "",
        "| phase | wall s | CPU s | allocation s | pruning pass s | block passes | peak GiB | wall vs wanda "
        "| wall vs forwards |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    wanda = results.get("wanda", {}).get("wall_s")
    forwards = results.get("forwards", {}).get("wall_s")
    for phase, r in results.items():
        vs_w = f"{r['wall_s'] / wanda:.2f}x" if wanda else "-"
        vs_f = f"{r['wall_s'] / forwards:.2f}x" if forwards else "-"
        plan, prune = r["timings"].get("plan_s"), r["timings"].get("prune_s")
        cols = [f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", _num(plan), _num(prune), f"{r['block_passes']:g}",
                f"{r['peak_gib']:.2f}"]
        lines.append(f"| {phase} | " + " | ".join([*cols, vs_w, vs_f]) + " |")
    lines.append("")
    for phase, base, goal in GOALS:
        if phase in results and base in results:
            ratio = results[phase]["wall_s"] / results[base]["wall_s"]
            passes = results[phase]["block_passes"] / results[base]["block_passes"]
            lines.append(
                f"{phase} / {base} = {ratio:.2f} (goal <= {goal}): {'met' if ratio <= goal else 'NOT met'}; "
                f"block passes alone {passes:.2f}"
            )
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_phase(args)))
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_pipeline: --device cuda but no CUDA device is present")
    runs: dict[str, list[dict[str, Any]]] = {phase: [] for phase in args.phases}
    for repeat in range(args.repeats):
        for phase in args.phases:
            r = spawn(args, phase)
            runs[phase].append(r)
            msg = f"[{repeat + 1}/{args.repeats}] {phase}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU"
            print(f"{msg}, peak {r['peak_gib']:.2f} GiB", file=sys.stderr, flush=True)
    results = {}
    for phase, rs in runs.items():  # best wall time (least disturbed by other load), worst peak
        results[phase] = {**min(rs, key=lambda r: r["wall_s"]), "peak_gib": max(r["peak_gib"] for r in rs)}
    print(table(args, results))


if __name__ == "__main__":
    main()
