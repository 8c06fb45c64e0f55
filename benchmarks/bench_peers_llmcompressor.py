"""The peer half of benchmarks/bench_peers.py: llm-compressor's oneshot on the saved model and token ids.

Runs in the peer's own environment (.venv-peers: llmcompressor and its torch), so it imports nothing
from tamp. Usage: `python bench_peers_llmcompressor.py WORKDIR METHOD --sparsity 0.5 --threads 1`;
it writes WORKDIR/masks_peer_METHOD.pt (`weight == 0` of every linear in the decoder layers) and prints
the wall and CPU time of the `oneshot` call as JSON on its last line.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

#: method -> (modifier, mask_structure); the names are bench_peers.METHODS'
METHODS = {
    "wanda": ("wanda", "0:0"),
    "wanda_2:4": ("wanda", "2:4"),
    "sparsegpt": ("sparsegpt", "0:0"),
    "sparsegpt_2:4": ("sparsegpt", "2:4"),
}
LAYER = "LlamaDecoderLayer"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdir", type=Path)
    p.add_argument("method", choices=list(METHODS))
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    kind, structure = METHODS[args.method]
    model = AutoModelForCausalLM.from_pretrained(args.workdir / "model", dtype=torch.float32).eval()
    ids = torch.load(args.workdir / "ids.pt")
    samples, tokens = ids.shape
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    if kind == "wanda":
        modifier = WandaPruningModifier(sparsity=args.sparsity, mask_structure=structure, targets=[LAYER])
    else:  # tamp's SparseGPT defaults: 128 columns a block, 0.01 * mean(diag H) added to the diagonal
        modifier = SparseGPTModifier(sparsity=args.sparsity, mask_structure=structure, targets=[LAYER],
                                     block_size=128, dampening_frac=0.01)
    start, cpu_start = time.perf_counter(), cpu_seconds()
    oneshot(
        model=model,
        dataset=dataset,
        recipe=modifier,
        num_calibration_samples=samples,
        max_seq_length=tokens,
        shuffle_calibration_samples=False,
        batch_size=1,
        pipeline="sequential",
        sequential_targets=[LAYER],
    )
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    masks = {
        f"{name}.{child}": linear.weight.detach() == 0
        for name, layer in model.named_modules() if type(layer).__name__ == LAYER
        for child, linear in layer.named_modules() if isinstance(linear, torch.nn.Linear)
    }
    torch.save(masks, args.workdir / f"masks_peer_{args.method}.pt")
    print(json.dumps({"wall_s": wall, "cpu_s": cpu}))


def cpu_seconds() -> float:
    """User + system CPU time of this process (bench_peers.cpu_seconds; tamp is not importable here)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
