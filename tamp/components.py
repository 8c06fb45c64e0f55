"""A pruning job's settings resolved through the component registries: one validation path.

Hydra's run schema (tamp.cli.schema), `tamp.prune(model, samples, dict)` and the tests all come here.
The method's own keys become the settings dataclass of the pruner it names, `method.allocation` and
`method.tokens` those of the allocation and selector they name, each checked by its own `check()`;
an unknown name or key is one line naming it and the valid ones.
"""

from __future__ import annotations

from dataclasses import is_dataclass
from typing import Any

from tamp.config import AllocationConfig, MethodConfig, PruneConfig, TokensConfig, from_dict
from tamp.pruning.registry import PRUNERS, pruner_settings
from tamp.registry import as_fields
from tamp.sparsity.registry import ALLOCATIONS, allocation_settings
from tamp.tokens.registry import SELECTORS, selector_settings


def resolve_method(value: MethodConfig | Any) -> MethodConfig:
    """Checked, typed method settings from a MethodConfig, a mapping or an OmegaConf node.

    Settings already resolved (each component's own settings type, a name) are only checked again,
    and returned as they are: a run resolves its method once and passes it down unchanged.
    """
    if _resolved(value):
        value.check()
        value.allocation.check()
        value.tokens.check()
        return value
    data, _ = as_fields(value)
    allocation = allocation_settings(data.pop("allocation", {}))
    tokens = selector_settings(data.pop("tokens", {}))
    method = pruner_settings(value if is_dataclass(value) else data)  # a typed node keeps its type
    method.allocation, method.tokens = allocation, tokens
    if not method.name:
        method.name = method.pruner
    return method


def _resolved(value: Any) -> bool:
    """Whether `value` is method settings typed as the registered settings of each component it names."""
    if not isinstance(value, MethodConfig) or not value.name:
        return False
    parts = ((PRUNERS, value, "pruner", MethodConfig), (ALLOCATIONS, value.allocation, "name", AllocationConfig),
             (SELECTORS, value.tokens, "name", TokensConfig))
    for registry, settings, key, base in parts:
        name = getattr(settings, key, None) if isinstance(settings, base) else None
        if name not in registry or type(settings) is not (registry.get(name).config or base):
            return False
    return True


def resolve(cfg: PruneConfig) -> PruneConfig:
    """`cfg` with its method resolved and its sparsity checked against the pruner (in place)."""
    cfg.method = resolve_method(cfg.method)
    cfg.sparsity.check(cfg.method.pruner)
    return cfg


def as_prune_config(config: PruneConfig | dict[str, Any] | Any | None) -> PruneConfig:
    """A checked PruneConfig from None (the defaults), a PruneConfig, a dict or an OmegaConf node."""
    if config is None:
        return resolve(PruneConfig())
    if isinstance(config, PruneConfig):
        return resolve(config)
    data, _ = as_fields(config)
    method = data.pop("method", {})
    cfg = from_dict(PruneConfig, data)
    cfg.method = method
    return resolve(cfg)
