"""A method is refused in one line when a component cannot act, its name contradicts what runs, a key is
misspelt or a setting counts more calibration samples than there are; a run is never labelled for what did
not run (issue 32, items 4, 6 and 9).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import fresh_tiny

import tamp
from tamp.cli.preflight import PreflightError, check_command
from tamp.cli.schema import validate
from tamp.methods.components import as_prune_config, check_makeup
from tamp.methods.preset_names import preset_makeup, presets
from tamp.methods.presets import preset_names, prune_config
from tamp.pruning.registry import PRUNERS
from tamp.sparsity.registry import ALLOCATIONS
from tamp.tokens.registry import SELECTORS

pytestmark = pytest.mark.fast  # the unit tier: make test-fast

REPO = Path(__file__).resolve().parents[1]
#: pruners whose masks read calibration activations (the only ones a token selector can change)
READERS = {"wanda", "sparsegpt"}


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("pruner", PRUNERS.names())
def test_every_combination_runs_or_is_refused_for_the_component_that_cannot_act(pruner: str) -> None:
    """Over the registry: a selector needs a pruner that reads activations, an allocation one that prunes."""
    assert {"none", "magnitude"} | READERS <= set(PRUNERS.names())
    for allocation, tokens in itertools.product(ALLOCATIONS.names(), SELECTORS.names()):
        config = {"method": {"pruner": pruner, "allocation": {"name": allocation}, "tokens": {"name": tokens}}}
        idle_allocation = pruner == "none" and allocation != "uniform"
        idle_tokens = tokens != "all" and pruner not in READERS
        if not (idle_allocation or idle_tokens):
            method = as_prune_config(config).method
            assert (method.pruner, method.allocation.name, method.tokens.name) == (pruner, allocation, tokens)
            continue
        with pytest.raises(ValueError) as err:
            as_prune_config(config)
        message = _one_line(err)
        if idle_allocation:
            assert message.startswith(f"method.allocation.name={allocation}: the none pruner"), message
            assert "use method.allocation.name=uniform, or a pruner that prunes: magnitude, sparsegpt, wanda" in message
        else:
            assert message.startswith(f"method.tokens.name={tokens}: the {pruner} pruner"), message
            assert message.endswith("use method.tokens.name=all, or a pruner that reads activations: sparsegpt, wanda")


@pytest.mark.integration(reason="runs `python -m tamp.run` as typed")
def test_a_selector_under_magnitude_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """`method=magnitude method/tokens=amia` used to run plain magnitude recorded as `magnitude+tokens=amia`."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "tamp.run", "method=magnitude", "method/tokens=amia",
                           f"hydra.run.dir={run_dir}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "tamp: error: method.tokens.name=amia: the magnitude pruner reads no activations, so a token selector has "
        "no effect; use method.tokens.name=all, or a pruner that reads activations: sparsegpt, wanda"]
    assert not run_dir.exists()


def test_the_makeup_table_names_every_preset() -> None:
    assert sorted(presets().by_name) == preset_names()  # each file gives its own name
    assert prune_config("tamp_reference", overrides=["method.name=tamp_reference"]).method.name == "tamp_reference"


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_is_its_own_makeup_and_validates(compose_cfg, name: str) -> None:
    """The makeup the name check reads from the file is what Hydra composes; its name set by hand passes."""
    method = validate(compose_cfg([f"method={name}"])).method
    assert (method.pruner, method.allocation.name, method.tokens.name) == preset_makeup(name)
    check_makeup(method, name_given=True)  # `method=NAME method.name=NAME` passes


@pytest.mark.parametrize(("args", "start"), [
    (["method=wanda", "method.name=dense"], "method.name=dense but method.pruner=wanda: dense names the unpruned"),
    (["method=dense", "method.pruner=wanda"], "method.name=dense but method.pruner=wanda: dense names the unpruned"),
    (["method=wanda", "method.pruner=none"], "method.pruner=none but method.name=wanda"),
    (["method=wanda", "method.name=das"], "method.name=das but method.allocation.name=uniform"),
    (["method=tamp", "method.name=amia"], "method.name=amia but method.allocation.name=das"),
], ids=["name_dense_on_wanda", "pruner_wanda_on_dense", "pruner_none_on_wanda", "name_das_on_wanda", "name_amia"])
def test_a_name_that_contradicts_the_method_is_refused(args: list[str], start: str) -> None:
    with pytest.raises(PreflightError) as err:
        check_command(args)
    message = _one_line(err)
    assert message.startswith(start), message
    assert "valid" in message or "use method=" in message


@pytest.mark.parametrize(("args", "name"), [
    (["method=wanda", "method.name=my_wanda"], "my_wanda"),  # a name of one's own
    (["method=das", "method/tokens=random", "method.name=das_random"], "das_random"),
    (["method=das", "method/tokens=random"], "das"),  # a swapped component keeps the preset's name (the ablation)
    (["method=dense", "method.name=baseline"], "baseline"),
    (["method=tamp", "method.name=tamp"], "tamp"),
])
def test_names_of_ones_own_and_swapped_components_still_work(compose_cfg, args: list[str], name: str) -> None:
    assert check_command(args) == 1
    assert validate(compose_cfg(args)).method.name == name


