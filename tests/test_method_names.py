"""report.summary() names a method composed in Python by its preset (TAMP, not `wanda (...)`)."""

from __future__ import annotations

import pytest
from tiny_models import fresh_tiny

import tamp
from tamp.cli.schema import validate
from tamp.core.paths import CONF_DIR
from tamp.methods.preset_names import display_name, preset_name, presets

pytestmark = pytest.mark.fast  # the unit tier: make test-fast

CONF = CONF_DIR


def _composition(compose_cfg, preset: str) -> tuple[str, str, str]:
    m = validate(compose_cfg([f"method={preset}", "logger=none"])).method
    return m.pruner, m.allocation.name, m.tokens.name


@pytest.mark.parametrize("name", sorted(set(presets().named.values())))
def test_each_named_composition_is_its_preset(compose_cfg, name: str) -> None:
    assert (CONF / "method" / f"{name}.yaml").exists()
    assert preset_name(*_composition(compose_cfg, name)) == name


@pytest.mark.integration(reason="prunes a tiny model")
def test_summary_of_tamp_composed_in_python_says_tamp() -> None:
    bundle = fresh_tiny("llava_next")
    config = {
        "method": {"pruner": "wanda", "allocation": {"name": "das"}, "tokens": {"name": "amia"}},
        "sparsity": {"target": 0.5},
        "device": "cpu",
        "progress": False,
    }
    report = tamp.prune(bundle.model, [bundle.example_sample(0)], config, adapter=bundle.adapter)
    assert report.summary().splitlines()[0].startswith("method tamp (wanda x das x amia), target 0.5")
    assert report.method_name == "tamp"


def test_chosen_names_are_kept() -> None:
    assert display_name("wanda", "wanda", "uniform", "all") == "wanda"
    assert display_name("my_tamp", "wanda", "das", "amia") == "my_tamp"  # a user's name stays
    assert display_name("tamp_reference", "wanda", "das", "amia") == "tamp_reference"
    assert display_name("wanda", "wanda", "uniform", "modality") == "modality_vl"  # the others are its variants
    assert display_name("wanda", "wanda", "uniform", "random") == "random_tokens"
    assert display_name("wanda", "wanda", "owl", "amia") == "wanda"  # no preset of that makeup
    assert display_name("sparsegpt", "sparsegpt", "das", "amia") == "tamp_sparsegpt"
