"""Benchmark: does ECoFLaP's zeroth-order ranking survive bfloat16? Spearman of bf16 scores vs float32.

With eps = 1e-3 a loss difference L(w + eps z) - L(w - eps z) is small next to bfloat16's rounding of
the perturbed weights and of every activation after them. This loads one model twice, in float32 (the
reference) and in bfloat16, scores both with the same directions z and samples, and prints the rank
correlation of the group scores (ECoFLaP's attention / MLP groups) and of the per-tensor scores, for
the bf16 model scored in its own dtype (`precision=model`) and in float32 (`precision=float32`, the
default). For scale, the first line is the float32 model against itself with other directions z (the
estimator's own sampling noise). Models: the toy zoo model (its calibration split) and a tiny random LLaVA-NeXT (its example).

    python benchmarks/bench_ecoflap_precision.py                 # zoo (16 samples) + tiny llava_next
    python benchmarks/bench_ecoflap_precision.py --samples 128   # every zoo calibration sample
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tamp.data.calib import build_calibration  # noqa: E402
from tamp.pipeline.engine import LayerwiseEngine  # noqa: E402
from tamp.sparsity.ecoflap import EcoFlapAllocation, EcoflapConfig  # noqa: E402

SEED = 42


def scores(model, adapter, samples, precision: str, estimator: str, seed: int = SEED) -> tuple[dict, dict, float]:
    """(group scores, per-tensor scores, seconds) of one scoring pass."""
    allocation = EcoFlapAllocation(EcoflapConfig(precision=precision, estimator=estimator))
    allocation.seed = seed
    engine = LayerwiseEngine(model, adapter, samples, progress=False)
    start = time.perf_counter()
    groups = allocation.importance(engine)
    return groups, allocation.tensor_scores, time.perf_counter() - start


def rho(a: dict, b: dict) -> float:
    keys = list(a)
    return float(spearmanr([a[k] for k in keys], [b[k] for k in keys]).statistic)


def compare(label: str, fp32: tuple, bf16: tuple, samples, estimator: str) -> None:
    """Print Spearman of bf16 (both precisions) against the float32 model."""
    ref_groups, ref_tensors, ref_s = scores(*fp32, samples, "model", estimator)
    print(f"{label} [{estimator}]: {len(ref_groups)} groups, {len(samples)} samples; float32 model {ref_s:.1f}s")
    groups, tensors, _ = scores(*fp32, samples, "model", estimator, seed=SEED + 1)
    line = f"  float32, other z (estimator noise): Spearman groups {rho(ref_groups, groups):+.3f}"
    print(line + (f", tensors {rho(ref_tensors, tensors):+.3f}" if tensors else ""))
    for precision in ("model", "float32"):
        groups, tensors, seconds = scores(*bf16, samples, precision, estimator)
        line = f"  bf16, precision={precision:7s}, same z: Spearman groups {rho(ref_groups, groups):+.3f}"
        if tensors:
            line += f", tensors {rho(ref_tensors, tensors):+.3f}"
        print(f"{line}  ({seconds:.1f}s)")


def zoo(num_samples: int, estimator: str) -> None:
    from tamp.zoo.cache import data_dir, load_zoo

    model32, processor, adapter32 = load_zoo("zoo", ROOT / "outputs/cache", "float32", progress=False)
    model16, _, adapter16 = load_zoo("zoo", ROOT / "outputs/cache", "bfloat16", progress=False)
    calib = {"name": "zoo", "source": "llava_json", "path": str(data_dir("zoo", ROOT / "outputs/cache") / "calib.json"),
             "num_samples": num_samples, "seed": SEED, "progress": False}
    samples = build_calibration(adapter32, calib)
    compare("zoo", (model32, adapter32), (model16, adapter16), samples, estimator)


def tiny(family: str, estimator: str) -> None:
    from tamp.models.tiny import build_tiny

    bundle = build_tiny(family, seed=0)
    samples = [bundle.example_sample(i) for i in range(len(bundle.examples()))]
    model16 = copy.deepcopy(bundle.model).to(torch.bfloat16)
    adapter16 = type(bundle.adapter)(model16, bundle.processor)
    compare(f"tiny {family}", (bundle.model, bundle.adapter), (model16, adapter16), samples, estimator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16, help="zoo calibration samples")
    parser.add_argument("--estimator", default="per_tensor", choices=("per_tensor", "joint"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    zoo(args.samples, args.estimator)
    tiny("llava_next", args.estimator)


if __name__ == "__main__":
    main()
