"""A pruning job's settings resolved through the component registries: one validation path.

Hydra's run schema (tamp.cli.schema), `tamp.prune(model, samples, dict)` and the tests all come here.
The method's own keys become the settings dataclass of the pruner it names, `method.allocation` and
`method.tokens` those of the allocation and selector they name, each checked by its own `check()`;
an unknown name or key is one line naming it and the valid ones. The composition is checked as a
whole too: a component that cannot act under the pruner, a name that contradicts what runs and a
setting that counts more calibration samples than there are are refused in one line. A method of
another kind (`method.kind`, tamp.core.registries.METHODS) is checked as the settings its registration names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from tamp.core.config import AllocationConfig, MethodConfig, PruneConfig, TokensConfig, from_dict
from tamp.core.registries import COMPOSED, METHODS, as_fields, method_kind
from tamp.methods.preset_names import preset_makeup, preset_name
from tamp.pruning.registry import PRUNERS, pruner_settings
from tamp.sparsity.registry import ALLOCATIONS, allocation_settings
from tamp.tokens.registry import SELECTORS, selector_settings

#: the pruner of the dense reference (prunes nothing), the allocation and selector that change nothing
DENSE_PRUNER, UNIFORM, ALL_TOKENS = "none", "uniform", "all"


@dataclass
class KindConfig(MethodConfig):
    """Settings of a registered layer-wise method other than the composed one (subclass it for your own keys).

    `kind` names the method (tamp.core.registries.register_method); `pruner` is what the summary and report show
    as its pruner (the kind, unless set). Allocation and tokens stay uniform and all: the method computes
    its own statistics and masks, and a component that does not act would be recorded as if it had.
    """

    kind: str = COMPOSED
    pruner: str = ""


def resolve_method(value: MethodConfig | Any) -> MethodConfig:
    """Checked, typed method settings from a MethodConfig, a mapping or an OmegaConf node.

    Settings already resolved (each component's own settings type, a name) are only checked again,
    and returned as they are: a run resolves its method once and passes it down unchanged.
    """
    data, _ = as_fields(value)
    if (data.get("kind") or COMPOSED) != COMPOSED:
        return _resolve_kind(value)
    data.pop("kind", None)  # `kind: composed` said explicitly: the composed method's own settings
    if _resolved(value):
        value.check()
        value.allocation.check()
        value.tokens.check()
        check_makeup(value)
        return value
    allocation = allocation_settings(data.pop("allocation", {}))
    tokens = selector_settings(data.pop("tokens", {}))
    typed = is_dataclass(value) and not isinstance(value, KindConfig)
    method = pruner_settings(value if typed else data)  # a typed node keeps its type
    method.allocation, method.tokens = allocation, tokens
    check_makeup(method)
    if not method.name:
        method.name = method.pruner
    return method


def _resolve_kind(value: MethodConfig | Any) -> MethodConfig:
    """The checked settings of the registered method `method.kind` names; a composed-only key is refused."""
    method = METHODS.settings(value, KindConfig, "method", name_key="kind")
    kind = method.kind
    for key, given, own in (("method.allocation.name", method.allocation.name, UNIFORM),
                            ("method.tokens.name", method.tokens.name, ALL_TOKENS)):
        if given != own:
            raise ValueError(f"{key}={given}: method.kind={kind} computes its own statistics and masks, so it "
                             f"has no effect; valid: {own}, or method.kind={COMPOSED} (pruner x allocation x tokens)")
    if method.pruner not in ("", kind):
        raise ValueError(f"method.pruner={method.pruner}: method.kind={kind} is not pruner x allocation x tokens; "
                         f"valid: method.pruner={kind} (or unset), or method.kind={COMPOSED}")
    method.pruner = kind
    method.name = method.name or kind
    check_makeup(method)
    return method


def reads_calibration(method: MethodConfig) -> bool:
    """Whether the method's masks depend on the calibration data: a pruner that reads activations or an
    allocation that scores (not uniform); a method of its own kind unless it says `needs_block_forward = False`."""
    kind = method_kind(method)
    if kind != COMPOSED:
        return bool(getattr(METHODS.get(kind).factory, "needs_block_forward", True))
    return _reads_activations(method.pruner) or method.allocation.name != UNIFORM


def _reads_activations(pruner: str) -> bool:
    """Whether the pruner's masks depend on calibration activations (its `needs_stats`)."""
    return bool(getattr(PRUNERS.get(pruner).factory, "needs_stats", True))


def check_makeup(method: MethodConfig, name_given: bool = False) -> None:
    """Refuse, in one line, a component that cannot act under the pruner, and a name that contradicts the method.

    A token selector only filters the activations a pruner reads (magnitude and the dense reference read
    none); an allocation only spreads what a pruner prunes (the dense reference prunes nothing). Either
    would be recorded and labelled though the masks are those of the plain pruner. The name of a preset
    that prunes may not label an unpruned method, nor `dense` a pruned one (the report would take a pruned
    run for the reference). `name_given`: the name was set explicitly (`method.name=...`, a dict's `name`),
    not kept from a preset whose components were swapped; then it may not name a preset of another makeup.
    """
    pruner, allocation, tokens = method.pruner, method.allocation.name, method.tokens.name
    if method_kind(method) != COMPOSED:  # its own kind (checked by _resolve_kind): only a preset's name is refused
        _check_name(method.name, (pruner, allocation, tokens), given=True)
        return
    readers = ", ".join(n for n in PRUNERS.names() if _reads_activations(n))
    if pruner == DENSE_PRUNER and allocation != UNIFORM:
        pruning = ", ".join(n for n in PRUNERS.names() if n != DENSE_PRUNER)
        raise ValueError(f"method.allocation.name={allocation}: the none pruner (the dense reference) prunes "
                         f"nothing, so an allocation has no effect; use method.allocation.name={UNIFORM}, or a "
                         f"pruner that prunes: {pruning}")
    if tokens != ALL_TOKENS and not _reads_activations(pruner):
        what = ("the none pruner (the dense reference) prunes nothing" if pruner == DENSE_PRUNER
                else f"the {pruner} pruner reads no activations")
        raise ValueError(f"method.tokens.name={tokens}: {what}, so a token selector has no effect; use "
                         f"method.tokens.name={ALL_TOKENS}, or a pruner that reads activations: {readers}")
    _check_name(method.name, (pruner, allocation, tokens), name_given)


def sample_counts(method: MethodConfig) -> dict[str, int]:
    """{dotted key: value} of every component setting that counts calibration samples (`num_samples`, set)."""
    parts = (("method", method), ("method.allocation", method.allocation), ("method.tokens", method.tokens))
    counts = {f"{key}.num_samples": getattr(settings, "num_samples", None) for key, settings in parts}
    return {key: value for key, value in counts.items() if isinstance(value, int) and not isinstance(value, bool)}


def check_sample_counts(method: MethodConfig, available: int, source: str = "") -> None:
    """A setting that counts more calibration samples than the run has is refused (it would use fewer, recorded as more).

    `source` says where the count comes from (`calib.num_samples=2`), '' when it is the samples given.
    """
    for key, value in sample_counts(method).items():
        if value > available:
            raise ValueError(f"{key}={value} but {samples_phrase(available, source)}; valid: {key} <= {available}, "
                             "or null for all of them")


def samples_phrase(available: int, source: str = "") -> str:
    """`the calibration set has 2 samples (calib.num_samples=2)`: for messages that compare a count with it."""
    return f"the calibration set has {available} sample{'s' if available != 1 else ''}{f' ({source})' if source else ''}"


def _check_name(name: str, makeup: tuple[str, str, str], given: bool) -> None:
    """A preset's name only on its own makeup; `dense` only unpruned, a pruning preset's name only pruned."""
    own = preset_makeup(name) or preset_makeup(name.strip().lower())
    if not name or own is None or own == makeup:
        return  # a name of one's own, or the preset's own makeup
    keys = ("method.pruner", "method.allocation.name", "method.tokens.name")
    key, value = next((k, v) for k, v, o in zip(keys, makeup, own, strict=True) if v != o)
    actual = preset_name(*makeup)
    yours = f"a name of your own (method.name=my_{actual or makeup[0]})"
    use = f"method={actual} (the preset of {' x '.join(makeup)}) or {yours}" if actual else yours
    preset = f"{name} is the preset of {' x '.join(own)}"
    if own[0] == DENSE_PRUNER and makeup[0] != DENSE_PRUNER:
        raise ValueError(f"method.name={name} but method.pruner={makeup[0]}: {name} names the unpruned reference "
                         f"(method.pruner=none), not a pruned model; use {use}")
    if makeup[0] == DENSE_PRUNER and own[0] != DENSE_PRUNER:
        raise ValueError(f"method.pruner=none but method.name={name}: the none pruner prunes nothing and {preset}; "
                         "use method=dense for the unpruned reference")
    if given:
        raise ValueError(f"method.name={name} but {key}={value}: {preset}; use {use}; to swap a component, "
                         "keep the preset's name (method=PRESET method/tokens=NAME)")


def _resolved(value: Any) -> bool:
    """Whether `value` is method settings typed as the registered settings of each component it names."""
    if not isinstance(value, MethodConfig) or not value.name:
        return False
    parts = ((PRUNERS, value, "pruner", MethodConfig), (ALLOCATIONS, value.allocation, "name", AllocationConfig),
             (SELECTORS, value.tokens, "name", TokensConfig))
    for registry, settings, key, base in parts:
        name = getattr(settings, key, None) if isinstance(settings, base) else None
        if name not in registry or type(settings) is not (registry.get(name).config or base):
            return False
    return True


def resolve(cfg: PruneConfig) -> PruneConfig:
    """`cfg` with its method resolved and its sparsity checked against the pruner (in place)."""
    cfg.method = resolve_method(cfg.method)
    cfg.sparsity.check(cfg.method.pruner)
    return cfg


def as_prune_config(config: PruneConfig | dict[str, Any] | Any | None) -> PruneConfig:
    """A checked PruneConfig from None (the defaults), a PruneConfig, a dict or an OmegaConf node."""
    if config is None:
        return resolve(PruneConfig())
    if isinstance(config, PruneConfig):
        return resolve(config)
    data, _ = as_fields(config)
    method = data.pop("method", {})
    cfg = from_dict(PruneConfig, data)
    cfg.method = method
    cfg = resolve(cfg)
    if isinstance(config, dict) and isinstance(method, dict) and method.get("name"):  # the user named it
        check_makeup(cfg.method, name_given=True)
    return cfg


def override_key(line: str) -> str:
    """The key a Hydra override line sets: `method.name` of `+method.name=x`, `method/tokens` of `method/tokens=all`."""
    return line.lstrip("+~").split("=", 1)[0]


def override_message(err: BaseException, overrides: Sequence[str],
                     keys_under: Callable[[str], list[str]] | None = None) -> str | None:
    """One line for Hydra's error on a config override: the key, the override given and what would be valid.

    Hydra says only `Could not override 'method.tokens.knnn'`; the OmegaConf error behind it knows the node
    the key was looked up in, typed as the chosen component's settings (AMIA's, DAS's), so the valid keys
    are that component's own. `keys_under(parent)` gives the keys of an untyped node (the run schema's);
    None when the error names no key.
    """
    text = str(err)
    found = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if found is not None:  # a group option that does not exist: `method/tokens=nope`
        group, option = found.groups()
        options = ", ".join(re.findall(r"^\t(\S+)$", text, flags=re.M)) or f"a file in conf/{group}/"
        given = next((o for o in overrides if override_key(o) == group), f"{group}={option}")
        return f"{given}: '{option}' is not an option of the '{group}' group; valid: {options}"
    cause = err.__cause__ if err.__cause__ is not None else err
    key = getattr(cause, "full_key", None) or _group(re.search(r"full_key: (\S+)", str(cause)))
    if not key:
        return None
    given = next((o for o in overrides if override_key(o) == key), None)
    if re.search(r"Key '[^']+' (?:not in|is not in)", str(cause)):
        parent = key.rpartition(".")[0]
        owner = getattr(cause, "object_type", None)
        valid = _keys_of(owner, getattr(cause, "parent_node", None))
        if valid is None:
            valid = keys_under(parent) if keys_under is not None else []
        where = f" under {parent}{_component_of(owner)}" if parent else ""
        return (f"unknown config key '{key}'{f' (given {given})' if given else ''}; valid{where}: "
                f"{', '.join(valid) or 'none (a leaf value)'}{_kind_hint(key)}")
    converted = re.search(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", str(cause))
    if converted:
        return f"{key}='{converted.group(1)}' is not valid; valid: a value of type {converted.group(2).lower()}"
    return None


def _kind_hint(key: str) -> str:
    """For `method.kind=X` on a preset: a registered kind is a method option of its own (tamp.methods.presets)."""
    if key != "method.kind":
        return ""
    kinds = ", ".join(sorted(n for n in METHODS.entries if n != COMPOSED)) or "none registered in this process"
    return f"; a registered method kind is chosen as method=KIND (registered: {kinds})"


def _group(match: re.Match[str] | None) -> str | None:
    return match.group(1) if match else None


def _keys_of(owner: Any, node: Any) -> list[str] | None:
    """The keys of the node a key was looked up in: its settings dataclass's fields, else its own keys."""
    if isinstance(owner, type) and is_dataclass(owner):
        return sorted(f.name for f in fields(owner))
    if owner is dict and hasattr(node, "keys"):
        return sorted(str(k) for k in node.keys())
    return None


def _component_of(owner: Any) -> str:
    """` for method.tokens.name=amia` when `owner` is a registered component's settings type, else ''."""
    for registry in (PRUNERS, ALLOCATIONS, SELECTORS, METHODS):
        # METHODS: the kinds imported so far (its walk imports the engine, and torch, which an error never needs)
        entries = registry.entries if registry is METHODS else registry.discover().entries
        for entry in entries.values():
            if entry.config is not None and entry.config is owner:
                return f" for {registry.key}={entry.name}"
    return ""
