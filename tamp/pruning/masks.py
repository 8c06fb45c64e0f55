"""Pruning masks from an importance metric (True = pruned).

Every pruner (magnitude, Wanda, SparseGPT's per-block choice aside) reduces to "prune the lowest
entries of a metric" inside a comparison group: the whole tensor (the original magnitude baselines),
one output row (Wanda's unstructured) or m consecutive input columns of one row (N:M). Ties are
broken as a stable sort breaks them (lower index first) so that masks are reproducible and counts exact.

The lowest k of a row are found without sorting it (`lowest_mask`): a selection gives the k-th smallest
value, one comparison marks everything up to it, and only rows where that value is tied go through a
tie-break by position. The mask is exactly the first k of the stable sort (tests/test_pipeline_speed_
equivalence.py), at about a third of a sort's cost on CPU.
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

__all__ = ["lowest_mask", "make_mask", "nm_mask", "parse_pattern", "tensor_mask", "unstructured_mask"]


def _check_metric(metric: Tensor) -> None:
    if metric.dim() != 2:
        raise ValueError(f"metric must be 2-D [out_features, in_features], got shape {tuple(metric.shape)}")


def lowest_mask(values: Tensor, k: int) -> Tensor:
    """Bool mask of the ``k`` lowest entries of each row of ``values`` (1-D: of the vector), ties to the
    lower index: the same entries as ``torch.sort(values, stable=True).indices[..., :k]``, NaN largest."""
    rows = values.reshape(-1, values.shape[-1]) if values.dim() else values.reshape(1, 1)
    width = rows.shape[1]
    if k <= 0 or k >= width or rows.shape[0] == 0:
        return torch.full(values.shape, k > 0, dtype=torch.bool, device=values.device)
    if bool(torch.isnan(rows).any()):  # a selection has no defined place for NaN: the stable sort decides
        mask = torch.zeros(rows.shape, dtype=torch.bool, device=rows.device)
        mask.scatter_(1, torch.sort(rows, dim=1, stable=True).indices[:, :k], True)
        return mask.view(values.shape)
    kth = rows.topk(k, dim=1, largest=False, sorted=False).values.amax(1, keepdim=True)
    mask = rows <= kth
    tied = torch.nonzero(mask.sum(1) > k).flatten()  # more than k entries up to the k-th value: ties at it
    if tied.numel():
        sub, at = rows.index_select(0, tied), kth.index_select(0, tied)
        below, equal = sub < at, sub == at
        need = k - below.sum(1, keepdim=True)
        mask.index_copy_(0, tied, below | (equal & (equal.cumsum(1) <= need)))
    return mask.view(values.shape)


def unstructured_mask(metric: Tensor, sparsity: float) -> Tensor:
    """Per output row, prune the ``int(in_features * sparsity)`` lowest entries.

    ``int()`` truncation and the stable sort match the original Wanda code, so the mask is the
    reference one even on ties.
    """
    _check_metric(metric)
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    return lowest_mask(metric, int(metric.shape[1] * sparsity))


def tensor_mask(metric: Tensor, sparsity: float) -> Tensor:
    """Over the whole tensor, prune the ``int(numel * sparsity)`` lowest entries.

    One threshold for the tensor, as Wanda's and SparseGPT's magnitude baselines compare |W|; the
    stable sort over the flattened (row-major) tensor decides ties, so exactly that many are pruned
    (the originals' ``<= threshold`` would prune every tied entry).
    """
    _check_metric(metric)
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    return lowest_mask(metric.flatten(), int(metric.numel() * sparsity)).reshape(metric.shape)


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
