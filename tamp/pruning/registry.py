"""Pruner name -> factory and settings. A pruner turns a linear's statistics into a mask.

A pruner is one module in tamp/pruning holding its math, its statistic, its settings and its `Pruner`
subclass (tamp.pruning.base). A pruner with settings of its own declares them as a subclass of `tamp.core.config.MethodConfig` (they
sit directly under `method`, e.g. `method.blocksize` for SparseGPT) and registers it with
`@register_pruner("name", config=...)`; the package walk of tamp/pruning finds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tamp.core.config import MethodConfig
from tamp.core.registries import Registry

if TYPE_CHECKING:
    from tamp.pruning.base import Pruner

PRUNERS: Registry[Pruner] = Registry("pruner", "method.pruner", ("tamp.pruning",))
register_pruner = PRUNERS.register


def pruner_settings(value: MethodConfig | Any) -> MethodConfig:
    """The method's own keys checked as the settings of the pruner it names (allocation and tokens untouched)."""
    return PRUNERS.settings(value, MethodConfig, "method", name_key="pruner")


def build_pruner(method: MethodConfig | str) -> Pruner:
    """The pruner of a method's settings (or of a bare pruner name, with that pruner's defaults)."""
    settings = pruner_settings({"pruner": method}) if isinstance(method, str) else method
    return PRUNERS.build(settings, name_key="pruner")
