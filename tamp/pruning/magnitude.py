"""Magnitude pruning metric (plus the official TAMP code's behaviour, for reproduction only)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["magnitude_metric", "official_magnitude_sparsity"]


def magnitude_metric(weight: Tensor, compat_official: bool = False) -> Tensor:
    """Importance |W| in float32 (lowest is pruned first).

    ``compat_official=True`` is for reproducing the official TAMP tables only: that code ranks the
    signed weights, so it prunes the most negative weights rather than the smallest ones. Use it
    together with :func:`official_magnitude_sparsity`.
    """
    w = weight.detach().float()
    return w.clone() if compat_official else w.abs()


def official_magnitude_sparsity(sparsity: float) -> float:
    """Compat only: the official TAMP magnitude baseline prunes ``1 - p`` when asked for ``p``."""
    return 1.0 - sparsity
