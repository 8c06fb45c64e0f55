"""What offload costs in host <-> device copies, measured on CPU-simulated offload, scaled to LLaVA-NeXT-8B.

`runner.offload=true` keeps the model and the activation store in CPU memory and brings one decoder
block at a time to the device. Every move the engine makes goes through one counted door
(tamp.pipeline.transfer); on CPU the copies are no-ops but are counted as a GPU run would make them.

1. The tiny LLaVA-NeXT (2 blocks, 4 samples): copies and bytes with and without offload for wanda,
   sparsegpt, tamp and ecoflap, and the ratio offload / no offload.
2. The shape of LLaVA-NeXT-8B's decoder (32 blocks of 7 linears) at tiny width: the number of moves
   of each kind (block visits, hidden states, block kwargs, sample inputs) is measured at 2 and 4
   samples per method (it is exactly linear in the number of samples: checked at 6), extrapolated
   to 128 samples and multiplied by the 8B size of each kind (bf16 blocks of 218.1M parameters, fp32
   during ECoFLaP's float32 scoring; 2900-token hidden states, ...), giving bytes and the time at a
   host <-> device bandwidth (12 GB/s pageable, 25 GB/s pinned PCIe 4).

    python benchmarks/bench_offload.py [--samples 2,4] [--bandwidth 12]

Numbers are counts, not timings: they do not depend on the machine (the GPU node check,
benchmarks/gpu_node_check.py, compares them with the copies the CUDA profiler sees).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tamp.data.sample import CalibSample  # noqa: E402
from tamp.methods.components import as_prune_config  # noqa: E402
from tamp.methods.composed import ComposedMethod  # noqa: E402
from tamp.models.registry import get_adapter  # noqa: E402
from tamp.models.tiny import build_tiny  # noqa: E402
from tamp.pipeline.engine import LayerwiseEngine  # noqa: E402

METHODS = {
    "wanda": {"pruner": "wanda"},
    "sparsegpt": {"pruner": "sparsegpt"},
    "tamp": {"pruner": "wanda", "allocation": {"name": "das"}, "tokens": {"name": "amia"}},
    "ecoflap": {"pruner": "wanda", "allocation": {"name": "ecoflap"}},
}
GB = 1e9
print = functools.partial(print, flush=True)  # noqa: A001 - a line as soon as it is known

# LLaVA-NeXT-8B (llama3-llava-next-8b-hf): Llama-3-8B decoder, CLIP ViT-L/14-336, 128 samples x 2900 tokens
L8B, N8B, T8B, H8B, HEAD_DIM = 32, 128, 2900, 4096, 128
BLOCK_PARAMS = 2 * H8B * H8B + 2 * H8B * 1024 + 3 * H8B * 14336 + 2 * H8B  # q, o, k, v (GQA 8), MLP, norms
NON_BLOCK_PARAMS = 2 * 128256 * H8B + 303_507_456 + 21_004_288  # embeddings, LM head, vision tower, projector


def sizes_8b(dtype_bytes: int) -> dict[str, float]:
    """Bytes of one move of each kind for LLaVA-NeXT-8B with activations in `dtype_bytes` per value."""
    return {
        "block": BLOCK_PARAMS * dtype_bytes,
        "hidden": T8B * H8B * dtype_bytes,
        # rotary cos and sin [1, T, 128] in the activation dtype, position ids (int64); the causal mask
        # is None under sdpa without padding (batch 1)
        "kwargs": 2 * T8B * HEAD_DIM * dtype_bytes + T8B * 8,
        # input ids and attention mask (int64), pixel values of 5 anyres tiles (float32 from the processor)
        "inputs": 2 * T8B * 8 + 5 * 3 * 336 * 336 * 4,
        "ids": T8B * 8,
    }


def _structural_model(layers: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    return model, get_adapter(model)


def _text_samples(count: int, tokens: int = 12) -> list[CalibSample]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        ids = torch.randint(3, 64, (1, tokens), generator=gen)
        labels = ids.clone()
        labels[:, : tokens // 2] = -100
        out.append(CalibSample({"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                               torch.zeros(tokens, dtype=torch.long), labels))
    return out


def measure(model, adapter, samples, method: dict, offload: bool) -> dict[str, dict[str, dict[str, int]]]:
    """{"plan": summary, "all": summary} of the engine's transfers (plan = the scoring pass alone)."""
    cfg = as_prune_config({"method": method, "sparsity": {"target": 0.5}, "device": "cpu", "progress": False})
    composed = ComposedMethod.from_config(cfg)
    engine = LayerwiseEngine(model, adapter, samples, device="cpu", offload=offload, progress=False)
    phases: dict[str, dict] = {}
    plan = composed.plan

    def planned(eng):
        result = plan(eng)
        phases["plan"] = eng.transfers.summary()
        return result

    composed.plan = planned  # type: ignore[method-assign]
    engine.prune(composed)
    phases["all"] = engine.transfers.summary()
    return phases


