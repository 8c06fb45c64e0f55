"""The block's last-row attention (AMIA's `a`) and the Attention ablation (Table 4c) that thresholds it.

`last_row_attention`: the block's own attention probabilities of the last query row, averaged over
heads. Recomputed from what the block was called with (`ctx.block_input`, `ctx.block_kwargs`) instead of
asking the model for `output_attentions`, which would force eager attention and a T x T matrix per
head. Only the last query row is needed: q for one position, k for all, scores [heads, T].

Rotary embedding: every supported family (Llama, Qwen2, Qwen2-VL, Qwen2.5-VL, Qwen2.5-Omni) hands
its decoder layers a finished (cos, sin) pair [1, T, head_dim]; for the M-RoPE families
transformers (5.x) already interleaves the time/height/width sections into that pair, so the
standard rotate-half application is exact for all of them.

The block's linears are called through `.forward` (not `__call__`) so the statistic hooks on them
do not fire a second time: this function usually runs inside one of those hooks.

The Attention selector keeps the tokens whose last-row attention is above the sample's mean: one
selection per sample and block, shared by every linear of the block (memoised in the context).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tamp.config import TokensConfig
from tamp.registry import lazy_module, no_grad
from tamp.tokens.registry import register_selector

if TYPE_CHECKING:
    import torch
    from torch import nn
else:  # imported when first used: the registry walk imports this module (tamp.registry)
    torch, nn = lazy_module("torch"), lazy_module("torch.nn")

if TYPE_CHECKING:
    from tamp.pipeline.context import SampleContext

_ROW_CACHE_KEY = "last_row_attention"
_CACHE_KEY = "attention_tokens"


def last_row_attention(ctx: SampleContext) -> torch.Tensor:
    """[T] float32: head-averaged attention of the last position over all positions; memoised in ctx."""
    cached = ctx.cache.get(_ROW_CACHE_KEY)
    if cached is None:
        attention = _attention_module(ctx)
        cached = block_last_row_attention(ctx.block, attention, ctx.block_input, ctx.block_kwargs)
        ctx.cache[_ROW_CACHE_KEY] = cached
    return cached


def _attention_module(ctx: SampleContext) -> nn.Module:
    if ctx.adapter is not None and hasattr(ctx.adapter, "attention_module"):
        return ctx.adapter.attention_module(ctx.block)
    return ctx.block.self_attn


@no_grad
def block_last_row_attention(
    block: nn.Module, attention: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]
) -> torch.Tensor:
    """Last-row attention of `block` (whose self-attention is `attention`) on input `hidden` [1, T, C]."""
    if hidden.dim() == 3:
        if hidden.shape[0] != 1:
            raise ValueError(f"last_row_attention needs batch size 1, got hidden {tuple(hidden.shape)}")
        hidden = hidden[0]
    norm = getattr(block, "input_layernorm", None)
    if norm is None:
        raise ValueError(f"{type(block).__name__} has no input_layernorm: cannot recompute its attention")
    x = norm.forward(hidden)  # [T, C]
    head_dim = int(attention.head_dim)
    num_tokens = x.shape[0]

    q = attention.q_proj.forward(x[-1:]).view(1, -1, head_dim).transpose(0, 1)  # [H, 1, d]
    k = attention.k_proj.forward(x).view(num_tokens, -1, head_dim).transpose(0, 1)  # [Hkv, T, d]
    if hasattr(attention, "q_norm"):  # per-head norms (Qwen3-style) come before the rotation
        q = attention.q_norm.forward(q)
        k = attention.k_norm.forward(k)
    q, k = q.float(), k.float()

    cos, sin = _rotary(kwargs, num_tokens, head_dim)
    q = _rotate(q, cos[-1:], sin[-1:])
    k = _rotate(k, cos, sin)

    # GQA without repeating k: head h = kv * groups + g reads kv head h // groups (transformers' repeat_kv)
    num_kv = k.shape[0]
    q = q.reshape(num_kv, -1, head_dim)  # [Hkv, groups, d]
    scores = (q @ k.transpose(1, 2)).reshape(-1, num_tokens)  # [H, T]
    scores = scores * float(getattr(attention, "scaling", head_dim**-0.5))
    scores = _mask_last_row(scores, kwargs.get("attention_mask"), getattr(attention, "sliding_window", None))
    return torch.softmax(scores, dim=-1, dtype=torch.float32).mean(0)


def _rotary(kwargs: dict[str, Any], num_tokens: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) [T, head_dim] float32 from the block's `position_embeddings`."""
    pair = kwargs.get("position_embeddings")
    if pair is None:
        raise ValueError("block kwargs hold no position_embeddings: cannot recompute the rotary attention")
    cos, sin = pair
    if cos.dim() == 4:  # [3, B, T, d]: sections not merged by this transformers version
        raise ValueError(
            f"position_embeddings cos has shape {tuple(cos.shape)} (un-merged M-RoPE); this family needs "
            "an adapter hook to merge its rotary sections"
        )
    cos, sin = cos.reshape(-1, num_tokens, cos.shape[-1])[0], sin.reshape(-1, num_tokens, sin.shape[-1])[0]
    if cos.shape[-1] != head_dim:
        raise ValueError(f"rotary dim {cos.shape[-1]} != head_dim {head_dim}: partial rotary is unsupported")
    return cos.float(), sin.float()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Standard rotate-half RoPE: x * cos + rotate_half(x) * sin, broadcast over heads."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _mask_last_row(scores: torch.Tensor, mask: Any, sliding_window: int | None) -> torch.Tensor:
    """Apply the last query row of the block's mask (additive float or boolean keep-mask).

    None (sdpa / flash: causal implied) leaves the last row fully visible, except under a sliding
    window, which is then applied here: keys j with T - 1 - j < window stay visible.
    """
    num_tokens = scores.shape[-1]
    if isinstance(mask, torch.Tensor):
        row = mask.reshape(-1, mask.shape[-2], mask.shape[-1])[0, -1, -num_tokens:]
        if row.dtype == torch.bool:
            return scores.masked_fill(~row, float("-inf"))
        return scores + row.float()
    if sliding_window:
        positions = torch.arange(num_tokens, device=scores.device)
        hidden = (num_tokens - 1 - positions) >= int(sliding_window)
        return scores.masked_fill(hidden, float("-inf"))
    return scores


# --- the Attention ablation ---


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
