"""The trained zoo models shipped in the package: used when its recipe hash matches, trained otherwise.

The default test run checks that each shipped model (`default`, the demo's LLaVA-NeXT, and `v1`, the
LLaVA-1.5 it starts from) belongs to the current code (else `make demo` on a fresh clone would train
for minutes) and the ship / install mechanics on the micro recipe; the slow test trains each shipped
recipe again and compares it with the shipped weights (`default` from the shipped `v1`, which its own
case retrains from scratch).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tamp.zoo import cache as zoo_cache
from tamp.zoo import shipped
from tamp.zoo.recipe import DEFAULT, MICRO, V1, recipe_hash, replace

#: the micro zoo recipes this module builds in the session's zoo_cache_dir (started early: conftest.py)
ZOO_BUILDS = ("micro",)

#: shipped recipe -> the least first-answer-token test accuracy of any of its tasks (trained, not chance)
SHIPPED = {"default": (DEFAULT, 0.6), "v1": (V1, 0.9)}  # the default's position questions: 65% (chance 33%)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ from the shipped model: {different[:5]}"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_shipped_model_matches_the_code(name):
    recipe, least = SHIPPED[name]
    info = shipped.shipped_info(recipe)
    assert info is not None, f"no shipped model in {shipped.shipped_dir(recipe)}"
    assert info["hash"] == recipe_hash(recipe), (
        f"the zoo code or recipe changed since the '{name}' model was shipped, so a fresh build trains it for "
        f"minutes: run `python -m tamp.zoo build --recipe {name} --force && python -m tamp.zoo ship --recipe "
        f"{name}` and commit tamp/zoo/shipped/")
    assert (shipped.shipped_dir(recipe) / "model" / "model.safetensors").is_file()
    assert min(info["test_answer_accuracy"].values()) > least


@pytest.fixture()
def shipped_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "shipped"
    monkeypatch.setattr(shipped, "SHIPPED_ROOT", root)
    return root


@pytest.fixture(scope="module")
def micro_build(zoo_cache_dir) -> zoo_cache.ZooBuild:
    return zoo_cache.ensure_zoo("micro", zoo_cache_dir, progress=False)


def test_a_shipped_model_is_installed_without_training(micro_build, shipped_root, tmp_path, monkeypatch):
    dest = shipped.ship(micro_build.root, MICRO)
    assert dest == shipped_root / "micro" and (dest / "model" / "config.json").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("trained although a matching model is shipped")

    monkeypatch.setattr(zoo_cache, "_build", no_training)
    fresh = zoo_cache.ensure_zoo("micro", tmp_path / "fresh", progress=False)
    assert fresh.info["source"] == "shipped" and fresh.info["hash"] == recipe_hash(MICRO)
    _assert_same_weights(fresh.model_dir, micro_build.model_dir)
    for name in ("calib.json", "test.json", "test_color.json"):
        assert (fresh.data_dir / name).read_bytes() == (micro_build.data_dir / name).read_bytes()
    assert json.loads((fresh.data_dir / "train.json").read_text()) == [], "an install needs no training split"
    again = zoo_cache.ensure_zoo("micro", tmp_path / "fresh")
    assert again.info == fresh.info, "the installed build is a cache hit afterwards"


def test_a_shipped_model_of_another_hash_is_not_used(micro_build, shipped_root, tmp_path, monkeypatch):
    shipped.ship(micro_build.root, MICRO)
    record = shipped_root / "micro" / "build.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "hash": "0" * 16}))
    trained = []
    monkeypatch.setattr(zoo_cache, "_build", lambda recipe, root, *a: trained.append(root) or {"hash": root.name})
    zoo_cache.ensure_zoo("micro", tmp_path / "fresh", progress=False)
    assert trained, "a stale shipped model must not stand in for the code's recipe"


def test_force_trains_even_when_a_model_is_shipped(micro_build, shipped_root, tmp_path, monkeypatch):
    shipped.ship(micro_build.root, MICRO)
    trained = []
    monkeypatch.setattr(zoo_cache, "_build", lambda recipe, root, *a: trained.append(root) or {"hash": root.name})
    zoo_cache.ensure_zoo("micro", tmp_path / "fresh", force=True, progress=False)
    assert trained


def test_ship_refuses_a_build_of_other_code_or_the_shipped_copy(micro_build, shipped_root, tmp_path):
    with pytest.raises(ValueError, match="built from hash"):
        shipped.ship(micro_build.root, replace(MICRO, train=replace(MICRO.train, lr=1e-3)))
    shipped.ship(micro_build.root, MICRO)
    installed = zoo_cache.ensure_zoo("micro", tmp_path / "fresh", progress=False)
    with pytest.raises(ValueError, match="shipped model itself"):
        shipped.ship(installed.root, MICRO)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_training_from_scratch_reproduces_the_shipped_weights(name, tmp_path):
    """v1 ~12 minutes on 2 idle cores, default ~13 (from the shipped v1): the build is deterministic, so a rebuild equals what is shipped."""
    recipe, _ = SHIPPED[name]
    build = zoo_cache.ensure_zoo(name, tmp_path, force=True, progress=False)
    assert build.info.get("source") != "shipped"
    _assert_same_weights(build.model_dir, shipped.shipped_dir(recipe) / "model")
