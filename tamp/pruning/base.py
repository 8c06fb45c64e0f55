"""What every pruner shares: the binding of a metric to an nn.Linear, and how statistics read their inputs.

A pruner is registered by name (`@register_pruner`, tamp.pruning.registry) in its own module, beside its
math and the statistic it gathers (magnitude.py, wanda.py, sparsegpt.py, dense.py). The base class here
turns a metric into per-row unstructured or N:M masks (tamp.pruning.masks), applies them in place and
says how many weights the rule prunes (the plan).

Statistics (Wanda's squared norms in wanda.py, SparseGPT's Hessian in sparsegpt.py) hold SUMS plus
counts, never running means, so that an all-reduce(sum) of ``.tensors()`` across processes gives
exactly what one process seeing every sample would hold. The normalisation happens only when the
statistic is read.

Sample counting follows the original code: each ``add`` call is one sample (a batch of 1), or B
samples for a [B, T, C] input, whatever the number of tokens. So a sample whose token selection is
empty (T = 0) still counts as one sample but adds nothing to the sums, as the original Wanda and
SparseGPT ``add_batch`` would with an empty input.

Linears that read the same input in a sample (q, k, v; gate, up) may be handed ONE statistic object,
accumulated once (tamp.methods.composed), when the pruner declares `input_only_stats`: a statistic's
``copy()`` (else a deep copy) gives a linear that stops sharing its own sums, and ``prune`` may see the
same object for several consecutive linears.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tamp.core.registries import lazy_module
from tamp.pruning.masks import nm_mask, unstructured_mask

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    torch, nn = lazy_module("torch"), lazy_module("torch.nn")

__all__ = ["NM", "Pruner", "all_finite", "token_rows"]

NM = tuple[int, int] | None


def all_finite(t: Tensor) -> Tensor:
    """0-d bool: no NaN or inf in `t` (on its device, no sync). One min/max pass: NaN propagates into both
    and an infinity is an extreme, so this is `isfinite(t).all()` without its [numel] bool temporary
    (about 10x cheaper on a Hessian)."""
    if t.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=t.device)
    low, high = torch.aminmax(t)
    return torch.isfinite(low) & torch.isfinite(high)


def token_rows(x: Tensor, in_features: int) -> tuple[Tensor, int]:
    """[T, C] or [B, T, C] -> ([tokens, C] float32, number of samples)."""
    if x.dim() not in (2, 3) or x.shape[-1] != in_features:
        raise ValueError(f"expected input [T, {in_features}] or [B, T, {in_features}], got {tuple(x.shape)}")
    samples = x.shape[0] if x.dim() == 3 else 1
    return x.detach().reshape(-1, in_features).float(), samples


def _mask_from_metric(metric: torch.Tensor, sparsity: float, nm: NM) -> torch.Tensor:
    return nm_mask(metric, *nm) if nm else unstructured_mask(metric, sparsity)


class Pruner:
    """Base: per-row unstructured or N:M masks from a metric; stats gathered per linear."""

    name = ""
    needs_stats = True
    #: True: `new_stats` depends on the linear only through its input side (in_features, device) and the
    #: statistic's `add` on the rows alone, so linears reading one input may share one statistic object
    #: (tamp.methods.composed). False by default: a pruner's statistic may depend on the linear itself.
    input_only_stats = False

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

    def block_done(self) -> None:
        """Every linear of the block is pruned: a pruner that keeps work between its `prune` calls (SparseGPT
        factors a Hessian that several linears share once) drops it here. Nothing is kept by default."""
