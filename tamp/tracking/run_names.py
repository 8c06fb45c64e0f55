"""What a run is called (sweep folders, W&B runs, the report's rows, the summary line): what tells runs apart.

One rule everywhere: the method's name, plus each component (pruner, allocation, token selector) that
differs from that preset's own (`das+tokens=random`) and each variant setting that does
(`tamp+tokens.variant=reference`, `wanda+calib.draw=official`); the target sparsity and an N:M pattern
(none for the dense reference, which prunes nothing); the seed (`seed`, plus any other seed set apart
from it, e.g. `calib.seed`), except for the dense reference, which draws nothing. A saved pruned checkpoint
evaluated as is (`model.name=DIR method=dense`) is named by the method and sparsity of its manifest
and measured weights (`wanda-saved`), never `dense`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tamp.core.config import flatten
from tamp.methods.preset_names import COMPONENTS, PresetTable, preset_variants, presets

SEED = "seed"
DENSE = "dense"
#: a dense model has next to no exact zeros; more than this and it is a pruned checkpoint
DENSE_MAX_SPARSITY = 0.01
SAVED = "saved"
#: settings that pick a variant of the same computation, with the value every preset runs unless it says
#: otherwise (the components' paper defaults; `calib.draw` python): a run that differs is named by them
VARIANT_DEFAULTS: dict[str, str] = {"allocation.variant": "paper", "tokens.variant": "paper", "calib.draw": "python"}
#: pruners that read no calibration data (under the uniform allocation the draw changes nothing)
NO_DATA_PRUNERS = ("none", "magnitude")


def is_unpruned(method: Mapping[str, Any]) -> bool:
    """The method prunes nothing: the dense preset, or any method whose pruner is `none`."""
    return str(method.get("name")).lower() == DENSE or method.get("pruner") == "none"


def measured_sparse(achieved: Any) -> bool:
    """Measured weights this sparse are a pruned checkpoint, whatever method evaluated them."""
    return (isinstance(achieved, (int, float)) and not isinstance(achieved, bool) and math.isfinite(achieved)
            and achieved >= DENSE_MAX_SPARSITY)


def is_dense(result: Mapping[str, Any]) -> bool:
    """The unpruned reference (a results dict): a method that prunes nothing, on weights measured dense.

    Not a saved pruned checkpoint evaluated with `method=dense`: its measured sparsity says it is sparse.
    """
    return is_unpruned(result.get("method") or {}) and not measured_sparse((result.get("sparsity") or {}).get("achieved"))


def is_seed_key(key: str) -> bool:
    """`seed`, `calib.seed`, `method.tokens.seed`, ...: every setting that only picks a random draw."""
    return key == SEED or key.endswith(f".{SEED}")


def seed_items(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The seeds a resolved config set ({} when it recorded none); a component's `null` means the run's seed."""
    if not isinstance(config, Mapping):
        return {}
    items = {k: v for k, v in flatten(config).items() if is_seed_key(k) and v is not None}
    return {k: v for k, v in items.items() if not (isinstance(v, str) and "${" in v)}


def seed_label(items: Mapping[str, Any]) -> Any:
    """The top-level seed when every other seed follows it (the rule), else `seed=1,calib.seed=7`; None if none."""
    if not items:
        return None
    top = items.get(SEED)
    apart = {k: v for k, v in sorted(items.items()) if k != SEED and v != top}
    if not apart:
        return top
    return ",".join(f"{k}={v}" for k, v in ([(SEED, top)] if top is not None else []) + list(apart.items()))


def own_variants(name: str, table: PresetTable | None = None) -> dict[str, str]:
    """The variant settings a run of the preset `name` runs unless it says otherwise (its file's, else the defaults)."""
    return {**VARIANT_DEFAULTS, **preset_variants(name, table)}


def preset_items(name: str, table: PresetTable | None = None) -> dict[str, str]:
    """What the preset `name` runs, as report items (`method.pruner`, `method.tokens.variant`, `calib.draw`):
    the settings a run of it may differ in and still be called by it plus what differs."""
    preset = (table or presets()).by_name.get(name)
    keys = [f"method.{c}" + ("" if c == "pruner" else ".name") for c in COMPONENTS]
    own = dict(zip(keys, preset.makeup, strict=True)) if preset is not None else {}
    variants = own_variants(name, table)
    return own | {(k if k.startswith("calib.") else f"method.{k}"): v for k, v in variants.items()}


