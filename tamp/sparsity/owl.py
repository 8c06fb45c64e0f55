"""OWL (outlier-weighted layer-wise sparsity): blocks with more outlier Wanda scores are pruned less.

Per block, the outlier ratio is the percentage of the block's (concatenated) Wanda metric entries larger
than M times their mean. The ratios are scaled to [0, 2 * lambda], centred, and shifted by the target
density: that is the block's keep ratio, and its sparsity is 1 - keep. The TAMP repository's port adds the
target sparsity instead and uses the result as the sparsity, which inverts the ordering (more outliers,
more pruning); `compat="tamp_repository"` reproduces it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

COMPATS = ("owl", "tamp_repository")


def outlier_ratio(metric: torch.Tensor | Sequence[torch.Tensor], m: float) -> float:
    """Percentage of entries larger than `m` times the mean (a list of tensors is concatenated first)."""
    if not isinstance(metric, torch.Tensor):
        metric = torch.cat([t.detach().reshape(-1).float() for t in metric])
    flat = metric.detach().reshape(-1).float()
    if flat.numel() == 0:
        raise ValueError("outlier_ratio needs a non-empty metric")
    outliers = (flat > flat.mean() * m).sum()
    return 100.0 * outliers.item() / flat.numel()


def owl_sparsity(ratios: Sequence[float], target: float, lam: float, compat: str = "owl") -> list[float]:
    """Per-block sparsity from the blocks' outlier ratios (percent), target sparsity and lambda.

    Equal ratios give every block the target. Their mean is always the target sparsity.
    """
    if compat not in COMPATS:
        raise ValueError(f"unknown OWL compat {compat!r}; expected one of {COMPATS}")
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {target}")
    if lam < 0:
        raise ValueError(f"OWL lambda must be >= 0, got {lam}")
    values = [float(r) for r in ratios]
    if not values:
        raise ValueError("owl_sparsity needs at least one block")
    low, high = min(values), max(values)
    if high == low:
        return [target] * len(values)
    scaled = [(v - low) * (1.0 / (high - low) * lam * 2) for v in values]
    mean = sum(scaled) / len(scaled)
    if compat == "tamp_repository":
        return [s - mean + target for s in scaled]
    return [1.0 - (s - mean + (1.0 - target)) for s in scaled]
