"""tamp: post-training pruning of multimodal LLMs (TAMP and its baselines)."""

from tamp.api import prune
from tamp.config import MethodConfig, PruneConfig, SparsityConfig
from tamp.data.sample import CalibSample
from tamp.prune_report import PruneReport

__all__ = ["CalibSample", "MethodConfig", "PruneConfig", "PruneReport", "SparsityConfig", "prune"]
__version__ = "0.1.0"
