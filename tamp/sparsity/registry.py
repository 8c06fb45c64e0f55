"""Allocation name -> factory. An allocation turns the target sparsity into per-linear sparsities."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from tamp.registry import Registry

if TYPE_CHECKING:
    from tamp.config import AllocationConfig
    from tamp.pipeline.engine import LayerwiseEngine


class Allocation(Protocol):
    def plan(self, engine: LayerwiseEngine, target: float) -> dict[str, float]: ...


ALLOCATIONS: Registry[Allocation] = Registry(
    "method.allocation.name",
    (
        "tamp.sparsity.uniform",
        "tamp.sparsity.das_allocation",
        "tamp.sparsity.owl_allocation",
        "tamp.sparsity.ecoflap",
    ),
)
register_allocation = ALLOCATIONS.register


def build_allocation(cfg: AllocationConfig) -> Allocation:
    return ALLOCATIONS.build(cfg)
