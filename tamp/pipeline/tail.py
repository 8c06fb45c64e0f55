"""The model's loss from a block's input: forward blocks b..L-1, the final norm and the LM head.

Zeroth-order importance (ECoFLaP) perturbs block b and needs the loss twice per sample; everything
before b is unchanged, so the forward starts from b's cached input instead of the embeddings.
The loss is HF's causal-LM loss: position t predicts labels[t + 1], -100 is ignored, mean over the
counted positions in float32. Only the counted positions go through the norm and the LM head, so a
long sample with a short answer never materialises [T, vocab] logits (the norm is per row, so the
result is the same).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from tamp.data.sample import IGNORE_INDEX
from tamp.pipeline.capture import run_block

if TYPE_CHECKING:
    from tamp.models.base import FamilyAdapter
    from tamp.pipeline.engine import LayerwiseEngine

__all__ = ["IGNORE_INDEX", "answer_positions", "lm_loss", "tail_loss"]


def answer_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions t whose next label counts, those next labels), labels shifted as HF does."""
    flat = labels.reshape(-1)
    targets = torch.cat([flat[1:], flat.new_full((1,), IGNORE_INDEX)])
    positions = (targets != IGNORE_INDEX).nonzero().flatten()
    return positions, targets.index_select(0, positions)


@torch.no_grad()
def lm_loss(adapter: FamilyAdapter, hidden: torch.Tensor, labels: torch.Tensor) -> float:
    """Causal-LM loss of the last block's output `hidden` [1, T, H] (or [T, H]) on `labels` [1, T]."""
    positions, targets = answer_positions(labels.to(hidden.device))
    if positions.numel() == 0:
        raise ValueError("the sample has no answer tokens (every label is -100): no loss to compute")
    rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
    logits = adapter.lm_head()(adapter.final_norm()(rows)).float()
    return F.cross_entropy(logits, targets.long()).item()


@torch.no_grad()
def tail_loss(
    engine: LayerwiseEngine,
    start_block: int,
    hidden: torch.Tensor,
    kwargs: dict[str, Any],
    labels: torch.Tensor,
) -> float:
    """Loss of one sample whose input to block `start_block` is `hidden` (offload-aware)."""
    for index in range(start_block, len(engine.blocks)):
        with engine.on_device(engine.blocks[index]) as block:
            hidden = run_block(block, hidden, kwargs)
    return lm_loss(engine.adapter, hidden, labels)
