"""Calibration source name (`calib.source`) -> the function that builds the samples.

`llava_json` and `hf` (conversation sets, tamp.data.calib) register here; `tiny` (a tiny model's own
examples) registers in tamp.models.tiny. A source is `fn(cfg, encoder, examples) -> [CalibSample]`,
where `examples` are the conversations a loaded model ships with (None for real models).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from tamp.core.registries import Registry
from tamp.data.fit import FitReport, fit, token_limit
from tamp.data.sample import CalibSample
from tamp.data.types import SampleEncoder

log = logging.getLogger("tamp")
Source = Callable[[Any, SampleEncoder, Sequence[Any] | None], list[CalibSample]]
CALIB_SOURCES: Registry[list[CalibSample]] = Registry(
    "calibration source", "calib.source", ("tamp.data", "tamp.models.tiny")
)
register_source = CALIB_SOURCES.register


def calibration_samples(cfg: Any, encoder: SampleEncoder, examples: Sequence[Any] | None = None) -> list[CalibSample]:
    """The samples `cfg.source` builds (all of them; a data-parallel caller shards), fitted to the limit."""
    return calibration_set(cfg, encoder, examples)[0]


def calibration_set(
    cfg: Any, encoder: SampleEncoder, examples: Sequence[Any] | None = None
) -> tuple[list[CalibSample], FitReport]:
    """The samples `cfg.source` builds, each within `calib.max_tokens` and the model's context.

    Longer samples are cut after their last media token and counted in one log line and the
    returned report (results.json's `calibration`); media past the limit stop the run naming the record.
    """
    samples = CALIB_SOURCES.get(cfg.source).factory(cfg, encoder, examples)
    fitted, report = fit(samples, token_limit(getattr(cfg, "max_tokens", None), encoder))
    if report.message():
        log.warning(report.message())
    return fitted, report
