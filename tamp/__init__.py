"""tamp: post-training pruning of multimodal LLMs (TAMP and its baselines).

One call for a model of your own (README, From Python):

    adapter = tamp.get_adapter(model, processor)               # the family, from model.config.model_type
    samples = tamp.build_samples(adapter, conversations)       # records, chat entries or a datasets.Dataset
    summary = tamp.prune(model, samples, "tamp", sparsity=0.5)  # a conf/method preset by name, plus overrides
    tamp.save(model, processor, "pruned/", summary)             # weights, sparsity manifest, bit-packed masks

or, letting tamp load the model and encode the conversations (a list, or a datasets.Dataset):

    summary = tamp.prune("path/to/model", conversations, "tamp", sparsity=0.5, model_settings={"dtype": "float32"})
    tamp.save(summary.model, summary.processor, "pruned/", summary)

The public names load on first use (PEP 562): `import tamp` or `import tamp.core.config` costs what that
module imports, not torch and the whole library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_PUBLIC = {
    "CalibSample": "tamp.data.sample",
    "MethodConfig": "tamp.core.config",
    "PruneConfig": "tamp.core.config",
    "PruneReport": "tamp.tracking.prune_summary",  # PruneSummary's earlier name
    "PruneSummary": "tamp.tracking.prune_summary",
    "SparsityConfig": "tamp.core.config",
    "build_samples": "tamp.data.records",
    "get_adapter": "tamp.models.registry",
    "preset_names": "tamp.methods.presets",
    "prune": "tamp.api.functions",
    "save": "tamp.api.functions",
}

__all__ = [
    "CalibSample", "MethodConfig", "PruneConfig", "PruneReport", "PruneSummary", "SparsityConfig", "build_samples", "get_adapter",
    "preset_names", "prune", "save",
]
assert sorted(_PUBLIC) == __all__, "every public name has its module in _PUBLIC"
__version__ = "0.1.0"

if TYPE_CHECKING:
    from tamp.api.functions import prune, save
    from tamp.core.config import MethodConfig, PruneConfig, SparsityConfig
    from tamp.data.records import build_samples
    from tamp.data.sample import CalibSample
    from tamp.methods.presets import preset_names
    from tamp.models.registry import get_adapter
    from tamp.tracking.prune_summary import PruneReport, PruneSummary


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first access (then cached in this module)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'tamp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
