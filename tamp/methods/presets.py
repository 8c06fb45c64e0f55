"""Method presets by name for `tamp.prune(model, samples, "tamp", sparsity=0.5)`: composed from conf/method
with Hydra's compose API, exactly as `python -m tamp.run method=tamp` composes them.

A preset is a file of conf/method/ (its defaults pick the allocation and the token selector, whose own
settings come from their registered dataclasses); `overrides` are Hydra override strings on the method
(`method.tokens.knn=5`, `method/tokens=attention`), and the remaining keyword arguments are the job's
settings (`sparsity`, `pattern`, `seed`, `device`, `offload`, ...). Every bad name or key is one line.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

from tamp.core.config import AllocationConfig, MethodConfig, PruneConfig, SparsityConfig, TokensConfig
from tamp.core.paths import CONF_DIR  # noqa: E402 - the Hydra configs shipped in the package

#: PruneConfig's settings a keyword argument may set besides the method and the sparsity
SETTINGS = tuple(f.name for f in fields(PruneConfig) if f.name not in ("method", "sparsity"))


def register_components() -> None:
    """Every registered component's settings as a Hydra group option (what the presets' defaults pick).

    `method/allocation=<name>` and `method/tokens=<name>` pick an allocation's or selector's own
    settings node (a preset's defaults list does the same); `/pruner/<name>@_here_` first in a
    preset's defaults gives the method node a pruner's own keys (e.g. SparseGPT's blocksize).
    """
    from tamp.pruning.registry import PRUNERS
    from tamp.sparsity.registry import ALLOCATIONS
    from tamp.tokens.registry import SELECTORS

    for group, registry, base, key in (
        ("method/allocation", ALLOCATIONS, AllocationConfig, "name"),
        ("method/tokens", SELECTORS, TokensConfig, "name"),
        ("pruner", PRUNERS, MethodConfig, "pruner"),
    ):
        for name in registry.names():
            store_settings(name, (registry.get(name).config or base)(**{key: name}), group)
    for name, node in method_kinds().items():
        store_settings(name, node, "method")


def store_settings(name: str, settings: Any, group: str | None = None) -> None:
    """`settings` (a dataclass or an instance of one) in Hydra's config store as `group/name`, converted to its
    OmegaConf node when Hydra first loads it.

    Hydra's `ConfigStore.store` converts at once (OmegaConf.structured: about 0.5 ms for a component's settings,
    7 ms for the run schema), and every command converted them all, while a composition loads three or four
    of them, `--help` lists only their names and a completion of `method=` loads none. Hydra reads an entry
    through `ConfigStore.load` only, which copies the entry and deep-copies its node: the copy of the entry
    stored here is Hydra's own entry holding the node `store` would have made (tests/test_cli_light.py checks
    it). An entry of the same dataclass already there is kept: registering again (the pre-run check and
    `compose_method` do) converts nothing.
    """
    from hydra.core.config_store import ConfigStore

    folder = ConfigStore.instance().repo
    for part in group.split("/") if group else ():
        folder = folder.setdefault(part, {})
    entry = folder.get(f"{name}.yaml")
    if entry is None or _settings_type(entry) is not _dataclass_of(settings):
        folder[f"{name}.yaml"] = _entry_class()(name=f"{name}.yaml", settings=settings, group=group)


def _dataclass_of(settings: Any) -> type:
    return settings if isinstance(settings, type) else type(settings)


def _settings_type(entry: Any) -> type | None:
    """The dataclass a config store entry was made from (an entry stored here is not converted for it)."""
    from omegaconf import OmegaConf

    if isinstance(entry, _entry_class()):
        return _dataclass_of(entry.settings)
    return OmegaConf.get_type(entry.node)


def __getattr__(name: str) -> Any:
    """`_SettingsEntry` is made on its first use (pickle, e.g. Hydra's state sent to a submitit job, finds it
    here by name): it subclasses Hydra's ConfigNode, and importing this module (tamp.prune does) imports no Hydra."""
    if name == "_SettingsEntry":
        return _entry_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _entry_class() -> type:
    """Hydra's ConfigNode whose `node` is made from its settings on first use (see `__getattr__`)."""
    from hydra.core.config_store import ConfigNode
    from omegaconf import OmegaConf

    class _SettingsEntry(ConfigNode):
        """`ConfigStore.load` copies an entry, then deep-copies the copy's node into the config it composes: the
        copy is a plain ConfigNode holding the node, made once and kept here. Nothing changes the entry after
        that, so the deep copy of the whole store that each of Hydra's compositions makes (its caching
        repository) shares it: the node is made once per process, not once per composition."""

        def __init__(self, name: str, settings: Any, group: str | None) -> None:
            # not ConfigNode's own __init__: it sets `node`, which waits for its first use
            self.name, self.group, self.package, self.provider = name, group, None, None
            self.settings = settings
            self._node: Any = None

        @property  # type: ignore[override]
        def node(self) -> Any:
            if self._node is None:
                self._node = OmegaConf.structured(self.settings)
            return self._node

        @node.setter
        def node(self, value: Any) -> None:
            self._node = value

        def __copy__(self) -> ConfigNode:
            return ConfigNode(name=self.name, node=self.node, group=self.group, package=self.package,
                              provider=self.provider)

        def __deepcopy__(self, memo: dict[int, Any]) -> _SettingsEntry:
            return self

    _SettingsEntry.__qualname__ = _SettingsEntry.__name__  # pickled by reference: this module's `_SettingsEntry`
    return _SettingsEntry


