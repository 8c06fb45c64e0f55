"""Data-parallel calibration: each process takes a share of the samples, statistics are summed.

Every accumulator in tamp keeps sums and counts (never running means), so summing its tensors
across processes gives exactly what one process would hold with all the samples; the masks
computed afterwards are therefore the same on every process and for any number of processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import torch

from tamp.pipeline.engine import Reducer

T = TypeVar("T")


def shard(samples: Sequence[T], rank: int, world_size: int) -> list[T]:
    """This process's share: every world_size-th sample starting at its rank."""
    if world_size > len(samples):
        raise ValueError(
            f"runner.devices={world_size} processes but only {len(samples)} calibration samples; "
            "use fewer processes or more samples"
        )
    return list(samples[rank::world_size])


def fabric_reducer(fabric: Any) -> Reducer | None:
    """In-place all-reduce(sum) through Lightning Fabric's collective; None on one process."""
    if fabric.world_size <= 1:
        return None

    def reduce(tensors: list[torch.Tensor]) -> None:
        for tensor in tensors:
            # NCCL reduces device tensors only; statistics kept on CPU (offload) travel there and back
            on_device = tensor.to(fabric.device)
            reduced = fabric.all_reduce(on_device, reduce_op="sum")
            if reduced is not tensor:
                tensor.copy_(reduced.to(tensor.device))

    return reduce
