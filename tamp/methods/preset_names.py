"""The presets of conf/method/ as names: each preset's makeup (pruner x allocation x tokens), read from its file.

A run is labelled by its preset plus what differs from that preset's makeup (tamp.tracking.run_names), a name set by
hand is checked against the makeup it names (tamp.methods.components), and a method composed in Python without a
name is called by the preset of its composition (`tamp.prune(..., {"method": {"pruner": "wanda",
"allocation": {"name": "das"}, "tokens": {"name": "amia"}}})` is `tamp`). All three read the preset files
themselves, so a new preset (a new pruner's `ria.yaml`) names its runs with no table to edit.

A preset file is read as Hydra composes it, without composing: its defaults list picks the allocation and
the token selector (`allocation: das`, `override tokens: random`, `/method/tokens: amia`), may start from
another preset (`- das`) and may take a pruner's keys (`/pruner/sparsegpt@_here_`); its own keys
(`name`, `pruner`, `allocation.variant`, `tokens.variant`) apply where `_self_` stands (last if absent).
The presets Hydra can see are read: conf/method/ and the `method/` folder of every other config source of
the Hydra run or composition at hand (`hydra.searchpath=[file://DIR]`). Read once per process and folder set.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

#: the components a preset picks, in makeup order, and the schema defaults a preset that picks none runs
COMPONENTS = ("pruner", "allocation", "tokens")
DEFAULT_MAKEUP = ("wanda", "uniform", "all")  # tamp.core.config.MethodConfig / AllocationConfig / TokensConfig
#: the settings of a component that pick a variant of its computation (tamp.tracking.run_names names a run by them)
VARIANT_KEYS = ("allocation.variant", "tokens.variant")
METHOD_GROUP = "method"


@dataclass(frozen=True)
class Preset:
    """One preset file as composed: the name it gives `method.name`, its makeup, the variants it sets."""

    stem: str  # the file: `method=STEM`
    name: str
    makeup: tuple[str, str, str]
    variants: Mapping[str, str] = field(default_factory=dict)  # {"allocation.variant": "reference"}, set by it
    ancestors: tuple[str, ...] = ()  # the presets its defaults start from, nearest first


@dataclass(frozen=True)
class PresetTable:
    """Every preset Hydra can see, by the name it gives, and the makeups one preset names."""

    by_name: Mapping[str, Preset]
    named: Mapping[tuple[str, str, str], str]


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(path.read_text(), Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a method preset is a mapping of keys (name, pruner, defaults), not "
                         f"{type(data).__name__}")
    return data


def _entry(item: Any, path: Path) -> tuple[str, str | None]:
    """(group or preset, option) of one defaults entry: `das` -> ('das', None), `override tokens: x` -> ('tokens', 'x')."""
    if isinstance(item, str):
        return item, None
    if isinstance(item, dict) and len(item) == 1:
        ((key, value),) = item.items()
        words = str(key).split()
        return words[-1], None if value is None else str(value)
    raise ValueError(f"{path}: defaults entry {item!r} is not a preset name or one `group: option`")


def _compose(stem: str, files: Mapping[str, Path], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings preset `stem` composes to: {'pruner', 'allocation', 'tokens', 'name', variants..., 'ancestors'}."""
    path = files[stem]
    if stem in seen:
        raise ValueError(f"{path}: its defaults start from itself ({' -> '.join([*seen, stem])})")
    data = _read_yaml(path)
    defaults = data.get("defaults") or []
    if not isinstance(defaults, list):
        raise ValueError(f"{path}: defaults is a list, not {type(defaults).__name__}")
    if "_self_" not in defaults:
        defaults = [*defaults, "_self_"]
    state: dict[str, Any] = {"ancestors": ()}
    for item in defaults:
        target, option = _entry(item, path)
        group, _, package = target.partition("@")
        if option is None and group == "_self_":
            _apply_own(state, data)
        elif option is None and group.startswith("/pruner/"):  # a pruner's own keys: `/pruner/sparsegpt@_here_`
            state["pruner"] = group.removeprefix("/pruner/")
        elif option is None and not group.startswith("/"):  # another preset of this group: `- das`
            if group not in files:
                raise ValueError(f"{path}: defaults start from preset '{group}', which no method/ folder holds; "
                                 f"valid: {', '.join(sorted(files))}")
            parent = _compose(group, files, (*seen, stem))
            state.update({k: v for k, v in parent.items() if k != "ancestors"})
            state["ancestors"] = (group, *parent["ancestors"])
        elif option is not None:
            group = group.removeprefix(f"/{METHOD_GROUP}/")
            if group in ("allocation", "tokens"):
                state[group] = option
                state.pop(f"{group}.variant", None)  # the component's own settings replace the earlier ones
            elif group in ("/pruner", "pruner") and package == "_here_":
                state["pruner"] = option
    return state


