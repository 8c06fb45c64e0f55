"""Wanda metric: weight magnitude times input activation norm."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["wanda_metric"]


def wanda_metric(weight: Tensor, sq_norm: Tensor) -> Tensor:
    """``|W| * sqrt(sq_norm)[None, :]`` in float32.

    ``sq_norm[j]`` is the (possibly normalised) sum of ``x_j^2`` over the counted tokens; a constant
    scale does not change the per-row ranking, so either normalisation of SquaredNormStats works.
    """
    if sq_norm.dim() != 1 or sq_norm.shape[0] != weight.shape[1]:
        raise ValueError(
            f"sq_norm must have shape [in_features={weight.shape[1]}], got {tuple(sq_norm.shape)}"
        )
    scale = torch.sqrt(sq_norm.detach().to(device=weight.device, dtype=torch.float32))
    return weight.detach().float().abs() * scale[None, :]