def variant_items(config: Mapping[str, Any] | None, pruner: Any, allocation: Any) -> dict[str, str]:
    """The run's variant settings (VARIANT_DEFAULTS' keys) it recorded; the draw only where data is read."""
    if not isinstance(config, Mapping):
        return {}
    method = config.get("method") if isinstance(config.get("method"), Mapping) else {}
    calib = config.get("calib") if isinstance(config.get("calib"), Mapping) else {}
    found = {}
    for key in VARIANT_DEFAULTS:
        section, leaf = key.split(".")
        node = calib if section == "calib" else method.get(section)
        value = node.get(leaf) if isinstance(node, Mapping) else None
        if isinstance(value, str) and "${" not in value:
            found[key] = value
    if pruner in NO_DATA_PRUNERS and allocation in (None, "uniform"):
        found.pop("calib.draw", None)
    return found


def method_label(
    name: str, pruner: str | None, allocation: str | None, tokens: str | None,
    variants: Mapping[str, str] | None = None, table: PresetTable | None = None,
) -> str:
    """`das` as its preset; `das+tokens=random` when a component was swapped (method.tokens.name=random),
    `tamp+tokens.variant=reference` when a variant setting differs from the preset's own. `table`: the
    presets the run's Hydra saw (tamp.methods.preset_names.presets), by default those of conf/method/."""
    table = table or presets()
    own = table.by_name.get(name)
    parts = [] if own is None else [
        f"{key}={value}" for key, value, preset in zip(COMPONENTS, (pruner, allocation, tokens), own.makeup, strict=True)
        if value is not None and value != preset]
    preset = own_variants(name, table)
    parts += [f"{key}={value}" for key, value in (variants or {}).items() if value != preset[key]]
    return "+".join([name, *parts])


def seed_words(label: Any) -> str:
    """A seed label as a sentence reads it: `seed 1`, or `seed 1, calib.seed 7` for `seed=1,calib.seed=7`."""
    text = str(label)
    if "=" not in text:
        return f"{SEED} {text}"
    return ", ".join(part.replace("=", " ", 1) for part in text.split(","))


@dataclass(frozen=True)
class RunName:
    """The parts of a run's name; `folder()`, `wandb(model)` and `label()` spell them for each place."""

    method: str
    target: float | None  # None: the dense reference
    pattern: str = "unstructured"
    seed: Any = None
    saved: bool = False  # a saved pruned checkpoint evaluated as is (method and sparsity are its own)

    @property
    def dense(self) -> bool:
        return self.target is None

    def _shows_seed(self) -> bool:
        return self.seed is not None and not self.saved and not self.dense

    def _seed_text(self) -> str:
        """`seed42`; `seed3-calib.seed7` when another seed was set apart from `seed`."""
        return f"seed{self.seed}".replace("seedseed=", "seed").replace("=", "").replace(",", "-")

    def _sparsity(self) -> str:
        return f"{round(100 * float(self.target or 0), 2):g}%"

    def folder(self) -> str:
        """`wanda_0.5_seed42`, `das+tokens=random_0.6_seed1`, `sparsegpt_0.5_2-4_seed42`, `dense`."""
        method = f"{self.method}-{SAVED}" if self.saved else self.method
        parts = [method]
        if not self.dense:
            parts.append(f"{round(float(self.target or 0), 4):g}")
            if self.pattern != "unstructured":
                parts.append(self.pattern.replace(":", "-"))
        if self._shows_seed():
            parts.append(self._seed_text())
        return "_".join(parts).replace("/", "-")

    def wandb(self, model: str) -> str:
        """`llama3-llava-next-8b-hf/tamp/50%/seed42` (`.../dense`; `.../50%-2:4/...` for N:M)."""
        method = f"{self.method}-{SAVED}" if self.saved else self.method
        parts = [model_label(model), method]
        if not self.dense:
            parts.append(self._sparsity() + ("" if self.pattern == "unstructured" else f"-{self.pattern}"))
        if self._shows_seed():
            parts.append(self._seed_text())
        return "/".join(parts)

    def label(self) -> str:
        """The method as the summary line and the report's rows read it: `wanda (saved checkpoint)`."""
        return f"{self.method} (saved checkpoint)" if self.saved else self.method