def method_kinds() -> dict[str, Any]:
    """{name: settings} of every registered method kind but the composed one: each is a `method` option
    beside the presets (`method=row_norm method.power=1`), its settings dataclass typing the method node.

    Only kinds whose module is imported are listed (a kind registers when its module is imported; the
    package walk would import the engine and torch, which composing a config never does). A kind named
    like a preset is refused: `method=NAME` would pick one of the two silently.
    """
    from tamp.core.registries import COMPOSED, METHODS

    entries = {name: entry for name, entry in sorted(METHODS.entries.items()) if name != COMPOSED}
    if not entries:  # none imported (`--help`, a completion): nothing to type, the components' module not loaded
        return {}
    from tamp.methods.components import KindConfig

    kinds = {name: (entry.config or KindConfig)(kind=name, name=name) for name, entry in entries.items()}
    clash = sorted(set(kinds) & set(preset_names()))
    if clash:
        raise ValueError(f"method.kind={clash[0]} is registered, but conf/method/{clash[0]}.yaml is a preset of "
                         "that name; valid: a kind named unlike every preset (method=NAME picks either)")
    return kinds


def preset_names() -> list[str]:
    """The method presets of conf/method/, by name."""
    return sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))


@contextmanager
def _conf_dir() -> Iterator[None]:
    """Hydra initialised at conf/ for one composition, whatever Hydra state the caller had (restored)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            yield
    finally:
        restore_gh_from_backup(backup)


def compose_method(name: str, overrides: Sequence[str] = ()) -> MethodConfig:
    """The preset `name` of conf/method with Hydra overrides on it, resolved and checked."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from tamp.core.io import first_line
    from tamp.methods.components import check_makeup, override_key, override_message, resolve_method

    if name not in preset_names():
        raise ValueError(f"method preset '{name}' is unknown; valid: {', '.join(preset_names())}")
    for line in overrides:
        if not override_key(line).startswith(("method.", "method/")):
            raise ValueError(f"override '{line}' is not a method setting; valid: method.KEY=VALUE or "
                             "method/allocation=NAME, method/tokens=NAME (and keyword arguments: "
                             f"sparsity, pattern, {', '.join(SETTINGS)})")
    register_components()
    try:
        with _conf_dir():
            cfg = compose(overrides=[f"+method={name}", *overrides])
    except (HydraException, OmegaConfBaseException) as err:
        message = override_message(err, overrides)
        raise ValueError(f"method preset '{name}': {message}" if message
                         else f"method preset '{name}' with {list(overrides)}: {first_line(err)}") from None
    method = resolve_method(cfg.method)
    if any(override_key(line) == "method.name" for line in overrides):
        check_makeup(method, name_given=True)  # a name set by hand may not name another preset
    return method


def prune_config(
    config: PruneConfig | dict[str, Any] | str | Any | None,
    sparsity: float | None = None,
    pattern: str | None = None,
    overrides: Sequence[str] = (),
    **settings: Any,
) -> PruneConfig:
    """A checked PruneConfig from a preset name, a PruneConfig, a dict or an OmegaConf node, plus keywords.

    `sparsity` and `pattern` set `sparsity.target` and `sparsity.pattern`; the other keywords set the
    PruneConfig field of their name (seed, device, offload, progress, targets, ignore, keep_masks, ...).
    """
    from dataclasses import replace

    from tamp.methods.components import as_prune_config, resolve

    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"tamp.prune got an unknown setting '{unknown[0]}'; valid: sparsity, pattern, "
                         f"overrides, {', '.join(SETTINGS)}")
    if isinstance(config, dict) and isinstance(config.get("method"), str):  # {"method": "tamp", "sparsity": ...}
        config = {**config, "method": compose_method(config["method"], overrides)}
        overrides = ()
    if isinstance(config, str):
        cfg = PruneConfig(method=compose_method(config, overrides))
    else:
        if overrides:
            raise ValueError("overrides apply to a preset by name (tamp.prune(model, samples, 'tamp', "
                             "overrides=[...])); with a config object, set the values in it")
        cfg = as_prune_config(config)
    target = cfg.sparsity.target if sparsity is None else sparsity
    cfg = replace(cfg, sparsity=SparsityConfig(target, cfg.sparsity.pattern if pattern is None else pattern),
                  **settings)
    return resolve(cfg)
