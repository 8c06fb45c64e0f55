"""Every method preset in conf/method/ composes and prunes a tiny random LLaVA-NeXT end to end.

Presets are composed the way a run composes them (Hydra's compose API on conf/run.yaml, so a preset's
`defaults: [other, _self_]` list is honoured and the structured schema checks every key), then pruned
through `tamp.prune` with the run's own model loader and calibration builder. The target 0.625 differs
from the official magnitude baseline's 1 - p and lies on the tiny model's row grid (in_features 64 and
128): uniform presets prune int(in_features * p) per row, which at e.g. p = 0.6 would fall 0.6% short.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

import tamp
from tamp.cli.schema import validate
from tamp.core.paths import CONF_DIR
from tamp.data.sources import calibration_samples
from tamp.models.named import load_named_model

CONF = CONF_DIR
PRESETS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
TARGET = 0.625
TOLERANCE = 0.005


def _overrides(preset: str) -> list[str]:
    return [
        f"method={preset}",
        "model=tiny_llava_next",
        "logger=none",
        "calib.num_samples=2",
        f"sparsity.target={TARGET}",
        "runner.device=cpu",
        "runner.progress=false",
    ]


def test_every_preset_is_listed() -> None:
    expected = {"magnitude", "wanda", "sparsegpt", "dense", "owl", "ecoflap", "das", "tamp", "amia"}
    assert expected <= set(PRESETS)
    for preset in PRESETS:  # plain YAML: loads without Hydra
        assert OmegaConf.load(CONF / "method" / f"{preset}.yaml") is not None


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_prunes_tiny_llava_next_to_its_plan(compose_cfg, preset: str) -> None:
    cfg = compose_cfg(_overrides(preset))
    settings = validate(cfg)
    prune_cfg = settings.prune_config()
    assert prune_cfg.method.name == preset
    loaded = load_named_model(settings.model_settings())
    model, adapter = loaded.model, loaded.adapter
    samples = calibration_samples(settings.calib, adapter, loaded.examples)
    report = tamp.prune(model, samples, prune_cfg, adapter=adapter)

    assert report.linears
    for linear in report.linears:
        assert linear.pruned == linear.planned_pruned, linear.name
    if preset == "dense":
        assert report.achieved == 0.0
    elif getattr(settings.method, "compat_magnitude", False):  # the official magnitude baseline prunes 1 - p by design
        assert abs(report.achieved - (1 - TARGET)) <= TOLERANCE
    else:
        assert abs(report.achieved - TARGET) <= TOLERANCE, f"{preset}: {report.achieved:.4f}"
    if settings.method.allocation.name != "uniform":
        assert report.allocation_scores, f"{preset}: the allocation reports no scores"


def test_tamp_reference_reproduces_the_official_code_fully(compose_cfg) -> None:
    """The reproduction preset turns on every official-code variant, the allocator's over-shoot included."""
    method = validate(compose_cfg(["method=tamp_reference"])).prune_config().method
    assert method.allocation.name == "das" and method.allocation.variant == "reference"
    assert method.allocation.official_overshoot is True
    assert method.tokens.name == "amia" and method.tokens.variant == "reference"
    tamp_method = validate(compose_cfg(["method=tamp"])).prune_config().method
    assert tamp_method.allocation.official_overshoot is False  # the paper's preset keeps the corrected allocator
