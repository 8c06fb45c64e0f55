"""The "none" pruner: the dense reference goes through the same code and prunes nothing."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tamp.config import MethodConfig
from tamp.pruning.base import NM, Pruner
from tamp.pruning.registry import register_pruner


@register_pruner("none")
class NoPruner(Pruner):
    """The dense reference: plans and prunes nothing, so a dense run goes through the same code."""

    name = "none"
    needs_stats = False

    def __init__(self, cfg: MethodConfig | None = None) -> None:
        pass

    def planned_pruned(self, linear: nn.Linear, sparsity: float, nm: NM) -> int:
        return 0

    def prune(self, linear: nn.Linear, stats: Any, sparsity: float, nm: NM, name: str) -> torch.Tensor:
        return torch.zeros_like(linear.weight, dtype=torch.bool)
