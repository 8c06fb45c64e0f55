"""Trained zoo models shipped inside the package, so a first `make demo` does not train for minutes.

`tamp/zoo/shipped/<recipe>/` holds `build.json` (the record of the build that trained it, with the
recipe hash it was built from) and `model/` (the checkpoint, ~4 MB). A shipped model is used only
when its hash equals the current code's `recipe_hash`: the data is regenerated (seconds, seeded),
checked against the fingerprint the hash covers, and the weights are copied. Any other hash means
the recipe, the data's bytes or the model code changed since it was shipped, and the cache trains
the model as before (a generator edit that keeps the data keeps the hash: tamp.zoo.datalock). Maintainers refresh it with
`python -m tamp.zoo build --force && python -m tamp.zoo ship`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tamp.zoo.recipe import ZooRecipe, recipe_hash

SHIPPED_ROOT = Path(__file__).parent / "shipped"
BUILD_FILE = "build.json"


def shipped_dir(recipe: ZooRecipe) -> Path:
    return SHIPPED_ROOT / recipe.name


def shipped_info(recipe: ZooRecipe) -> dict[str, Any] | None:
    """The shipped build record of this recipe, or None when nothing is shipped for it."""
    root = shipped_dir(recipe)
    try:
        info = json.loads((root / BUILD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if (root / "model" / "config.json").is_file() else None


def usable(recipe: ZooRecipe) -> dict[str, Any] | None:
    """The shipped record when its weights were trained from exactly this code and recipe."""
    info = shipped_info(recipe)
    return info if info is not None and info.get("hash") == recipe_hash(recipe) else None


def copy_model(recipe: ZooRecipe, dest: Path) -> None:
    """Copy the shipped checkpoint to `dest` (replaced if present)."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(shipped_dir(recipe) / "model", dest)


def ship(build_root: Path, recipe: ZooRecipe) -> Path:
    """Copy a finished build's model and record into the package (what `python -m tamp.zoo ship` does)."""
    info = json.loads((build_root / BUILD_FILE).read_text())
    if info.get("hash") != recipe_hash(recipe):
        raise ValueError(f"{build_root} was built from hash {info.get('hash')}, the code's is "
                         f"{recipe_hash(recipe)}: rebuild with `python -m tamp.zoo build --force` first")
    if info.get("source") == "shipped":
        raise ValueError(f"{build_root} holds the shipped model itself; rebuild with "
                         "`python -m tamp.zoo build --force` to ship freshly trained weights")
    dest = shipped_dir(recipe)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(build_root / "model", tmp / "model")
    (tmp / BUILD_FILE).write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
