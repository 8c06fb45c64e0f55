"""Allocation name -> factory and settings. An allocation turns the target sparsity into per-linear sparsities.

An allocation is one module in tamp/sparsity: `@register_allocation("name", config=ItsSettings)` on
its class, where ItsSettings subclasses `tamp.config.AllocationConfig`; the package walk finds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from tamp.config import AllocationConfig
from tamp.registry import Registry

if TYPE_CHECKING:
    from tamp.pipeline.engine import LayerwiseEngine


class Allocation(Protocol):
    def plan(self, engine: LayerwiseEngine, target: float) -> dict[str, float]: ...


ALLOCATIONS: Registry[Allocation] = Registry("allocation", "method.allocation.name", ("tamp.sparsity",))
register_allocation = ALLOCATIONS.register


def allocation_settings(value: AllocationConfig | Any) -> AllocationConfig:
    """Checked settings of the allocation `value` names (a settings dataclass or a mapping)."""
    return ALLOCATIONS.settings(value, AllocationConfig, "method.allocation")


def build_allocation(value: AllocationConfig | Any) -> Allocation:
    return ALLOCATIONS.build(allocation_settings(value))