def _apply_own(state: dict[str, Any], data: Mapping[str, Any]) -> None:
    """The preset's own keys: its name, its pruner, the variants its components run."""
    for key in ("name", "pruner"):
        if isinstance(data.get(key), str):
            state[key] = data[key]
    for key in VARIANT_KEYS:
        component, leaf = key.split(".")
        node = data.get(component)
        if isinstance(node, dict) and isinstance(node.get(leaf), str) and "${" not in node[leaf]:
            state[key] = node[leaf]


def _files(dirs: Sequence[Path]) -> dict[str, Path]:
    """{stem: file} of the presets, the first folder that holds a stem winning (as Hydra's search path)."""
    files: dict[str, Path] = {}
    for folder in dirs:
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else ():
            files.setdefault(path.stem, path)
    return files


@lru_cache(maxsize=16)
def _table(dirs: tuple[Path, ...]) -> PresetTable:
    files = _files(dirs)
    presets: dict[str, Preset] = {}
    for stem in files:
        state = _compose(stem, files)
        makeup = tuple(str(state.get(c) or d) for c, d in zip(COMPONENTS, DEFAULT_MAKEUP, strict=True))
        name = str(state.get("name") or makeup[0])
        preset = Preset(stem, name, makeup, {k: state[k] for k in VARIANT_KEYS if k in state},  # type: ignore[arg-type]
                        state["ancestors"])
        if name not in presets or stem == name:  # two files giving one name: the file of that name wins
            presets[name] = preset
    # a preset that starts from another of the same makeup runs a variant of it (`tamp_reference` of `tamp`):
    # the makeup is named by the one preset that does not; by none when several do not
    stems = {p.stem: p for p in presets.values()}
    roots: dict[tuple[str, str, str], list[str]] = {}
    for preset in presets.values():
        if not any(a in stems and stems[a].makeup == preset.makeup for a in preset.ancestors):
            roots.setdefault(preset.makeup, []).append(preset.name)  # type: ignore[arg-type]
    named = {makeup: names[0] for makeup, names in roots.items() if len(names) == 1}
    return PresetTable(presets, named)  # type: ignore[arg-type]


def _source_dirs(sources: Any) -> list[Path]:
    """The `method/` folders of Hydra config sources given as `file` ones (path, schema/scheme())."""
    dirs = []
    for source in sources or ():
        scheme = source.scheme() if callable(getattr(source, "scheme", None)) else _get(source, "schema")
        path = _get(source, "path")
        if scheme == "file" and path:
            dirs.append(Path(str(path)) / METHOD_GROUP)
    return dirs


def _get(node: Any, key: str) -> Any:
    return node.get(key) if hasattr(node, "get") else getattr(node, key, None)


def hydra_sources(config: Mapping[str, Any] | None = None) -> list[Path]:
    """The `method/` folders of the config sources a config recorded (`hydra.runtime.config_sources`, present
    when composed with its hydra node), else of the Hydra run or composition in progress; [] outside Hydra."""
    runtime = (config.get("hydra") or {}).get("runtime") if isinstance(config, Mapping) else None
    if hasattr(runtime, "get") and runtime.get("config_sources"):
        return _source_dirs(runtime.get("config_sources"))
    if "hydra" not in sys.modules:  # nothing of Hydra loaded: no search path to ask
        return []
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return _source_dirs(HydraConfig.get().runtime.config_sources)
    if GlobalHydra.instance().is_initialized():
        return _source_dirs(GlobalHydra.instance().config_loader().get_sources())
    return []


def presets(config: Mapping[str, Any] | None = None) -> PresetTable:
    """The presets Hydra sees: conf/method/, then the other config sources of `config` or of the Hydra at hand."""
    from tamp.core.paths import CONF_DIR

    dirs = [CONF_DIR / METHOD_GROUP, *hydra_sources(config)]
    unique = tuple(dict.fromkeys(d.resolve() for d in dirs))
    return _table(unique)


def preset_makeup(name: str, table: PresetTable | None = None) -> tuple[str, str, str] | None:
    """(pruner, allocation, tokens) of the preset that gives the name `name`; None when none does."""
    preset = (table or presets()).by_name.get(name)
    return preset.makeup if preset is not None else None


def preset_variants(name: str, table: PresetTable | None = None) -> dict[str, str]:
    """The variant settings (VARIANT_KEYS) the preset `name` sets itself; {} for none or no such preset."""
    preset = (table or presets()).by_name.get(name)
    return dict(preset.variants) if preset is not None else {}


def preset_name(pruner: str, allocation: str, tokens: str, table: PresetTable | None = None) -> str | None:
    """The preset of this composition, None when there is none (or several that are not variants of one)."""
    return (table or presets()).named.get((pruner, allocation, tokens))


def display_name(name: str, pruner: str, allocation: str, tokens: str) -> str:
    """The method's own name, unless it is only the pruner's default: then the composition's preset name.

    A name that differs from the pruner was chosen by someone (a preset, the user) and is kept.
    """
    if name and name != pruner:
        return name
    return preset_name(pruner, allocation, tokens) or name or pruner
