"""Token selector name -> factory. A selector picks which tokens of a sample feed a linear's statistics."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from tamp.config import TokensConfig
    from tamp.pipeline.context import SampleContext


class TokenSelector(Protocol):
    #: True when the selector needs the block's dense attention (the engine does not care; docs only)
    def select(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: SampleContext) -> torch.Tensor | None:
        """Indices of the tokens to count, or None for all of them."""
        ...


SELECTORS: dict[str, Callable[[TokensConfig], TokenSelector]] = {}
_MODULES = (
    "tamp.tokens.all_tokens",
    "tamp.tokens.amia_selector",
    "tamp.tokens.attention",
    "tamp.tokens.random_tokens",
    "tamp.tokens.modality",
)


def register_selector(name: str):
    def wrap(factory):
        SELECTORS[name] = factory
        return factory

    return wrap


def build_selector(cfg: TokensConfig) -> TokenSelector:
    for module in _MODULES:
        importlib.import_module(module)
    if cfg.name not in SELECTORS:
        raise ValueError(f"method.tokens.name='{cfg.name}' is unknown; valid: {', '.join(sorted(SELECTORS))}")
    return SELECTORS[cfg.name](cfg)
