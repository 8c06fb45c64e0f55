"""tamp: post-training pruning of multimodal LLMs (TAMP and its baselines).

One call for a model of your own (README, From Python):

    adapter = tamp.get_adapter(model, processor)               # the family, from model.config.model_type
    samples = tamp.build_samples(adapter, conversations)       # records, chat entries or a datasets.Dataset
    report = tamp.prune(model, samples, "tamp", sparsity=0.5)  # a tamp/conf/method preset by name, plus overrides
    tamp.save(model, processor, "pruned/", report)             # weights, sparsity manifest, bit-packed masks
"""

from tamp.api import prune, save
from tamp.config import MethodConfig, PruneConfig, SparsityConfig
from tamp.data.records import build_samples
from tamp.data.sample import CalibSample
from tamp.models.registry import get_adapter
from tamp.presets import preset_names
from tamp.prune_report import PruneReport

__all__ = [
    "CalibSample", "MethodConfig", "PruneConfig", "PruneReport", "SparsityConfig", "build_samples", "get_adapter",
    "preset_names", "prune", "save",
]
__version__ = "0.1.0"
