"""Layer-wise sparsity allocations, one module each (uniform, das, owl, ecoflap; mixed_nm under N:M).

Each holds its settings, its registry binding and its math; allocate.py is the allocator they share
(groups of linears, the ECoFLaP allocator, the row grid). An allocation sees the model through
`tamp.sparsity.registry.ScoringModel` and never imports the pipeline.
"""

from tamp.sparsity.allocate import allocate
from tamp.sparsity.das import DiversityAccumulator, DiversityTerms, all_token, diversity
from tamp.sparsity.owl import outlier_ratio, owl_sparsity

__all__ = [
    "DiversityAccumulator",
    "DiversityTerms",
    "all_token",
    "allocate",
    "diversity",
    "outlier_ratio",
    "owl_sparsity",
]
