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

PHASES = ("forwards", "wanda", "tamp", "tamp_reference", "sparsegpt", "ecoflap")
#: the default phases (ECoFLaP's zeroth-order scoring is far slower: ask for it by name)
DEFAULT_PHASES = ("forwards", "wanda", "tamp", "tamp_reference", "sparsegpt")
OFFLOAD = "+offload"  # a phase name with this suffix runs with offload=True (e.g. tamp+offload)
METHODS: dict[str, dict[str, Any]] = {
    "wanda": {"pruner": "wanda"},
    "tamp": {"pruner": "wanda", "allocation": {"name": "das"}, "tokens": {"name": "amia"}},
    "tamp_reference": {
        "pruner": "wanda",
        "allocation": {"name": "das", "variant": "reference"},
        "tokens": {"name": "amia", "variant": "reference"},
    },
    "sparsegpt": {"pruner": "sparsegpt"},
    "ecoflap": {"pruner": "wanda", "allocation": {"name": "ecoflap"}},
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
    p.add_argument("--phases", nargs="+", default=list(DEFAULT_PHASES), type=_phase_name,
                   help=f"any of {', '.join(PHASES)}; a name ending in {OFFLOAD} runs with offload")
    p.add_argument("--ecoflap-samples", type=int, default=None,
                   help="samples ECoFLaP's zeroth-order estimate uses (method.allocation.num_samples; default all)")
    p.add_argument("--in-process", action="store_true",
                   help="every phase in this one process, the model built once and its weights restored "
                        "between phases (for CUDA: peak memory is read from the allocator; saves a model build "
                        "per phase at the 8B shape)")
    p.add_argument("--scale-to", type=int, default=None,
                   help="also print each wall time scaled linearly to this many samples")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=1, help="runs per phase (interleaved); best wall time kept")
    p.add_argument("--worker", type=_phase_name, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.samples = args.samples or (128 if args.full else 16)
    args.tokens = args.tokens or (2900 if args.full else 1200)
    args.dtype = args.dtype or ("float32" if args.device == "cpu" and not args.full else "bfloat16")
    return args


def _phase_name(value: str) -> str:
    base = value.removesuffix(OFFLOAD)
    if base not in PHASES:
        raise argparse.ArgumentTypeError(f"unknown phase {value!r}; valid: {', '.join(PHASES)}, each optionally "
                                         f"with {OFFLOAD}")
    return value


def phase_parts(phase: str, args: argparse.Namespace) -> tuple[str, bool]:
    """(method phase, offload) of a phase name: `tamp+offload` is tamp with offload; --offload sets every phase."""
    return phase.removesuffix(OFFLOAD), args.offload or phase.endswith(OFFLOAD)


# ---------------------------------------------------------------------------------------------- model
def random_llama(shape: dict[str, int], dtype: torch.dtype, device: str, positions: int, **config: Any):
    """A random LlamaForCausalLM of `shape` (vocab 32064 unless the shape says), created directly in `dtype`
    on `device`: no float32 copy of an 8B model. Also bench_sparse24's model."""
    import transformers as tf

    llama = tf.LlamaConfig(
        vocab_size=shape.get("vocab", 32064),
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["blocks"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=max(4096, positions),
        tie_word_embeddings=False,
        **config,
    )
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return tf.LlamaForCausalLM(llama).eval()
    finally:
        torch.set_default_dtype(default)


def build(args: argparse.Namespace):
    """(model, adapter, samples): a random Llama decoder and hidden-state calibration samples."""
    from tamp.data.sample import IMAGE, TEXT, CalibSample
    from tamp.models.decoder_lm import DecoderLMAdapter

    shape = dict(SHAPES["full" if args.full else "small"])
    if args.blocks:
        shape["blocks"] = args.blocks
    dtype = getattr(torch, args.dtype)
    model = random_llama(shape, dtype, "cuda" if args.device.startswith("cuda") and not args.offload else "cpu",
                         args.tokens)
    gen = torch.Generator().manual_seed(1)
    num_image = int(args.tokens * args.image_fraction)
    samples = []
    for _ in range(args.samples):
        embeds = (torch.randn(1, args.tokens, shape["hidden"], generator=gen) * 0.02).to(dtype)
        ids = torch.full((args.tokens,), TEXT, dtype=torch.long)
        ids[:num_image] = IMAGE
        labels = torch.full((1, args.tokens), -100, dtype=torch.long)
        labels[0, -32:] = torch.randint(0, model.config.vocab_size, (32,), generator=gen)
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
    if args.threads:
        torch.set_num_threads(args.threads)
    model, adapter, samples, shape = build(args)
    if phase_parts(args.worker, args)[1] and args.device.startswith("cuda"):
        model.to("cpu")  # offload: the model lives in host memory, one block at a time on the device
    return time_phase(args, args.worker, model, adapter, samples, shape, _count_block_calls())


def time_phase(
    args: argparse.Namespace, phase: str, model: Any, adapter: Any, samples: list[Any], shape: dict[str, int],
    calls: list[int],
) -> dict[str, Any]:
    """Time one phase on a freshly built (or restored) model: wall, CPU, peak memory, block passes."""
    import tamp
    from tamp.pipeline.engine import LayerwiseEngine

    name, offload = phase_parts(phase, args)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    calls[0] = 0
    transfers = None
    with PeakMemory(args.device) as mem:
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        if name == "forwards":
            engine = LayerwiseEngine(model, adapter, samples, device=device, offload=offload, progress=False)
            store = engine.captured()
            for index in range(len(engine.blocks)):
                engine.forward_block(index, store)
            timings = {"capture_s": engine.timings.capture_s}
        else:
            method = json.loads(json.dumps(METHODS[name]))
            if name == "ecoflap" and args.ecoflap_samples:
                method["allocation"]["num_samples"] = args.ecoflap_samples
            config = {"method": method, "sparsity": {"target": 0.5}, "device": args.device, "offload": offload,
                      "progress": False}
            report = tamp.prune(model, samples, config, adapter=adapter)
            timings, transfers = report.timings, report.transfers.get("total")
        sync()
        wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    result = {
        "phase": phase,
        "block_passes": calls[0] / len(samples),
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_gib": mem.delta_gib,
        "timings": timings,
        "shape": shape,
        "transfers": transfers,
    }
    if offload:
        result["bound"] = offload_bound(model, adapter, samples, name)
    return result


def offload_bound(model: Any, adapter: Any, samples: list[Any], name: str) -> dict[str, float]:
    """What offload promises to hold on the device at once (GiB): one decoder block, one sample's activations
    through it, one block's statistics (and, for AMIA, its T x T buffers; for SparseGPT, one factor of the
    largest Hessian). The measured peak should stay under the sum."""
    block = adapter.decoder_blocks()[0]
    linears = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
    param = next(block.parameters())
    size = param.element_size()
    tokens = max(s.num_tokens for s in samples)
    block_bytes = sum(p.numel() * p.element_size() for p in block.parameters())
    hidden = int(param.shape[-1]) if param.dim() > 1 else int(linears[0].in_features)
    # the block's working set for one sample: input, residual, norm and output [T, C], every linear's output
    activations = tokens * (4 * hidden + sum(m.out_features for m in linears)) * size
    inputs = sorted({m.in_features for m in linears})
    if name == "sparsegpt":
        statistics = sum(4 * d * d for d in inputs) + 4 * max(inputs) ** 2  # Hessians + one factor
    elif name == "forwards":
        statistics = 0
    else:
        statistics = sum(4 * m.in_features for m in linears)  # float32 squared norms
    selection = 3 * 4 * tokens * tokens if name.startswith("tamp") else 0
    parts = {"block": block_bytes, "activations": activations, "statistics": statistics, "selection": selection}
    gib = {k: v / 2**30 for k, v in parts.items()}
    gib["total"] = sum(gib.values())
    return gib


def run_in_process(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Every phase in this process: the model built once, its weights restored before each phase."""
    import gc

    if args.threads:
        torch.set_num_threads(args.threads)
    model, adapter, samples, shape = build(args)
    home = next(model.parameters()).device
    pristine = {k: v.detach().clone() for k, v in model.state_dict().items()}
    calls = _count_block_calls()
    runs: dict[str, list[dict[str, Any]]] = {phase: [] for phase in args.phases}
    for repeat in range(args.repeats):
        for phase in args.phases:
            model.to(home)
            model.load_state_dict(pristine)
            if phase_parts(phase, args)[1] and home.type == "cuda":
                model.to("cpu")
            gc.collect()
            if home.type == "cuda":
                torch.cuda.empty_cache()
            r = time_phase(args, phase, model, adapter, samples, shape, calls)
            runs[phase].append(r)
            _progress(repeat, args, phase, r)
            if args.json:  # after every phase: a run stopped by a time limit keeps what it measured
                _write_json(args, {p: min(rs, key=lambda x: x["wall_s"]) for p, rs in runs.items() if rs})
    return runs


def _write_json(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    Path(args.json).write_text(json.dumps({"device": device, "args": vars(args), "results": results}, indent=1))


def _progress(repeat: int, args: argparse.Namespace, phase: str, r: dict[str, Any]) -> None:
    msg = f"[{repeat + 1}/{args.repeats}] {phase}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU"
    print(f"{msg}, peak {r['peak_gib']:.2f} GiB", file=sys.stderr, flush=True)


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
    if args.ecoflap_samples:
        argv += ["--ecoflap-samples", str(args.ecoflap_samples)]
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
        "interleaved run(s) per phase, "
        + ("all in one process (weights restored between phases)." if args.in_process else "each in a fresh process."),
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
    if args.scale_to:
        lines.append(f"Scaled linearly to {args.scale_to} samples (x{args.scale_to / args.samples:g}; the passes, "
                     "the statistics and the token selection grow with the samples, the allocation's solve and "
                     "the pruning math do not, so this is an upper estimate): "
                     + ", ".join(f"{p} {r['wall_s'] * args.scale_to / args.samples / 60:.1f} min"
                                 for p, r in results.items()))
        lines.append("")
    cuda = args.device.startswith("cuda")
    for phase, r in results.items():
        bound = r.get("bound") if cuda else None  # on the CPU there is no device memory to bound
        if bound:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in bound.items() if k != "total")
            met = r["peak_gib"] <= bound["total"]
            lines.append(f"{phase}: peak {r['peak_gib']:.2f} GiB against one block + one sample + one block's "
                         f"statistics = {bound['total']:.2f} GiB ({parts}): {'met' if met else 'NOT met'}")
        moved = r.get("transfers") if cuda else None
        if moved and moved.get("bytes"):
            lines.append(f"{phase}: {moved['bytes'] / 2**30:.2f} GiB moved host <-> device in {moved.get('copies')} "
                         "copies (the engine's count, as benchmarks/bench_offload.py reports it)")
    if cuda and any(r.get("bound") or r.get("transfers") for r in results.values()):
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
    if args.in_process:
        runs = run_in_process(args)
    else:
        runs = {phase: [] for phase in args.phases}
        for repeat in range(args.repeats):
            for phase in args.phases:
                r = spawn(args, phase)
                runs[phase].append(r)
                _progress(repeat, args, phase, r)
    results = {}
    for phase, rs in runs.items():  # best wall time (least disturbed by other load), worst peak
        results[phase] = {**min(rs, key=lambda r: r["wall_s"]), "peak_gib": max(r["peak_gib"] for r in rs)}
    print(table(args, results))
    if args.json:
        _write_json(args, results)


if __name__ == "__main__":
    main()
