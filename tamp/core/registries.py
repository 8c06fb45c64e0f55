"""The one registry mechanism: components register by decorator where they are defined.

Families, tiny builders, pruners, allocations, token selectors and calibration sources each have a
`Registry`. An entry is a factory plus, optionally, the dataclass of its own settings (defaults and
range checks beside the component). Nothing lists the modules by hand: on the first lookup the
registry imports every module of its packages (a package walk), so a new component is one new file.
The packages are named literally in each `Registry(...)` declaration: tests/test_architecture.py reads
them there and checks that every walked package registers with (imports) the registry it is walked by.
An unknown name is a one-line error naming the config key and the valid names.
Composing and checking a run config walks these packages, so a walked module imports torch (and any
other model library) through `lazy_module`: `--help`, tab completion and a config error never load it.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Generic, TypeVar

from tamp.core.config import from_dict

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class _LazyModule(types.ModuleType):
    """A module imported on its first attribute access; then its names are this object's own (no more lookups)."""

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)


def lazy_module(name: str) -> Any:
    """`torch = lazy_module("torch")`: the module, imported when a function first uses it, not at import."""
    return _LazyModule(name)


def no_grad(fn: F) -> F:
    """`@torch.no_grad()` for a function of a walked module: torch is imported when the function runs."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return run  # type: ignore[return-value]


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component: how to build it and the dataclass of its settings (or None)."""

    name: str
    factory: Callable[..., T]
    config: type | None = None


def walk_modules(package: str) -> list[str]:
    """Every module below `package` (the package itself first), in a stable order."""
    pkg = importlib.import_module(package)
    names = [package]
    if hasattr(pkg, "__path__"):
        for info in sorted(pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."), key=lambda i: i.name):
            if not info.name.rsplit(".", 1)[-1].startswith("_"):  # __main__ and private helpers
                names.append(info.name)
    return names


class Registry(Generic[T]):
    """Name -> Entry. `key` is the config key that names an entry, for error messages."""

    def __init__(self, kind: str, key: str, packages: Sequence[str], unknown: str = "{key}='{name}' is unknown") -> None:
        self.kind = kind
        self.key = key
        self.packages = tuple(packages)
        self.unknown = unknown  # the error's opening, before "; valid: ..."
        self.entries: dict[str, Entry[T]] = {}
        self._discovered = False

    def register(self, name: str, config: type | None = None) -> Callable[[F], F]:
        """Decorator: `@REGISTRY.register("name", config=SettingsDataclass)` on a class or function."""

        def wrap(factory: F) -> F:
            self.entries[name] = Entry(name, factory, config)
            return factory

        return wrap

    def discover(self) -> Registry[T]:
        """Import every module of the registry's packages once, so their decorators have run."""
        if not self._discovered:
            self._discovered = True
            for package in self.packages:
                for module in walk_modules(package):
                    importlib.import_module(module)
        return self

    def names(self) -> list[str]:
        return sorted(self.discover().entries)

    def get(self, name: str) -> Entry[T]:
        if name in self.entries:  # registered already (its module is loaded): no walk needed
            return self.entries[name]
        self.discover()
        if name not in self.entries:
            opening = self.unknown.format(key=self.key, name=name)
            raise ValueError(f"{opening}; valid: {', '.join(self.names())}")
        return self.entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self.discover().entries

    def settings(self, value: Any, base: type, path: str, name_key: str = "name") -> Any:
        """`value` (a settings dataclass or a mapping) as the checked settings of the component it names.

        A node typed for one component whose name was changed to another's (an override such as
        `method.allocation.name=ecoflap` on a preset built for DAS) keeps only the values that differ
        from the old type's defaults: the new component's defaults are its own, whatever preset it
        is composed into, and a changed key the new one does not have is an error.
        """
        data, given = as_fields(value)
        name = data.get(name_key, getattr(base(), name_key))
        cls = self.get(name).config or base
        if given is not None and given is not cls:
            defaults, _ = as_fields(given())
            data = {k: v for k, v in data.items() if k == name_key or k not in defaults or v != defaults[k]}
        data[name_key] = name
        settings = from_dict(cls, data, path)  # an unknown key names itself and the valid ones
        settings.check()
        return settings

    def build(self, settings: Any, name_key: str = "name") -> T:
        """The component for checked settings (see `settings`)."""
        return self.get(getattr(settings, name_key)).factory(settings)


def as_fields(value: Any) -> tuple[dict[str, Any], type | None]:
    """(field -> value, the dataclass type or None) of a settings dataclass, a mapping or an OmegaConf node."""
    if hasattr(value, "items") and not isinstance(value, dict):  # an OmegaConf DictConfig
        from omegaconf import OmegaConf

        typed = is_dataclass(OmegaConf.get_type(value))
        value = OmegaConf.to_object(value) if typed else OmegaConf.to_container(value, resolve=True)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in fields(value)}, type(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping of settings, got {value!r}")
    return dict(value), None




#: the layer-wise methods (tamp.core.protocols.LayerwiseMethod) by `method.kind`; a factory takes the whole
#: PruneConfig. `composed` (tamp.methods.composed.ComposedMethod: pruner x allocation x tokens) is the default.
METHODS: Registry[Any] = Registry("layer-wise method", "method.kind", ("tamp.methods.composed",))
register_method = METHODS.register
COMPOSED = "composed"


def method_kind(method: Any) -> str:
    """The `method.kind` of method settings (a MethodConfig without one is the composed method)."""
    return getattr(method, "kind", None) or COMPOSED
