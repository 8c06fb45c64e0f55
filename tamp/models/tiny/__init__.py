"""Tiny randomly initialised models of every family, built from configs in milliseconds, offline.

`build_tiny(name, seed)` returns a `TinyBundle` (model, processor, adapter, example conversations).
Builders register themselves by name with `@register_tiny(name)` in any module of this package;
the registry's package walk finds them on the first lookup (tamp.core.registries).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tamp.core.registries import Registry
from tamp.data.sample import CalibSample
from tamp.models.base import FamilyAdapter, Message


@dataclass
class TinyExample:
    """One conversation in HF chat-message format plus the media its placeholders refer to."""

    messages: list[Message]
    images: list[Any] | None = None  # PIL images
    videos: list[Any] | None = None  # each a list of PIL frames or a (frames, H, W, 3) uint8 array
    audios: list[Any] | None = None  # each a 1-D float numpy array at the feature extractor's rate


ExampleLike = TinyExample | Mapping[str, Any] | Callable[[], Any]


@dataclass
class TinyBundle:
    """A tiny model with everything a test needs to run it through the family adapter."""

    model: nn.Module
    processor: Any
    adapter: FamilyAdapter
    family: str
    example: ExampleLike
    extra_examples: Sequence[ExampleLike] = ()
    name: str = ""

    def examples(self) -> list[TinyExample]:
        return [as_example(e) for e in (self.example, *self.extra_examples)]

    def example_sample(self, index: int = 0) -> CalibSample:
        """The index-th example encoded by the adapter (inputs, modality ids, answer labels)."""
        ex = self.examples()[index]
        return self.adapter.encode(ex.messages, ex.images, ex.videos, ex.audios)


def as_example(example: ExampleLike) -> TinyExample:
    """Accept a TinyExample, a dict with messages/images/videos/audios, or a callable giving either."""
    if callable(example) and not isinstance(example, (TinyExample, Mapping)):
        example = example()
    if isinstance(example, TinyExample):
        return example
    if isinstance(example, Mapping):
        messages = example.get("messages", example.get("conversation"))
        return TinyExample(
            list(messages), example.get("images"), example.get("videos"), example.get("audios")
        )
    raise TypeError(f"cannot read a tiny example from {type(example).__name__}")


TinyBuilder = Callable[[int], TinyBundle]
TINY_BUILDERS: Registry[TinyBundle] = Registry(
    "tiny model", "model.name", ("tamp.models.tiny",), unknown="no tiny builder for '{name}'"
)
register_tiny = TINY_BUILDERS.register


def tiny_names() -> list[str]:
    return TINY_BUILDERS.names()


def build_tiny(family: str, seed: int = 0) -> TinyBundle:
    """A tiny model of `family` (or tiny name such as "llama"), weights a pure function of `seed`."""
    bundle = TINY_BUILDERS.get(family).factory(seed)
    bundle.name = bundle.name or family
    return bundle


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch for a model's initialisation without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def save_tiny(bundle: TinyBundle, directory: str | Path) -> Path:
    """Write model and processor so `tamp.models.loading.load_model(directory)` reloads them offline."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    bundle.model.save_pretrained(path)
    bundle.processor.save_pretrained(path)
    return path


__all__ = [
    "TINY_BUILDERS",
    "TinyBundle",
    "TinyExample",
    "as_example",
    "build_tiny",
    "register_tiny",
    "save_tiny",
    "seeded",
    "tiny_names",
]
