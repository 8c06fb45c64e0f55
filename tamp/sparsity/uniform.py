"""Uniform allocation: every targeted linear gets the target sparsity."""

from __future__ import annotations

from tamp.core.config import AllocationConfig
from tamp.sparsity.registry import register_allocation


@register_allocation("uniform")
class UniformAllocation:
    uniform = True  # under an N:M pattern every linear gets the pattern itself

    def __init__(self, cfg: AllocationConfig | None = None) -> None:
        self.cfg = cfg

    def plan(self, model, target: float) -> dict[str, float]:
        return {name: target for linears in model.linears for name in linears}
