"""Every tiny family pruned on CUDA in bf16 against the same model pruned on CPU in float32 (a report, not a test).

For each family and method: finite logits after pruning, pruned == planned for every linear, and the
fraction of mask entries equal to the CPU float32 masks. ECoFLaP's allocation scores are compared by
rank correlation. Needs only torch, transformers and tamp's library (no Hydra, lmms-eval or W&B).

    python benchmarks/cuda_check.py [--families llava_next,qwen2_5_vl] [--methods wanda,tamp]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tamp  # noqa: E402
from tamp.models.tiny import build_tiny, tiny_names  # noqa: E402

METHODS = {
    "wanda": {"pruner": "wanda"},
    "sparsegpt": {"pruner": "sparsegpt"},
    "tamp": {"pruner": "wanda", "allocation": {"name": "das"}, "tokens": {"name": "amia"}},
    "ecoflap": {"pruner": "wanda", "allocation": {"name": "ecoflap"}},
}


def _spearman(a: list[float], b: list[float]) -> float:
    ra = torch.tensor(a).argsort().argsort().double()
    rb = torch.tensor(b).argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))


def _prune(family: str, method: dict, device: str, dtype: torch.dtype):
    bundle = build_tiny(family, seed=0)
    model = bundle.model.to(device=device, dtype=dtype)
    samples = [bundle.example_sample(i) for i in range(len(bundle.examples()))]
    cfg = {"method": method, "sparsity": {"target": 0.5}, "device": device, "progress": False, "keep_masks": True}
    start = time.perf_counter()
    report = tamp.prune(model, samples, cfg, adapter=bundle.adapter)
    seconds = time.perf_counter() - start
    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in samples[0].inputs.items()}
    with torch.no_grad():
        logits = model(**inputs).logits
    return report, bool(torch.isfinite(logits).all()), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(tiny_names()))
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 2
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    print("| family | method | finite logits (cuda bf16) | pruned == planned | masks equal to cpu fp32 "
          "(min / mean over linears) | allocation scores rank corr. | cuda s | cpu s |")
    print("|---|---|---|---|---|---|---:|---:|")
    failures = 0
    for family in args.families.split(","):
        for name in args.methods.split(","):
            method = METHODS[name]
            try:
                ref, _, cpu_s = _prune(family, method, "cpu", torch.float32)
                got, finite, cuda_s = _prune(family, method, "cuda", torch.bfloat16)
            except Exception as err:  # a report: one row per failure, then go on
                failures += 1
                print(f"| {family} | {name} | error: {type(err).__name__}: {str(err).splitlines()[0][:120]} |||||")
                continue
            exact = all(x.pruned == x.planned_pruned for x in got.linears)
            same = [float((got.masks[k].cpu() == ref.masks[k]).float().mean()) for k in ref.masks]
            scores = ""
            if ref.allocation_scores:
                keys = sorted(ref.allocation_scores)
                scores = f"{_spearman([ref.allocation_scores[k] for k in keys], [got.allocation_scores[k] for k in keys]):.3f}"
            failures += (not finite) + (not exact)
            print(f"| {family} | {name} | {finite} | {exact} | {min(same):.4f} / {sum(same) / len(same):.4f} | "
                  f"{scores} | {cuda_s:.1f} | {cpu_s:.1f} |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