def _moves(summary: dict, kind: str) -> int:
    return summary.get(kind, {}).get("moves", 0)


def tiny_table() -> None:
    print("## Tiny LLaVA-NeXT (2 blocks, 4 samples), CPU-simulated offload\n")
    print("| method | copies no offload | copies offload | ratio | MB no offload | MB offload | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, method in METHODS.items():
        row = []
        for offload in (False, True):
            bundle = build_tiny("llava_next", seed=0)
            samples = [bundle.example_sample(0) for _ in range(4)]
            row.append(measure(bundle.model, bundle.adapter, samples, method, offload)["all"]["total"])
        off, on = row
        print(f"| {name} | {off['copies']} | {on['copies']} | {on['copies'] / off['copies']:.2f} | "
              f"{off['bytes'] / 1e6:.2f} | {on['bytes'] / 1e6:.2f} | {on['bytes'] / off['bytes']:.2f} |")


def _line(counts: list[tuple[int, dict]], kind: str, phase: str, at: int) -> float:
    """Moves of `kind` in `phase` at `at` samples, on the line through the first two measurements."""
    (n0, a), (n1, b) = counts[0], counts[1]
    m0, m1 = _moves(a[phase], kind), _moves(b[phase], kind)
    return m0 + (m1 - m0) / (n1 - n0) * (at - n0)


def eight_b_table(sample_counts: list[int], bandwidth: float) -> None:
    print(f"\n## LLaVA-NeXT-8B shape ({L8B} blocks, {N8B} samples x {T8B} tokens), offload: what moves\n")
    print(f"block {BLOCK_PARAMS * 2 / GB:.3f} GB (bf16), hidden state {T8B * H8B * 2 / 1e6:.1f} MB (bf16); "
          f"time at {bandwidth:g} GB/s; no offload moves the model once ({(NON_BLOCK_PARAMS + L8B * BLOCK_PARAMS) * 2 / GB:.1f} GB) "
          "and each sample's inputs\n")
    print("| method | block visits | hidden-state moves | kwargs moves | GB moved | of which blocks | time | "
          "GB no offload | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    model_bytes = (NON_BLOCK_PARAMS + L8B * BLOCK_PARAMS) * 2
    for name, method in METHODS.items():
        counts = []
        for n in [*sample_counts, sample_counts[-1] + 2]:  # the last one checks the line
            model, adapter = _structural_model(L8B)
            counts.append((n, measure(model, adapter, _text_samples(n), method, offload=True)))
        check_n, checked = counts[-1]
        total = NON_BLOCK_PARAMS * 2.0  # the rest of the model goes to the device once
        moves: dict[str, float] = {}
        by_kind: dict[str, float] = {}
        for kind in ("block", "hidden", "kwargs", "inputs", "ids"):
            for phase in ("plan", "all"):
                predicted = _line(counts, kind, phase, check_n)
                assert abs(predicted - _moves(checked[phase], kind)) < 1e-9, (name, kind, phase)
            scoring = _line(counts, kind, "plan", N8B) if name == "ecoflap" else 0.0  # scored in float32
            moves[kind] = _line(counts, kind, "all", N8B)
            by_kind[kind] = (moves[kind] - scoring) * sizes_8b(2)[kind] + scoring * sizes_8b(4)[kind]
            total += by_kind[kind]
        extra_ids = 2 if name == "ecoflap" else 1  # ECoFLaP also moves the labels
        no_offload = model_bytes + N8B * (sizes_8b(2)["inputs"] + extra_ids * sizes_8b(2)["ids"])
        print(f"| {name} | {moves['block']:,.0f} | {moves['hidden']:,.0f} | {moves['kwargs']:,.0f} | "
              f"{total / GB:,.0f} | {by_kind['block'] / GB:,.0f} | {_duration(total / (bandwidth * GB))} | "
              f"{no_offload / GB:,.1f} | {total / no_offload:,.1f} |")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="2,4", help="sample counts measured on the 8B shape (a line is fitted)")
    parser.add_argument("--bandwidth", type=float, default=12.0, help="host <-> device GB/s for the time column")
    parser.add_argument("--skip-8b", action="store_true", help="only the tiny table")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny tensors: more threads only contend (20x slower on a loaded machine)
    tiny_table()
    if not args.skip_8b:
        eight_b_table([int(n) for n in args.samples.split(",")], args.bandwidth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
