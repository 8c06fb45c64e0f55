"""The zoo's recipe hash follows the generated data's bytes, not the generator's source.

A generator refactor that makes the same bytes keeps every recipe hash (so the shipped models stay
valid); one that changes a byte changes the hash. data_lock.json records each named recipe's
fingerprint, measured on the generator source it names, so a hash costs no generation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tamp.zoo import build as zoo_build
from tamp.zoo import cache as zoo_cache
from tamp.zoo import datalock, worlds
from tamp.zoo.panel_questions import PANEL_GRID, QUESTIONS
from tamp.zoo.questions import SceneBuilder
from tamp.zoo.recipe import MICRO, MICRO_NEXT, RECIPES, recipe_hash, replace
from tamp.zoo.world import Draft

REPO = Path(__file__).resolve().parents[1]


def test_the_data_lock_is_measured_on_the_current_generator():
    stale = [name for name, r in RECIPES.items() if datalock.recorded(r.data) is None]
    assert not stale, (f"the generator changed since {datalock.LOCK.name} was written, so every recipe hash of "
                       f"{stale} generates its data first: run `python -m tamp.zoo lock` (it says whose data changed)")


@pytest.mark.parametrize("recipe", [MICRO, MICRO_NEXT], ids=lambda r: r.name)
def test_the_lock_and_a_build_record_the_bytes_the_generator_makes(recipe, tmp_path):
    measured = datalock.measure(recipe.data)
    assert measured == datalock.recorded(recipe.data), "the lock holds what generating gives"
    zoo_build.build_zoo(tmp_path, recipe.data.sizes(), recipe.data.seed, progress=False, world=recipe.data.world)
    written = json.loads((tmp_path / zoo_build.MANIFEST).read_text())["fingerprint"]
    assert written == measured, "a build's manifest and an in-memory generation fingerprint the same bytes"


def _count_all_rewritten(extra: int):
    """The panel world's count_all written anew: the same draws when `extra` is 0, one object fewer at most else."""
    def count_all(d, heldout: bool) -> Draft:
        builder = SceneBuilder(d, PANEL_GRID)
        builder.fill(d.randint(1, PANEL_GRID.max_count - extra))
        return Draft("how many objects are there?", str(len(builder.objects)), "count", "count_all", builder.scene())
    return count_all


def _panels_with(count_all) -> worlds.World:
    tasks = tuple(dataclasses.replace(t, templates=tuple(count_all if f == QUESTIONS.count_all else f
                                                         for f in t.templates)) for t in worlds.PANELS.tasks)
    return dataclasses.replace(worlds.PANELS, tasks=tasks)


@pytest.mark.parametrize(("extra", "same"), [(0, True), (1, False)], ids=["same-bytes", "other-bytes"])
def test_a_generator_edit_changes_the_hash_only_when_it_changes_the_data(extra, same, monkeypatch):
    before, v1_before = recipe_hash(MICRO_NEXT), recipe_hash(MICRO)
    monkeypatch.setitem(zoo_build.WORLDS, "panels", _panels_with(_count_all_rewritten(extra)))
    monkeypatch.setattr(datalock, "code_hash", lambda world: f"edited source {extra}")  # the lock no longer applies
    assert datalock.recorded(MICRO_NEXT.data) is None and datalock.recorded(MICRO.data) is None
    assert (recipe_hash(MICRO_NEXT) == before) is same
    assert recipe_hash(MICRO) == v1_before, "the first world's data, measured now, is what the lock says"


def test_a_docstring_edit_in_a_copy_of_the_package_keeps_the_hashes(tmp_path):
    """The literal case of the issue: the generator modules' text changes, the data and the hashes do not."""
    shutil.copytree(REPO / "tamp", tmp_path / "tamp", ignore=shutil.ignore_patterns("shipped", "__pycache__"))
    for name in ("questions.py", "panel_questions.py"):
        path = tmp_path / "tamp" / "zoo" / name
        path.write_text(path.read_text().replace('"""', '"""A fixed docstring. ', 1))
    code = ("from tamp.zoo import datalock; from tamp.zoo.recipe import MICRO, MICRO_NEXT, recipe_hash; "
            "print(datalock.__file__, datalock.recorded(MICRO_NEXT.data), recipe_hash(MICRO), recipe_hash(MICRO_NEXT))")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    where, lock_hit, micro, micro_next = out.stdout.split()
    assert where.startswith(str(tmp_path)) and lock_hit == "None", "the edited copy ran and measured its data"
    assert (micro, micro_next) == (recipe_hash(MICRO), recipe_hash(MICRO_NEXT))


def test_lock_records_each_recipes_data_and_says_whose_changed(tmp_path, monkeypatch):
    monkeypatch.setattr(datalock, "LOCK", tmp_path / "data_lock.json")
    assert datalock.recorded(MICRO.data) is None
    assert datalock.lock({"micro": MICRO}) == {"micro": "new"}
    assert datalock.recorded(MICRO.data) == datalock.measure(MICRO.data)
    assert datalock.lock({"micro": MICRO, "renamed": replace(MICRO, name="renamed")}) == {"micro": "same", "renamed": "same"}
    entry = json.loads((tmp_path / "data_lock.json").read_text())[datalock.data_key(MICRO.data)]
    entry["fingerprint"]["content"] = "0" * 64  # as if the generator had made other data before
    (tmp_path / "data_lock.json").write_text(json.dumps({datalock.data_key(MICRO.data): entry}))
    assert datalock.recorded(MICRO.data)["content"] == "0" * 64, "an unchanged generator's record is trusted"
    assert datalock.lock({"micro": MICRO}) == {"micro": "changed"}
    (tmp_path / "data_lock.json").write_text("{")
    with pytest.raises(ValueError, match=r"data_lock.json is not valid JSON .*python -m tamp.zoo lock"):
        datalock.recorded(MICRO.data)


def test_a_build_stops_when_its_data_is_not_what_the_hash_covers(tmp_path, monkeypatch):
    """E.g. a lock measured where Pillow draws otherwise: the shipped weights would stand for other data."""
    sizes = {**MICRO.data.sizes(), "train": 0}
    zoo_build.build_zoo(tmp_path / "data", sizes, MICRO.data.seed, progress=False, world=MICRO.data.world)
    zoo_cache._check_data(MICRO, tmp_path, ("calib", "test", "vocab", "tasks"))  # an install's data: as locked
    real = datalock.data_fingerprint(MICRO.data)
    monkeypatch.setattr(datalock, "data_fingerprint", lambda data: {**real, "calib": "0" * 64})
    with pytest.raises(RuntimeError, match=r"zoo recipe 'micro': the calib data generated in .* differs from the "
                                           r"fingerprint its recipe hash covers"):
        zoo_cache._check_data(MICRO, tmp_path, ("calib", "test", "vocab", "tasks"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["default", "v1"])
def test_the_shipped_recipes_locked_fingerprints_are_what_the_generator_makes(name):
    """Slow: generates the 40k-item training split in memory (10-20 s each on 2 busy cores, more under load)."""
    data = RECIPES[name].data
    assert datalock.measure(data) == datalock.recorded(data)
