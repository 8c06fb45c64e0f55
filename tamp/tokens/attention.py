"""The Attention ablation (Table 4c): tokens whose last-row attention is above the sample's mean.

One selection per sample and block, shared by every linear of the block (memoised in the context).
"""

from __future__ import annotations

import torch

from tamp.config import TokensConfig
from tamp.pipeline.context import SampleContext
from tamp.tokens.attention_row import last_row_attention
from tamp.tokens.registry import register_selector

_CACHE_KEY = "attention_tokens"


def above_mean(attention: torch.Tensor) -> torch.Tensor:
    """Indices with a_i > mean(a); all indices when none is (uniform attention favours no token)."""
    index = torch.nonzero(attention > attention.mean()).view(-1)
    if index.numel() == 0:
        return torch.arange(attention.numel(), device=attention.device)
    return index


@register_selector("attention")
class AttentionSelector:
    def __init__(self, cfg: TokensConfig | None = None) -> None:
        self.cfg = cfg

    def select(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: SampleContext) -> torch.Tensor:
        index = ctx.cache.get(_CACHE_KEY)
        if index is None:
            index = ctx.cache[_CACHE_KEY] = above_mean(last_row_attention(ctx)).to(x.device)
        return index
