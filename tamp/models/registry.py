"""Family name -> adapter class, and the lookup from a loaded model or a config.

A family is one module in tamp/models with `@register_family` on its `FamilyAdapter` subclass; the
package walk of the family registry finds it (tamp.core.registries).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tamp.core.registries import Registry
from tamp.models.base import FamilyAdapter

FAMILIES: Registry[FamilyAdapter] = Registry(
    "model family", "model.family", ("tamp.models",), unknown="unknown model family '{name}'"
)


def register_family(cls: type[FamilyAdapter]) -> type[FamilyAdapter]:
    """Class decorator: registers the adapter under its `family` name."""
    return FAMILIES.register(cls.family)(cls)


def family_names() -> list[str]:
    return FAMILIES.names()


def adapter_class(family: str) -> type[FamilyAdapter]:
    return FAMILIES.get(family).factory  # type: ignore[return-value]


def family_for_model_type(model_type: str) -> str:
    entries = FAMILIES.discover().entries
    for name, entry in entries.items():
        if model_type in entry.factory.model_types:  # type: ignore[attr-defined]
            return name
    known = sorted({t for e in entries.values() for t in e.factory.model_types})  # type: ignore[attr-defined]
    raise ValueError(f"no tamp family handles model_type '{model_type}'; supported: {', '.join(known)}")


def get_adapter(model: nn.Module, processor: Any | None = None, family: str | None = None) -> FamilyAdapter:
    """The adapter for a loaded model: by explicit family name, else by its config's model_type."""
    name = family or family_for_model_type(model.config.model_type)
    return adapter_class(name)(model, processor)
