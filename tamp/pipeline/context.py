"""What a statistic observer learns about the sample being forwarded, besides X and Z."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn


@dataclass
class SampleContext:
    """One calibration sample going through one decoder block.

    `block_input` / `block_kwargs` are what the block was called with, so token selectors can
    recompute the block's own attention; `cache` is a per-(sample, block) memo shared by every
    linear of the block (e.g. the last-row attention computed once, not once per linear).
    """

    index: int  # the sample's position in the whole calibration set (the same on any number of processes)
    block_index: int
    block: nn.Module
    modality_ids: torch.Tensor
    labels: torch.Tensor | None
    block_input: torch.Tensor
    block_kwargs: dict[str, Any]
    adapter: Any
    cache: dict[str, Any] = field(default_factory=dict)


class LinearObserver(Protocol):
    """Receives every targeted linear's input X [T, C_in] and output Z [T, C_out] per sample."""

    def observe(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: SampleContext) -> None: ...
