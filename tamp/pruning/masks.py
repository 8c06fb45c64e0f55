"""Pruning masks from an importance metric (True = pruned).

Every pruner (magnitude, Wanda, SparseGPT's per-block choice aside) reduces to "prune the lowest
entries of a metric" inside a comparison group: the whole tensor (the original magnitude baselines),
one output row (Wanda's unstructured) or m consecutive input columns of one row (N:M). Ties are
broken by a stable sort so that masks are reproducible and counts exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tamp.core.config import parse_pattern
from tamp.core.registries import lazy_module

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    torch = lazy_module("torch")

__all__ = ["make_mask", "nm_mask", "parse_pattern", "tensor_mask", "unstructured_mask"]


def _check_metric(metric: Tensor) -> None:
    if metric.dim() != 2:
        raise ValueError(f"metric must be 2-D [out_features, in_features], got shape {tuple(metric.shape)}")


def unstructured_mask(metric: Tensor, sparsity: float) -> Tensor:
    """Per output row, prune the ``int(in_features * sparsity)`` lowest entries.

    ``int()`` truncation and the stable sort match the original Wanda code, so the mask is the
    reference one even on ties.
    """
    _check_metric(metric)
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    k = int(metric.shape[1] * sparsity)
    mask = torch.zeros(metric.shape, dtype=torch.bool, device=metric.device)
    if k == 0:
        return mask
    order = torch.sort(metric, dim=1, stable=True).indices[:, :k]
    return mask.scatter_(1, order, True)


def tensor_mask(metric: Tensor, sparsity: float) -> Tensor:
    """Over the whole tensor, prune the ``int(numel * sparsity)`` lowest entries.

    One threshold for the tensor, as Wanda's and SparseGPT's magnitude baselines compare |W|; the
    stable sort over the flattened (row-major) tensor decides ties, so exactly that many are pruned
    (the originals' ``<= threshold`` would prune every tied entry).
    """
    _check_metric(metric)
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    k = int(metric.numel() * sparsity)
    mask = torch.zeros(metric.numel(), dtype=torch.bool, device=metric.device)
    if k:
        mask[torch.sort(metric.flatten(), stable=True).indices[:k]] = True
    return mask.reshape(metric.shape)


def nm_mask(metric: Tensor, n: int, m: int) -> Tensor:
    """In every group of ``m`` consecutive input columns of each row, prune the ``n`` lowest.

    Vectorised over groups: [rows, cols] -> [rows, cols / m, m], stable sort inside each group.
    """
    _check_metric(metric)
    if not 0 < n < m:
        raise ValueError(f"N:M pattern needs 0 < N < M, got {n}:{m}")
    rows, cols = metric.shape
    if cols % m != 0:
        raise ValueError(f"N:M {n}:{m} needs in_features divisible by {m}, got in_features={cols}")
    groups = metric.reshape(rows, cols // m, m)
    lowest = torch.sort(groups, dim=-1, stable=True).indices[..., :n]
    mask = torch.zeros(groups.shape, dtype=torch.bool, device=metric.device)
    return mask.scatter_(-1, lowest, True).reshape(rows, cols)


def make_mask(metric: Tensor, sparsity: float, pattern: str = "unstructured") -> Tensor:
    """Mask for ``pattern``; for N:M the ``sparsity`` argument is ignored (the pattern fixes it to n/m).

    The pipeline combines N:M with a layer-wise allocation (DAS, OWL) by giving each layer its own N
    (tamp.sparsity.mixed_nm), not through this function.
    """
    nm = parse_pattern(pattern)
    if nm is None:
        return unstructured_mask(metric, sparsity)
    return nm_mask(metric, *nm)
