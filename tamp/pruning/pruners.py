"""Pruners as the layer-wise method sees them: which statistic to gather, how to turn it into a mask.

The math lives in masks / magnitude / wanda / sparsegpt; these classes only bind it to an
nn.Linear, apply the result in place and say how many weights the rule prunes (the plan).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tamp.pruning.magnitude import magnitude_metric, official_magnitude_sparsity
from tamp.pruning.masks import nm_mask, unstructured_mask
from tamp.pruning.sparsegpt import sparsegpt_prune
from tamp.pruning.stats import HessianStats, SquaredNormStats
from tamp.pruning.wanda import wanda_metric

NM = tuple[int, int] | None


def _mask_from_metric(metric: torch.Tensor, sparsity: float, nm: NM) -> torch.Tensor:
    return nm_mask(metric, *nm) if nm else unstructured_mask(metric, sparsity)


class Pruner:
    """Base: per-row unstructured or N:M masks from a metric; stats gathered per linear."""

    name = ""
    needs_stats = True

    def new_stats(self, linear: nn.Linear) -> Any | None:
        return None

    def planned_pruned(self, linear: nn.Linear, sparsity: float, nm: NM) -> int:
        rows, cols = linear.weight.shape
        if nm:
            return rows * (cols // nm[1]) * nm[0]
        return rows * int(cols * sparsity)

    def prune(self, linear: nn.Linear, stats: Any, sparsity: float, nm: NM, name: str) -> torch.Tensor:
        """Zero the pruned weights of `linear` in place and return the mask (True = pruned)."""
        mask = _mask_from_metric(self.metric(linear, stats), sparsity, nm)
        linear.weight.data.masked_fill_(mask, 0)
        return mask

    def metric(self, linear: nn.Linear, stats: Any) -> torch.Tensor:
        raise NotImplementedError


class MagnitudePruner(Pruner):
    """|W| per row; `compat_official` reproduces the official code's signed ranking and 1 - p."""

    name = "magnitude"
    needs_stats = False

    def __init__(self, compat_official: bool = False) -> None:
        self.compat_official = compat_official

    def _sparsity(self, sparsity: float) -> float:
        return official_magnitude_sparsity(sparsity) if self.compat_official else sparsity

    def planned_pruned(self, linear: nn.Linear, sparsity: float, nm: NM) -> int:
        return super().planned_pruned(linear, self._sparsity(sparsity), nm)

    def prune(self, linear: nn.Linear, stats: Any, sparsity: float, nm: NM, name: str) -> torch.Tensor:
        return super().prune(linear, stats, self._sparsity(sparsity), nm, name)

    def metric(self, linear: nn.Linear, stats: Any) -> torch.Tensor:
        return magnitude_metric(linear.weight, compat_official=self.compat_official)


class WandaPruner(Pruner):
    """|W_ij| * ||X_j||: needs the per-column squared norms of the (selected) inputs."""

    name = "wanda"

    def new_stats(self, linear: nn.Linear) -> SquaredNormStats:
        return SquaredNormStats(linear.in_features, linear.weight.device)

    def metric(self, linear: nn.Linear, stats: SquaredNormStats) -> torch.Tensor:
        return wanda_metric(linear.weight, stats.scaler_row("samples"))


class SparseGPTPruner(Pruner):
    """OBS reconstruction from the input Hessian; the mask is read off the zeros it leaves."""

    name = "sparsegpt"

    def __init__(self, blocksize: int = 128, percdamp: float = 0.01) -> None:
        self.blocksize = blocksize
        self.percdamp = percdamp

    def new_stats(self, linear: nn.Linear) -> HessianStats:
        return HessianStats(linear.in_features, linear.weight.device)

    def planned_pruned(self, linear: nn.Linear, sparsity: float, nm: NM) -> int:
        if nm or sparsity == 0.0:
            return super().planned_pruned(linear, sparsity, nm)
        # SparseGPT thresholds each column block at its int(numel * p)-th score and prunes `<=` it
        rows, cols = linear.weight.shape
        widths = [min(self.blocksize, cols - i) for i in range(0, cols, self.blocksize)]
        return sum(int(rows * w * sparsity) + 1 for w in widths)

    def prune(self, linear: nn.Linear, stats: HessianStats, sparsity: float, nm: NM, name: str) -> torch.Tensor:
        n, m = nm or (0, 0)
        pruned = sparsegpt_prune(
            linear.weight.data, stats.hessian(), sparsity, n, m, self.blocksize, self.percdamp, name=name
        )
        linear.weight.data.copy_(pruned)
        return pruned == 0


class NoPruner(Pruner):
    """The dense reference: plans and prunes nothing, so a dense run goes through the same code."""

    name = "none"
    needs_stats = False

    def planned_pruned(self, linear: nn.Linear, sparsity: float, nm: NM) -> int:
        return 0

    def prune(self, linear: nn.Linear, stats: Any, sparsity: float, nm: NM, name: str) -> torch.Tensor:
        return torch.zeros_like(linear.weight, dtype=torch.bool)


def build_pruner(name: str, blocksize: int = 128, percdamp: float = 0.01, compat_magnitude: bool = False) -> Pruner:
    if name == "magnitude":
        return MagnitudePruner(compat_official=compat_magnitude)
    if name == "wanda":
        return WandaPruner()
    if name == "sparsegpt":
        if blocksize <= 0 or not math.isfinite(percdamp) or percdamp < 0:
            bad = f"method.blocksize={blocksize}" if blocksize <= 0 else f"method.percdamp={percdamp}"
            raise ValueError(f"{bad} is out of range; valid: method.blocksize >= 1, method.percdamp >= 0")
        return SparseGPTPruner(blocksize, percdamp)
    if name == "none":
        return NoPruner()
    raise ValueError(f"method.pruner='{name}' is unknown; valid: magnitude, wanda, sparsegpt, none")
