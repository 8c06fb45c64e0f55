"""Hydra composition: every experiment and preset composes; bad keys and values fail with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tamp.schema import register_schema, validate

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))
PRESETS = sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))


def _compose(overrides: list[str]):
    register_schema()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("run", overrides=overrides, return_hydra_config=False)


def test_default_config_composes_and_validates() -> None:
    settings = validate(_compose([]))
    assert settings.model.name == "tiny:llava_next"
    assert settings.method.pruner == "wanda" and settings.sparsity.target == 0.5


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name: str) -> None:
    register_schema()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("run", overrides=[f"+experiment={name}"], return_hydra_config=True)
    assert cfg.experiment == name
    grid = cfg.hydra.sweeper.params
    assert grid, f"{name} has no sweep grid"
    for method in str(grid.get("method", "")).split(",") if "method" in grid else []:
        assert method in PRESETS, f"{name} sweeps unknown method preset {method}"
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    settings = validate(job)
    if not name.startswith("toy"):
        assert "/" in settings.model.name, "paper experiments use the paper's models (Hub ids)"
    assert settings.eval.tasks or name.startswith("fig7"), f"{name} evaluates nothing"


@pytest.mark.parametrize("name", PRESETS)
def test_every_method_preset_composes(name: str) -> None:
    settings = validate(_compose([f"method={name}"]))
    assert settings.method.name == name


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("sparsity.target=1.5", "sparsity.target=1.5 is out of range"),
        ("sparsity.target=-0.1", "sparsity.target=-0.1 is out of range"),
        ("sparsity.pattern=4:2", "sparsity.pattern"),
        ("sparsity.pattern=two_four", "sparsity.pattern"),
        ("method.pruner=obs", "method.pruner='obs' is unknown"),
        ("model.dtype=int3", "model.dtype='int3' is not valid"),
        ("calib.num_samples=0", "calib.num_samples=0"),
        ("calib.source=web", "calib.source='web' is unknown"),
        ("runner.devices=0", "runner.devices=0"),
        ("logger.wandb.mode=cloud", "logger.wandb.mode='cloud'"),
        ("eval.limit=0", "eval.limit=0"),
    ],
)
def test_bad_values_give_one_line_naming_the_key(override: str, fragment: str) -> None:
    with pytest.raises(ValueError) as err:
        validate(_compose([override]))
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize("override", ["method.foo=1", "sparsity.amount=0.5", "runner.gpus=2", "nonsense=1"])
def test_unknown_keys_stop_composition_naming_the_key(override: str) -> None:
    key = override.split("=")[0].split(".")[-1]
    with pytest.raises(ConfigCompositionException) as err:
        _compose([override])
    assert key in str(err.value) or key in str(err.value.__cause__)


def test_unknown_group_option_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        _compose(["method=tampp"])
    assert "tampp" in str(err.value) and "tamp" in str(err.value)
