"""The pruners, one module each (magnitude, wanda, sparsegpt, dense): math, statistic, settings and binding.

Shared: masks.py (per tensor, unstructured per row, N:M) and base.py (the `Pruner` binding, statistics' input).
"""

from tamp.pruning.magnitude import magnitude_metric, official_magnitude_sparsity
from tamp.pruning.masks import make_mask, nm_mask, parse_pattern, tensor_mask, unstructured_mask
from tamp.pruning.sparsegpt import HessianStats, SparseGPTError, sparsegpt_prune
from tamp.pruning.wanda import SquaredNormStats, wanda_metric

__all__ = [
    "HessianStats",
    "SparseGPTError",
    "SquaredNormStats",
    "magnitude_metric",
    "make_mask",
    "nm_mask",
    "official_magnitude_sparsity",
    "parse_pattern",
    "sparsegpt_prune",
    "tensor_mask",
    "unstructured_mask",
    "wanda_metric",
]
