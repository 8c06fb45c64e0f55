"""Every token counts (the original Wanda / SparseGPT calibration)."""

from __future__ import annotations

from tamp.core.config import TokensConfig
from tamp.tokens.registry import register_selector


@register_selector("all")
class AllTokens:
    #: the selection (none) depends on nothing: linears reading one input may share one statistic
    input_only = True

    def __init__(self, cfg: TokensConfig | None = None) -> None:
        self.cfg = cfg

    def select(self, name, x, z, ctx):
        return None
