"""The "none" pruner: the dense reference goes through the same code and prunes nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tamp.core.config import MethodConfig
from tamp.core.registries import lazy_module
from tamp.pruning.base import NM, Pruner
from tamp.pruning.registry import register_pruner

if TYPE_CHECKING:
    import torch
    from torch import nn
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    torch, nn = lazy_module("torch"), lazy_module("torch.nn")


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
