"""A name -> factory registry whose entries live in modules imported on first use.

Allocations and token selectors register themselves by name in their own files; the registry
imports those files lazily so `import tamp` stays cheap, and an unknown name is a one-line error
naming the config key and the valid names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, key: str, modules: Sequence[str]) -> None:
        self.key = key  # the config key that names an entry, for error messages
        self.modules = tuple(modules)
        self.factories: dict[str, Callable[[Any], T]] = {}

    def register(self, name: str) -> Callable[[Callable[[Any], T]], Callable[[Any], T]]:
        def wrap(factory: Callable[[Any], T]) -> Callable[[Any], T]:
            self.factories[name] = factory
            return factory

        return wrap

    def build(self, cfg: Any) -> T:
        for module in self.modules:
            importlib.import_module(module)
        if cfg.name not in self.factories:
            valid = ", ".join(sorted(self.factories))
            raise ValueError(f"{self.key}='{cfg.name}' is unknown; valid: {valid}")
        return self.factories[cfg.name](cfg)
