"""The zoo data's fingerprints, recorded per data recipe so a recipe hash needs no generation.

A zoo model's recipe hash covers the bytes of the data it is trained on (tamp.zoo.build.fingerprint:
each split's records and pixels, the vocabulary, the task table), not the source of the generator
that makes them, so a generator refactor that makes the same bytes keeps every hash and every
shipped model. Generating the default's data in memory takes 15-20 s on 2 cores, and as long again
for v1's (the default's hash includes v1's): too long for a path lookup (`build_dir` runs in config
resolvers) or a shipped model's install (2 s), so data_lock.json records each named recipe's
fingerprint with the hash of the generator source it was measured on. While that source is
unchanged the record is the fingerprint; after an edit the data is generated again (in memory,
once per process) and its bytes decide, until `python -m tamp.zoo lock` measures and records again.
A recipe without a record (tests build their own) is generated the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tamp.core.io import write_text_atomic
from tamp.zoo.build import code_hash, fingerprint

if TYPE_CHECKING:
    from tamp.zoo.recipe import DataRecipe

LOCK = Path(__file__).parent / "data_lock.json"
_MEASURED: dict[tuple[str, str], dict[str, str]] = {}  # (data key, generator hash) -> fingerprint, this process


def data_key(data: DataRecipe) -> str:
    """The lock's name for a data recipe: world, split sizes and seed."""
    return f"{data.world}/{data.train}-{data.calib}-{data.test}/seed{data.seed}"


def _read() -> dict[str, dict]:
    try:
        return json.loads(LOCK.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as err:
        raise ValueError(f"{LOCK} is not valid JSON ({err}); rewrite it with `python -m tamp.zoo lock`") from err


def recorded(data: DataRecipe) -> dict[str, str] | None:
    """The locked fingerprint of `data` when it was measured on the current generator source, else None."""
    entry = _read().get(data_key(data))
    return entry["fingerprint"] if entry and entry.get("generator") == code_hash(data.world) else None


def measure(data: DataRecipe, progress: bool | None = False) -> dict[str, str]:
    """Generate `data` in memory (nothing written) and return its fingerprint; remembered for this process."""
    key = (data_key(data), code_hash(data.world))
    if key not in _MEASURED:
        _MEASURED[key] = fingerprint(data.sizes(), data.seed, data.world,
                                     workers=min(4, os.cpu_count() or 1), progress=progress)
    return _MEASURED[key]


def data_fingerprint(data: DataRecipe) -> dict[str, str]:
    """The fingerprint of the data `data` generates: recorded when the generator is unchanged, else measured."""
    return recorded(data) or measure(data)


def lock(recipes: dict[str, object], progress: bool | None = None) -> dict[str, str]:
    """Measure every named recipe's data and record it in data_lock.json (only theirs); returns
    {recipe: "same" | "changed" | "new"}: a changed fingerprint changes the recipe's hash (retrain, ship)."""
    old, entries, verdict = _read(), {}, {}
    for name, recipe in recipes.items():
        data = recipe.data  # type: ignore[attr-defined]
        key = data_key(data)
        if key not in entries:
            entries[key] = {"generator": code_hash(data.world), "fingerprint": measure(data, progress)}
        before = old.get(key, {}).get("fingerprint")
        verdict[name] = "new" if before is None else "same" if before == entries[key]["fingerprint"] else "changed"
    write_text_atomic(LOCK, json.dumps(entries, indent=1, sort_keys=True) + "\n")
    return verdict


__all__ = ["LOCK", "data_fingerprint", "data_key", "lock", "measure", "recorded"]
