"""The block's last-row attention (AMIA's `a`) and the Attention ablation (Table 4c) that thresholds it.

`last_row_attention`: the block's own attention probabilities of the last query row, averaged over
heads, for the sample going through it, memoised per (sample, block). The family adapter computes it
(`FamilyAdapter.last_row_attention`, Llama-style by default: tamp.models.attention_row) from what the
block was called with (`ctx.block_input`, `ctx.block_kwargs`); a family whose attention differs
overrides it there, and nothing here knows any family's layout.

The Attention selector keeps the tokens whose last-row attention is above the sample's mean: one
selection per sample and block, shared by every linear of the block (memoised in the context).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tamp.core.config import TokensConfig
from tamp.core.registries import lazy_module
from tamp.tokens.registry import register_selector

if TYPE_CHECKING:
    import torch
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    torch = lazy_module("torch")

if TYPE_CHECKING:
    from tamp.pipeline.context import SampleContext

_ROW_CACHE_KEY = "last_row_attention"
_CACHE_KEY = "attention_tokens"


def last_row_attention(ctx: SampleContext) -> torch.Tensor:
    """[T] float32: head-averaged attention of the last position over all positions; memoised in ctx."""
    cached = ctx.cache.get(_ROW_CACHE_KEY)
    if cached is None:
        if ctx.adapter is None:
            raise ValueError("last_row_attention needs the model's family adapter in the sample context "
                             "(SampleContext.adapter): it computes the block's attention")
        cached = ctx.adapter.last_row_attention(ctx.block, ctx.block_input, ctx.block_kwargs)
        ctx.cache[_ROW_CACHE_KEY] = cached
    return cached


# --- the Attention ablation ---


def above_mean(attention: torch.Tensor) -> torch.Tensor:
    """Indices with a_i > mean(a); all indices when none is (uniform attention favours no token)."""
    index = torch.nonzero(attention > attention.mean()).view(-1)
    if index.numel() == 0:
        return torch.arange(attention.numel(), device=attention.device)
    return index


@register_selector("attention")
class AttentionSelector:
    #: the tokens above the mean of the block's last attention row: one selection per sample and block,
    #: the same for every linear (linears reading one input may share one statistic)
    input_only = True

    def __init__(self, cfg: TokensConfig | None = None) -> None:
        self.cfg = cfg

    def select(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: SampleContext) -> torch.Tensor:
        index = ctx.cache.get(_CACHE_KEY)
        if index is None:
            index = ctx.cache[_CACHE_KEY] = above_mean(last_row_attention(ctx)).to(x.device)
        return index
