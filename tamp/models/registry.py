"""Family name -> adapter class, and the lookup from a loaded model or a config."""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from tamp.models.base import FamilyAdapter

FAMILIES: dict[str, type[FamilyAdapter]] = {}

#: modules that define adapters; imported lazily so `import tamp` stays cheap
_FAMILY_MODULES = (
    "tamp.models.llava",
    "tamp.models.llava_next",
    "tamp.models.llava_onevision",
    "tamp.models.qwen2_vl",
    "tamp.models.qwen2_5_omni",
    "tamp.models.decoder_lm",
)


def register_family(cls: type[FamilyAdapter]) -> type[FamilyAdapter]:
    FAMILIES[cls.family] = cls
    return cls


def _load_all() -> None:
    for module in _FAMILY_MODULES:
        importlib.import_module(module)


def family_names() -> list[str]:
    _load_all()
    return sorted(FAMILIES)


def adapter_class(family: str) -> type[FamilyAdapter]:
    _load_all()
    if family not in FAMILIES:
        raise ValueError(f"unknown model family '{family}'; valid: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[family]


def family_for_model_type(model_type: str) -> str:
    _load_all()
    for name, cls in FAMILIES.items():
        if model_type in cls.model_types:
            return name
    known = sorted({t for cls in FAMILIES.values() for t in cls.model_types})
    raise ValueError(f"no tamp family handles model_type '{model_type}'; supported: {', '.join(known)}")


def get_adapter(model: nn.Module, processor: Any | None = None, family: str | None = None) -> FamilyAdapter:
    """The adapter for a loaded model: by explicit family name, else by its config's model_type."""
    name = family or family_for_model_type(model.config.model_type)
    return adapter_class(name)(model, processor)
