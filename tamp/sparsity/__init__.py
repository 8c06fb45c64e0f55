"""Layer-wise sparsity allocation: the ECoFLaP allocator, DAS diversity scores, OWL."""

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
