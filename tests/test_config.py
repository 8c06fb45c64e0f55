"""Hydra composition: every experiment and preset composes; bad keys and values fail with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tamp.cli.schema import validate
from tamp.core.paths import CONF_DIR, EXPERIMENTS_DIR

pytestmark = pytest.mark.fast  # the unit tier: make test-fast

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
PRESETS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))




def test_default_config_composes_and_validates(compose_cfg) -> None:
    settings = validate(compose_cfg([]))
    assert settings.model.name == "tiny:llava_next"
    assert settings.method.pruner == "wanda" and settings.sparsity.target == 0.5


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(compose_cfg, name: str) -> None:
    cfg = compose_cfg([f"+experiment={name}"], hydra=True)
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
def test_every_method_preset_composes(compose_cfg, name: str) -> None:
    settings = validate(compose_cfg([f"method={name}"]))
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
def test_bad_values_give_one_line_naming_the_key(compose_cfg, override: str, fragment: str) -> None:
    with pytest.raises(ValueError) as err:
        validate(compose_cfg([override]))
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize("override", ["method.foo=1", "sparsity.amount=0.5", "runner.gpus=2", "nonsense=1"])
def test_unknown_keys_stop_composition_naming_the_key(compose_cfg, override: str) -> None:
    key = override.split("=")[0].split(".")[-1]
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg([override])
    assert key in str(err.value) or key in str(err.value.__cause__)


def test_unknown_group_option_lists_the_valid_ones(compose_cfg) -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["method=tampp"])
    assert "tampp" in str(err.value) and "tamp" in str(err.value)
