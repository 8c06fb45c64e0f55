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


def compare(family: str, name: str, reference: str = "cpu", device: str = "cuda") -> dict:
    """One family and method pruned on `device` in bf16 against `reference` ("cpu" or "cuda") in float32
    (device="cpu" runs the same comparison on a machine without CUDA)."""
    method = METHODS[name]
    ref, _, ref_s = _prune(family, method, reference, torch.float32)
    got, finite, cuda_s = _prune(family, method, device, torch.bfloat16)
    same = [float((got.masks[k].cpu() == ref.masks[k].cpu()).float().mean()) for k in ref.masks]
    scores = None
    if ref.allocation_scores:
        keys = sorted(ref.allocation_scores)
        scores = _spearman([ref.allocation_scores[k] for k in keys], [got.allocation_scores[k] for k in keys])
    return {"family": family, "method": name, "finite": finite,
            "exact": all(x.pruned == x.planned_pruned for x in got.linears),
            "equal_min": min(same), "equal_mean": sum(same) / len(same), "rank_corr": scores,
            "cuda_s": cuda_s, "reference_s": ref_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(tiny_names()))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--reference", default="cpu", choices=["cpu", "cuda"],
                        help="where the float32 reference is pruned (cuda: bf16 against float32 on one device)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 2
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    print(f"| family | method | finite logits (cuda bf16) | pruned == planned | masks equal to {args.reference} fp32 "
          f"(min / mean over linears) | allocation scores rank corr. | cuda s | {args.reference} s |")
    print("|---|---|---|---|---|---|---:|---:|")
    failures = 0
    for family in args.families.split(","):
        for name in args.methods.split(","):
            try:
                row = compare(family, name, args.reference)
            except Exception as err:  # a report: one row per failure, then go on
                failures += 1
                print(f"| {family} | {name} | error: {type(err).__name__}: {str(err).splitlines()[0][:120]} |||||")
                continue
            scores = "" if row["rank_corr"] is None else f"{row['rank_corr']:.3f}"
            failures += (not row["finite"]) + (not row["exact"])
            print(f"| {family} | {name} | {row['finite']} | {row['exact']} | {row['equal_min']:.4f} / "
                  f"{row['equal_mean']:.4f} | {scores} | {row['cuda_s']:.1f} | {row['reference_s']:.1f} |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
