"""Statistic accumulators for the layer-wise pipeline (Wanda's squared norms, SparseGPT's Hessian).

They hold SUMS plus counts, never running means, so that an all-reduce(sum) of ``.tensors()`` across
processes gives exactly what one process seeing every sample would hold. The normalisation happens
only when the statistic is read.

Sample counting follows the original code: each ``add`` call is one sample (a batch of 1), or B
samples for a [B, T, C] input, whatever the number of tokens. So a sample whose token selection is
empty (T = 0) still counts as one sample but adds nothing to the sums, as the original Wanda and
SparseGPT ``add_batch`` would with an empty input.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["HessianStats", "SquaredNormStats"]

Normalize = Literal["samples", "tokens"]


def _as_tokens(x: Tensor, in_features: int) -> tuple[Tensor, int]:
    """[T, C] or [B, T, C] -> ([tokens, C] float32, number of samples)."""
    if x.dim() not in (2, 3) or x.shape[-1] != in_features:
        raise ValueError(f"expected input [T, {in_features}] or [B, T, {in_features}], got {tuple(x.shape)}")
    samples = x.shape[0] if x.dim() == 3 else 1
    return x.detach().reshape(-1, in_features).float(), samples


class SquaredNormStats:
    """Per input column, the sum over tokens of ``x_j^2`` (Wanda's ``scaler_row`` before normalising)."""

    def __init__(self, in_features: int, device: torch.device | str | None = None) -> None:
        self.in_features = in_features
        self.sum = torch.zeros(in_features, dtype=torch.float32, device=device)
        # [n_samples, n_tokens]: a tensor so that one collective reduces it with the sum.
        self.counts = torch.zeros(2, dtype=torch.int64, device=device)

    @property
    def n_samples(self) -> int:
        return int(self.counts[0].item())

    @property
    def n_tokens(self) -> int:
        return int(self.counts[1].item())

    def add(self, x: Tensor) -> None:
        """Accumulate one sample's (selected) tokens; one reduction, no per-token loop."""
        tokens, samples = _as_tokens(x, self.in_features)
        tokens = tokens.to(self.sum.device)
        if tokens.shape[0] > 0:
            self.sum += tokens.square().sum(dim=0)
        self.counts[0] += samples
        self.counts[1] += tokens.shape[0]

    def scaler_row(self, normalize: Normalize = "samples") -> Tensor:
        """``sum / n_samples`` (original Wanda: mean over samples) or ``sum / n_tokens`` (TAMP/AMIA).

        Zeros when nothing was counted, rather than NaN.
        """
        if normalize not in ("samples", "tokens"):
            raise ValueError(f"normalize must be 'samples' or 'tokens', got {normalize!r}")
        count = self.counts[0] if normalize == "samples" else self.counts[1]
        return self.sum / count.clamp(min=1).to(torch.float32)

    def tensors(self) -> list[Tensor]:
        """The state tensors themselves (not copies): all-reduce(sum) them in place to merge processes."""
        return [self.sum, self.counts]


class HessianStats:
    """``sum X^T X`` over samples; ``hessian()`` = ``(2 / n_samples) * sum`` as SparseGPT averages it."""

    def __init__(self, in_features: int, device: torch.device | str | None = None) -> None:
        self.in_features = in_features
        self.sum = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.counts = torch.zeros(1, dtype=torch.int64, device=device)

    @property
    def n_samples(self) -> int:
        return int(self.counts[0].item())

    def add(self, x: Tensor) -> None:
        """Accumulate one sample's (selected) tokens with a single matmul."""
        tokens, samples = _as_tokens(x, self.in_features)
        tokens = tokens.to(self.sum.device)
        if tokens.shape[0] > 0:
            self.sum.addmm_(tokens.T, tokens)
        self.counts[0] += samples

    def hessian(self) -> Tensor:
        """``(2 / n_samples) * sum X^T X`` (a new tensor); zeros when nothing was counted."""
        return self.sum * (2.0 / self.counts[0].clamp(min=1).to(torch.float32))

    def tensors(self) -> list[Tensor]:
        """The state tensors themselves (not copies): all-reduce(sum) them in place to merge processes."""
        return [self.sum, self.counts]
