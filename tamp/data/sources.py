"""Calibration source name (`calib.source`) -> the function that builds the samples.

`llava_json` and `hf` (conversation sets, tamp.data.calib) register here; `tiny` (a tiny model's own
examples) registers in tamp.models.tiny. A source is `fn(cfg, encoder, examples) -> [CalibSample]`,
where `examples` are the conversations a loaded model ships with (None for real models).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tamp.data.sample import CalibSample
from tamp.registry import Registry
from tamp.types import SampleEncoder

Source = Callable[[Any, SampleEncoder, Sequence[Any] | None], list[CalibSample]]
CALIB_SOURCES: Registry[list[CalibSample]] = Registry(
    "calibration source", "calib.source", ("tamp.data", "tamp.models.tiny")
)
register_source = CALIB_SOURCES.register


def calibration_samples(cfg: Any, encoder: SampleEncoder, examples: Sequence[Any] | None = None) -> list[CalibSample]:
    """The samples `cfg.source` builds (all of them; a data-parallel caller shards)."""
    return CALIB_SOURCES.get(cfg.source).factory(cfg, encoder, examples)
