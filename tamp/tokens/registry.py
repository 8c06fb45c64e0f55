"""Token selector name -> factory and settings. A selector picks which tokens of a sample feed a linear's statistics.

A selector is one module in tamp/tokens: `@register_selector("name", config=ItsSettings)` on its
class, where ItsSettings subclasses `tamp.core.config.TokensConfig`; the package walk finds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from tamp.core.config import TokensConfig
from tamp.core.registries import Registry, lazy_module

if TYPE_CHECKING:
    import torch
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    torch = lazy_module("torch")

if TYPE_CHECKING:
    from tamp.pipeline.context import SampleContext


class TokenSelector(Protocol):
    """Picks, per sample and linear, the tokens that feed the linear's statistic.

    Optional class attribute `input_only` (read with getattr, default False): True declares that
    `select(name, x, z, ctx)` depends on x and ctx alone, never on the linear's name or output z, so
    linears that read the very same input in a sample (q, k, v; gate, up) get the same rows and may share
    one statistic, accumulated once (tamp.methods.composed). A selector reading z (AMIA) must not declare it.
    """

    def select(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: SampleContext) -> torch.Tensor | None:
        """Indices of the tokens to count, or None for all of them."""
        ...


SELECTORS: Registry[TokenSelector] = Registry("token selector", "method.tokens.name", ("tamp.tokens",))
register_selector = SELECTORS.register


def selector_settings(value: TokensConfig | Any) -> TokensConfig:
    """Checked settings of the selector `value` names (a settings dataclass or a mapping)."""
    return SELECTORS.settings(value, TokensConfig, "method.tokens")


def build_selector(value: TokensConfig | Any) -> TokenSelector:
    return SELECTORS.build(selector_settings(value))