def test_a_dict_names_its_own_method_but_not_another_preset() -> None:
    with pytest.raises(ValueError) as err:
        as_prune_config({"method": {"name": "tamp", "pruner": "wanda", "tokens": {"name": "amia"}}})
    assert _one_line(err).startswith("method.name=tamp but method.allocation.name=uniform: tamp is the preset of")
    named = as_prune_config({"method": {"name": "mine", "pruner": "wanda", "tokens": {"name": "amia"}}})
    assert named.method.name == "mine"
    unnamed = as_prune_config({"method": {"pruner": "sparsegpt", "allocation": {"name": "das"}}})
    assert unnamed.method.name == "sparsegpt"


@pytest.mark.parametrize(("preset", "override", "valid"), [
    ("tamp", "method.tokens.knnn=5", "valid under method.tokens for method.tokens.name=amia: "
                                     "graph_gamma, knn, mmd_scale, name, penalty_gamma, variant"),
    ("random_tokens", "method.tokens.knnn=5", "valid under method.tokens for method.tokens.name=random: "
                                              "name, num_random, seed"),
    ("das", "method.allocation.foo=1", "valid under method.allocation for method.allocation.name=das: "
                                       "aggregation, max_sparsity_delta, name, official_overshoot, variant"),
    ("sparsegpt", "method.blocksz=64", "valid under method for method.pruner=sparsegpt: allocation, blocksize"),
])
def test_a_misspelt_key_lists_the_chosen_components_own_keys(preset: str, override: str, valid: str) -> None:
    """The API and the CLI: the key, the override, and the keys the chosen component really has."""
    key = override.split("=")[0]
    with pytest.raises(ValueError) as err:
        prune_config(preset, overrides=[override])
    message = _one_line(err)
    assert f"unknown config key '{key}' (given {override})" in message and valid in message, message
    with pytest.raises(PreflightError) as err:
        check_command([f"method={preset}", override])
    message = _one_line(err)
    assert f"unknown config key '{key}' (given {override})" in message and valid in message, message


def test_a_missing_group_option_lists_the_options() -> None:
    with pytest.raises(ValueError) as err:
        prune_config("tamp", overrides=["method/tokens=nope"])
    assert _one_line(err).endswith("method/tokens=nope: 'nope' is not an option of the 'method/tokens' group; "
                                   "valid: all, amia, attention, modality, random")


@pytest.mark.parametrize(("args", "fragments"), [
    (["method=ecoflap", "method.allocation.num_samples=1000", "calib.num_samples=2"],
     ["method.allocation.num_samples=1000", "calib.num_samples=2", "method.allocation.num_samples <= 2"]),
    (["method=wanda", "runner.devices=3", "calib.num_samples=2"],
     ["runner.devices=3", "calib.num_samples=2", "runner.devices <= 2"]),
])
def test_a_count_above_the_calibration_samples_is_refused(args: list[str], fragments: list[str]) -> None:
    with pytest.raises(PreflightError) as err:
        check_command(args)
    message = _one_line(err)
    assert all(f in message for f in fragments), message
    assert check_command([*args[:-1], "calib.num_samples=1000"]) == 1  # enough samples: accepted


def test_every_record_of_a_file_is_counted_when_calib_takes_them_all(tmp_path: Path) -> None:
    records = [{"id": str(i), "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "ok"}]}
               for i in range(2)]
    (tmp_path / "calib.json").write_text(json.dumps(records))
    args = ["method=ecoflap", "calib.source=llava_json", f"calib.path={tmp_path / 'calib.json'}", "calib.num_samples=null"]
    with pytest.raises(PreflightError) as err:
        check_command([*args, "method.allocation.num_samples=5"])
    assert _one_line(err).startswith("method.allocation.num_samples=5 but the calibration set has 2 samples (every "
                                     f"record of calib.path={tmp_path / 'calib.json'})")
    assert check_command([*args, "method.allocation.num_samples=2"]) == 1


@pytest.mark.integration(reason="builds a tiny model to prune")
def test_the_api_refuses_a_count_above_the_samples_given_before_scoring() -> None:
    bundle = fresh_tiny("llava_next")
    samples = [bundle.example_sample(0)] * 2
    config = {"method": {"pruner": "wanda", "allocation": {"name": "ecoflap", "num_samples": 3}},
              "device": "cpu", "progress": False}
    weights = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    with pytest.raises(ValueError) as err:
        tamp.prune(bundle.model, samples, config, adapter=bundle.adapter)
    assert _one_line(err) == ("method.allocation.num_samples=3 but the calibration set has 2 samples; "
                              "valid: method.allocation.num_samples <= 2, or null for all of them")
    assert all(bundle.model.state_dict()[k].equal(v) for k, v in weights.items())  # nothing was pruned
