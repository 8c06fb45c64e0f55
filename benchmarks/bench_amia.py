"""Micro-benchmark: tamp.tokens.amia.select_tokens against the slow baseline loop (benchmarks/amia_loop.py).

Random but realistic samples: image-like tokens (a few clusters around a shared direction, like patch
embeddings of one picture) followed by text-like tokens (spread out), outputs of width C = 1024, and an
attention row from a softmax with an attention sink on the first token. Both implementations must select
the same tokens; the table gives the best-of-N time of each (interleaved) and the speed-up.

    python benchmarks/bench_amia.py [--device cuda] [--sizes 500 1500 3000] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amia_loop import loop_select_tokens  # noqa: E402

from tamp.tokens.amia import select_tokens  # noqa: E402


def make_sample(
    num_tokens: int, width: int = 1024, image_fraction: float = 0.6, seed: int = 0, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(outputs [T, C], attention [T], modality_ids [T]) shaped like one LLaVA sample's linear output."""
    gen = torch.Generator().manual_seed(seed)
    num_image = int(num_tokens * image_fraction)
    num_text = num_tokens - num_image
    shared = torch.randn(width, generator=gen) * 2.0
    centres = shared + torch.randn(8, width, generator=gen) * 1.5
    cluster = torch.randint(0, 8, (num_image,), generator=gen)
    image = centres[cluster] + torch.randn(num_image, width, generator=gen)
    text = 0.5 * shared + torch.randn(num_text, width, generator=gen) * 1.5
    outputs = torch.cat([image, text])
    logits = torch.randn(num_tokens, generator=gen) * 1.5
    logits[0] += 8.0  # attention sink
    logits[-min(16, num_tokens) :] += 2.0  # recent text
    attention = torch.softmax(logits, dim=0)
    modality_ids = torch.cat(
        [torch.ones(num_image, dtype=torch.long), torch.zeros(num_text, dtype=torch.long)]
    )
    return outputs.to(device), attention.to(device), modality_ids.to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_pair(
    slow: Callable[[], torch.Tensor], fast: Callable[[], torch.Tensor], repeats: int, device: str
) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Best-of-`repeats` wall time of each, interleaved so that load from other processes hits both alike."""
    slow_result, fast_result = slow(), fast()  # warm-up
    slow_times, fast_times = [], []
    for _ in range(repeats):
        for fn, times in ((slow, slow_times), (fast, fast_times)):
            _sync(device)
            start = time.perf_counter()
            result = fn()
            _sync(device)
            times.append(time.perf_counter() - start)
            if fn is slow:
                slow_result = result
            else:
                fast_result = result
    return min(slow_times), min(fast_times), slow_result, fast_result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1500, 3000])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variant", default="paper", choices=["paper", "reference"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    print(f"device={args.device} C={args.width} variant={args.variant} threads={torch.get_num_threads()}")
    print(f"{'T':>6} {'selected':>9} {'loop (s)':>10} {'select_tokens (s)':>18} {'speed-up':>9}")
    for size in args.sizes:
        sample = make_sample(size, args.width, seed=size, device=args.device)
        t_loop, t_fast, ref, got = _time_pair(
            lambda s=sample: loop_select_tokens(*s, variant=args.variant),
            lambda s=sample: select_tokens(*s, variant=args.variant),
            args.repeats,
            args.device,
        )
        if not torch.equal(ref.cpu(), got.cpu()):
            raise AssertionError(f"T={size}: select_tokens and the loop selected different tokens")
        print(f"{size:>6} {got.numel():>9} {t_loop:>10.4f} {t_fast:>18.4f} {t_loop / t_fast:>8.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
