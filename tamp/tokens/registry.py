"""Token selector name -> factory. A selector picks which tokens of a sample feed a linear's statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch

from tamp.registry import Registry

if TYPE_CHECKING:
    from tamp.config import TokensConfig
    from tamp.pipeline.context import SampleContext


class TokenSelector(Protocol):
    def select(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: SampleContext) -> torch.Tensor | None:
        """Indices of the tokens to count, or None for all of them."""
        ...


SELECTORS: Registry[TokenSelector] = Registry(
    "method.tokens.name",
    (
        "tamp.tokens.all_tokens",
        "tamp.tokens.amia_selector",
        "tamp.tokens.attention",
        "tamp.tokens.random_tokens",
        "tamp.tokens.modality",
    ),
)
register_selector = SELECTORS.register


def build_selector(cfg: TokensConfig) -> TokenSelector:
    return SELECTORS.build(cfg)
