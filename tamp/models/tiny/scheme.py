"""`model.name=tiny:<family>` and `calib.source=tiny`: a tiny random model and its own example conversations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tamp.data.sample import CalibSample
from tamp.data.sources import register_source
from tamp.data.types import SampleEncoder
from tamp.models.named import LoadedModel, ModelSettings, register_scheme
from tamp.models.tiny import TinyExample, build_tiny, tiny_names


@register_scheme("tiny")
class TinyScheme:
    @staticmethod
    def check(name: str) -> None:
        if name.split(":", 1)[-1] not in tiny_names():
            raise ValueError(f"model.name='{name}' is unknown; valid tiny models: "
                             f"{', '.join('tiny:' + f for f in tiny_names())}")

    @staticmethod
    def load(name: str, settings: ModelSettings) -> LoadedModel:
        from tamp.models.loading import resolve_dtype

        TinyScheme.check(name)
        bundle = build_tiny(name.split(":", 1)[1], seed=settings.seed)
        dtype = resolve_dtype(settings.dtype)
        if dtype != "auto":  # built in float32; cast like from_pretrained(dtype=...) would load it
            bundle.model.to(dtype)
        return LoadedModel(bundle.model, bundle.processor, bundle.adapter, bundle.examples())


@register_source("tiny")
def tiny_samples(cfg: Any, encoder: SampleEncoder, examples: Sequence[TinyExample] | None) -> list[CalibSample]:
    """`calib.num_samples` samples cycling through the tiny model's own example conversations."""
    if examples is None:
        raise ValueError("calib.source=tiny needs a tiny model (model.name=tiny:<family>); valid otherwise: "
                         "llava_json, hf")
    encoded = [encoder.encode(e.messages, e.images, e.videos, e.audios) for e in examples]
    for index, sample in enumerate(encoded):
        sample.meta.setdefault("id", f"tiny example {index}")
    return [encoded[i % len(encoded)] for i in range(cfg.num_samples)]
