"""Allocation name -> factory. An allocation turns the target sparsity into per-linear sparsities."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tamp.config import AllocationConfig
    from tamp.pipeline.engine import LayerwiseEngine


class Allocation(Protocol):
    def plan(self, engine: LayerwiseEngine, target: float) -> dict[str, float]: ...


ALLOCATIONS: dict[str, Callable[[AllocationConfig], Allocation]] = {}
_MODULES = (
    "tamp.sparsity.uniform",
    "tamp.sparsity.das_allocation",
    "tamp.sparsity.owl_allocation",
    "tamp.sparsity.ecoflap",
)


def register_allocation(name: str):
    def wrap(factory):
        ALLOCATIONS[name] = factory
        return factory

    return wrap


def build_allocation(cfg: AllocationConfig) -> Allocation:
    for module in _MODULES:
        importlib.import_module(module)
    if cfg.name not in ALLOCATIONS:
        raise ValueError(f"method.allocation.name='{cfg.name}' is unknown; valid: {', '.join(sorted(ALLOCATIONS))}")
    return ALLOCATIONS[cfg.name](cfg)
