"""What defines a run's experiment, as flat `dotted.key -> value text` items read from its resolved config.

Two runs land in one report row only when these items are equal; runs that differ only in a seed
(`seed`, `calib.seed`, a method's own `method.tokens.seed`, ...: any key named `seed`) are repeats
(mean +- std over seeds). The items split in two: the table key (model and evaluation
settings: Rel.% compares only runs scored the same way, against a dense run scored the same way) and
the row key (calibration set, method and its resolved settings, sparsity, which linears are pruned).
Everything in the config that is not listed below as not defining the experiment is part of a key,
so a new knob splits rows rather than being averaged over silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tamp.core.config import REPORT_NOT_DEFINING, RUN_VOLATILE, flatten, is_under
from tamp.reporting.runs import pattern_of, run_tasks
from tamp.tracking.run_names import is_dense, is_seed_key, seed_items, seed_label

SEED = "seed"
#: settings that do not change what is measured: bookkeeping, where things run, how progress is shown
NOT_DEFINING = (*RUN_VOLATILE, *REPORT_NOT_DEFINING)
#: the settings a table shares with its dense reference run
TABLE_PREFIXES = ("model.", "eval.", "runner.precision")
Items = dict[str, str]


@dataclass(frozen=True)
class RunKey:
    """A run's experiment items; an item its results.json could not tell is absent (a wildcard)."""

    table: Items
    row: Items
    seed: Any = None


def text(value: Any) -> str:
    """A value as a comparable, printable text: JSON for lists and dicts, plain otherwise."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _defining(key: str) -> bool:
    if is_seed_key(key):
        return False
    return not is_under(key, NOT_DEFINING)


def _unresolved(value: Any) -> bool:
    """A failure recorded before the config was resolved keeps `${...}` interpolations: not comparable."""
    return isinstance(value, str) and "${" in value


def _fallback(result: dict[str, Any]) -> dict[str, Any]:
    """Items from results.json's own summary fields, for sections its config lacks (hand-made or old files)."""
    method = result["method"]
    items: dict[str, Any] = {
        "model.name": result["model"]["name"],
        "method.name": method["name"],
        "method.pruner": method.get("pruner"),
        "method.allocation.name": method.get("allocation"),
        "method.tokens.name": method.get("tokens"),
        "sparsity.target": result["sparsity"]["target"],
        "sparsity.pattern": pattern_of(result),
    }
    if result.get("scores"):
        items["eval.tasks"] = sorted(run_tasks(result))
    return {k: v for k, v in items.items() if v is not None}  # None here means "not recorded"


def experiment_items(result: dict[str, Any]) -> dict[str, Any]:
    """All defining items of a run that it recorded (unresolved ones left out)."""
    config = result.get("config") if isinstance(result.get("config"), dict) else {}
    items = {k: v for k, v in flatten(config, keep_empty=True).items() if k and _defining(k)}
    sections = {k.split(".", 1)[0] for k in items}
    for key, value in _fallback(result).items():
        if key.split(".", 1)[0] not in sections:
            items[key] = value
    # the summary fields are authoritative for what the tables show
    items["model.name"] = result["model"]["name"]
    items["method.name"] = result["method"]["name"]
    items["sparsity.target"] = result["sparsity"]["target"]
    items["sparsity.pattern"] = pattern_of(result)
    return {k: v for k, v in items.items() if not _unresolved(v)}


def is_table_item(key: str) -> bool:
    """Whether a dotted setting is one a run shares with its dense reference (model, eval, precision)."""
    return key.startswith(TABLE_PREFIXES)


def table_items(config: dict[str, Any]) -> Items:
    """The defining model, eval and precision settings of a resolved config: what the report pairs a run
    with its dense run by, and what the sweep's dense-score cache is keyed by (tamp.cli.dense_cache), so a
    cell never reuses scores of a model the report would not compare it with."""
    items = flatten(config, keep_empty=True).items()
    return {k: text(v) for k, v in items if k and _defining(k) and is_table_item(k) and not _unresolved(v)}


def run_key(result: dict[str, Any]) -> RunKey:
    """Split a run's items into its table key and row key (a dense run's row key is empty)."""
    items = experiment_items(result)
    table = {k: text(v) for k, v in items.items() if is_table_item(k)}
    row = {} if is_dense(result) else {k: text(v) for k, v in items.items() if k not in table}
    return RunKey(table=table, row=row, seed=seed_of(result))


def seed_of(result: dict[str, Any]) -> Any:
    """The run's seed (the repeat axis): `seed`, or `seed=1,calib.seed=7` when another seed was set apart
    from it (tamp.tracking.run_names); None when its config recorded none."""
    return seed_label(seed_items(result.get("config")))


def differing(keys: list[Items], skip: tuple[str, ...] = ()) -> list[str]:
    """The item names whose values differ among the given keys (missing items do not count), sorted."""
    names = {k for key in keys for k in key if k not in skip}
    return sorted(k for k in names if len({key[k] for key in keys if k in key}) > 1)


def describe(items: Items, names: list[str]) -> str:
    """`k=v, k=v` for the given names present in items (the label that tells a row or table apart)."""
    return ", ".join(f"{k}={items[k]}" for k in names if k in items)
