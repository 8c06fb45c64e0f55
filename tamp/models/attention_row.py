"""Llama-style last-row attention: the default `FamilyAdapter.last_row_attention` (AMIA's `a`).

The block's own attention probabilities of the last query row, averaged over heads, recomputed from
what the block was called with instead of asking the model for `output_attentions` (which would force
eager attention and a T x T matrix per head). Only the last query row is needed: q for one position,
k for all, scores [heads, T].

Llama-style means: a pre-norm `input_layernorm`, `q_proj`/`k_proj` (optional per-head `q_norm`/`k_norm`),
grouped-query heads and a finished rotary (cos, sin) pair [1, T, head_dim] in the block's
`position_embeddings`. Every supported family (Llama, Qwen2, Qwen2-VL, Qwen2.5-VL, Qwen2.5-Omni) is
one: for the M-RoPE families transformers (5.x) already interleaves the time/height/width sections
into that pair, so the standard rotate-half application is exact. A family whose attention differs
overrides its adapter's `last_row_attention`.

The block's linears are called through `.forward` (not `__call__`) so the statistic hooks on them
do not fire a second time: this usually runs inside one of those hooks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


@torch.no_grad()
def llama_last_row_attention(
    block: nn.Module, attention: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]
) -> torch.Tensor:
    """[T] float32: last-row attention of `block` (whose self-attention is `attention`) on input `hidden` [1, T, C]."""
    if hidden.dim() == 3:
        if hidden.shape[0] != 1:
            raise ValueError(f"last_row_attention needs batch size 1, got hidden {tuple(hidden.shape)}")
        hidden = hidden[0]
    norm = getattr(block, "input_layernorm", None)
    if norm is None:
        raise ValueError(f"{type(block).__name__} has no input_layernorm: cannot recompute its attention "
                         "(not Llama-style: override the family adapter's last_row_attention)")
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
            f"position_embeddings cos has shape {tuple(cos.shape)} (un-merged M-RoPE); this family's adapter "
            "must override last_row_attention to merge its rotary sections"
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
