"""Allocation name -> factory and settings, and what an allocation may ask of the model it plans for.

An allocation is one module in tamp/sparsity: `@register_allocation("name", config=ItsSettings)` on
its class, where ItsSettings subclasses `tamp.core.config.AllocationConfig`; the package walk finds it.
Its `plan(model, target)` receives a `ScoringModel`: the targeted linears (names, shapes) and the
passes that gather statistics on the dense model. The layer-wise engine (tamp.pipeline) is one; an
allocation never imports the pipeline.
"""

from __future__ import annotations

from typing import Any, Protocol

from tamp.core.config import AllocationConfig
from tamp.core.protocols import BlockObserver, PerturbedUnit, ScoringModel
from tamp.core.registries import Registry

__all__ = ["ALLOCATIONS", "Allocation", "BlockObserver", "PerturbedUnit", "ScoringModel", "allocation_settings",
           "build_allocation", "register_allocation"]  # the protocols: declared in tamp.core.protocols


class Allocation(Protocol):
    def plan(self, model: ScoringModel, target: float) -> dict[str, float]: ...


ALLOCATIONS: Registry[Allocation] = Registry("allocation", "method.allocation.name", ("tamp.sparsity",))
register_allocation = ALLOCATIONS.register


def allocation_settings(value: AllocationConfig | Any) -> AllocationConfig:
    """Checked settings of the allocation `value` names (a settings dataclass or a mapping)."""
    return ALLOCATIONS.settings(value, AllocationConfig, "method.allocation")


def build_allocation(value: AllocationConfig | Any) -> Allocation:
    return ALLOCATIONS.build(allocation_settings(value))