def model_label(name: str) -> str:
    """A short model name: the Hub id's or directory's last part ('tiny:llava' stays as it is)."""
    if name.startswith(("tiny:", "zoo")):
        return name
    return Path(name.rstrip("/")).name or name


def _saved_name(manifest: Mapping[str, Any] | None, measured: float | None, seed: Any) -> RunName:
    """A checkpoint pruned elsewhere: its manifest's method and pattern, the sparsity its weights have."""
    manifest = manifest or {}
    sparsity = measured if measured is not None else manifest.get("overall_sparsity")
    target = round(float(sparsity), 3) if isinstance(sparsity, (int, float)) else 0.0
    pattern = str(manifest.get("pattern") or "unstructured")
    return RunName(str(manifest.get("method") or "unknown"), target, pattern, seed, saved=True)


def name_of_config(config: Mapping[str, Any]) -> RunName:
    """A run's name from its resolved config (a dict or DictConfig; before the model is loaded)."""
    method = config.get("method") or {}
    sparsity = config.get("sparsity") or {}
    seed = seed_label(seed_items(_seed_tree(config)))
    pruner = method.get("pruner")
    if pruner == "none":
        from tamp.models.saving import saved_manifest

        manifest = saved_manifest((config.get("model") or {}).get("name"))
        if manifest is not None and float(manifest.get("overall_sparsity") or 0) >= DENSE_MAX_SPARSITY:
            return _saved_name(manifest, None, seed)
        return RunName(str(method.get("name") or "dense"), None)
    allocation = _name(method.get("allocation"))
    tokens = _name(method.get("tokens"))
    variants = variant_items(_variant_tree(config), pruner, allocation)
    name = method_label(str(method.get("name") or pruner), pruner, allocation, tokens, variants, presets(config))
    return RunName(name, float(sparsity.get("target", 0.0)), str(sparsity.get("pattern") or "unstructured"), seed)


def name_of_record(result: Mapping[str, Any]) -> RunName:
    """A run's name from its results (results.json or W&B): measured sparsity decides a saved checkpoint."""
    method = result.get("method") or {}
    sparsity = result.get("sparsity") or {}
    seed = seed_label(seed_items(result.get("config")))
    achieved = sparsity.get("achieved")
    if is_unpruned(method):
        if measured_sparse(achieved):
            return _saved_name(sparsity.get("manifest"), float(achieved), seed)
        return RunName(str(method.get("name") or "dense"), None)
    variants = variant_items(result.get("config"), method.get("pruner"), method.get("allocation"))
    name = method_label(str(method.get("name")), method.get("pruner"), method.get("allocation"), method.get("tokens"),
                        variants)
    target = sparsity.get("target")
    return RunName(name, float(target) if target is not None else 0.0, str(sparsity.get("pattern") or "unstructured"),
                   seed)


def _name(node: Any) -> str | None:
    if isinstance(node, str):
        return node
    return node.get("name") if hasattr(node, "get") else None


def _variant_tree(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config's variant settings (a DictConfig's resolved one by one, like its seeds)."""
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return dict(config)
    if not isinstance(config, DictConfig):
        return dict(config)
    tree: dict[str, Any] = {}
    for key in VARIANT_DEFAULTS:
        full = key if key.startswith("calib.") else f"method.{key}"
        try:
            value = OmegaConf.select(config, full)
        except Exception:  # noqa: BLE001 - an interpolation that does not resolve: nothing to name
            continue
        if value is not None:
            *parents, leaf = full.split(".")
            node = tree
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    return tree


def _seed_tree(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config's seed settings, resolved one by one: a value elsewhere that cannot resolve yet (`???`,
    a path only the run computes) never stops a folder from being named."""
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return dict(config)
    if not isinstance(config, DictConfig):
        return {k: v for k, v in config.items() if k != "hydra"}
    raw = OmegaConf.to_container(config, resolve=False)
    keys = [k for k in flatten({k: v for k, v in raw.items() if k != "hydra"}) if is_seed_key(k)]
    tree: dict[str, Any] = {}
    for key in keys:
        try:
            value = OmegaConf.select(config, key)
        except Exception:  # noqa: BLE001 - an interpolation that does not resolve: no seed to name
            continue
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree
