"""Every `model.name` resolved in one place: a Hub id, a local directory, or a registered scheme.

Schemes such as `tiny:<family>` (tamp.models.tiny) and `zoo[:<recipe>]` (tamp.zoo) register a loader
with `@register_scheme("tiny")`; the registry's package walk finds them, so this module names none.
A scheme's loader has `check(name)` (before anything loads: one line for a bad name) and
`load(name, settings)` returning a `LoadedModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

from tamp.core.registries import Registry
from tamp.models.base import FamilyAdapter


@dataclass
class ModelSettings:
    """What loading needs from a run's config (`model.*`, the seed, the cache folder)."""

    name: str
    family: str | None = None
    dtype: str = "bfloat16"
    trust_remote_code: bool = False
    seed: int = 0
    cache_dir: str = "outputs/cache"
    progress: bool = True


@dataclass
class LoadedModel:
    """A model ready for the pipeline, with the example conversations it ships with (tiny models)."""

    model: nn.Module
    processor: Any
    adapter: FamilyAdapter
    examples: list[Any] | None = None


class SchemeLoader(Protocol):
    @staticmethod
    def check(name: str) -> None: ...

    @staticmethod
    def load(name: str, settings: ModelSettings) -> LoadedModel: ...


SCHEMES: Registry[SchemeLoader] = Registry(
    "model name scheme", "model.name", ("tamp.models.tiny", "tamp.zoo")
)
register_scheme = SCHEMES.register


def scheme_of(name: str) -> str | None:
    """The registered scheme a model name uses (`tiny:llava_next` -> tiny, `zoo` -> zoo), else None."""
    head = name.split(":", 1)[0]
    return head if head and head in SCHEMES else None


def check_named_model(name: str) -> None:
    """One line for a name that cannot load here (unknown tiny family, missing directory, uncached id)."""
    from tamp.models.loading import check_cached, check_model_files, check_model_name, model_folder

    if not name.strip():
        raise ValueError("model.name is empty; valid: a Hub id (org/name), a local model directory, "
                         f"{', '.join(s + ':...' if s == 'tiny' else s for s in SCHEMES.names())}")
    scheme = scheme_of(name)
    if scheme is not None:
        SCHEMES.get(scheme).factory.check(name)  # type: ignore[attr-defined]
        return
    check_model_name(name)
    check_cached(name)
    folder = model_folder(name)
    if folder is not None:
        check_model_files(folder)


def load_named_model(settings: ModelSettings) -> LoadedModel:
    """The model `settings.name` names, however it is spelled."""
    from tamp.models.loading import load_model

    scheme = scheme_of(settings.name)
    if scheme is not None:
        return SCHEMES.get(scheme).factory.load(settings.name, settings)  # type: ignore[attr-defined]
    model, processor, adapter = load_model(
        settings.name, settings.family, settings.dtype, trust_remote_code=settings.trust_remote_code
    )
    return LoadedModel(model, processor, adapter)
