"""Where a model is evaluated: decided from the runner, recorded in results.json, applied to the whole model.

On a GPU node every paper setup (conf/setup/*.yaml: runner=gpu_offload) must score on the GPU, for
the dense cell (loaded on the CPU, never moved by pruning), a pruned cell and a pruned cell with
offload (decoder blocks left in CPU memory). The decision is checked here for every setup and cell
kind with CUDA availability mocked (Lightning's own Fabric computes the device); the application on
the CPU (the device recorded is where every parameter is when generate() runs); a model split over
devices is refused before any generate(). The GPU node check (benchmarks/gpu_node_check.py) applies
it on a real device.
"""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest
import torch
from tiny_models import fresh_tiny

import tamp
from tamp.cli.run_command import run
from tamp.cli.runner import make_fabric
from tamp.cli.schema import validate
from tamp.core.paths import CONF_DIR
from tamp.eval.placement import eval_device, model_devices, place_for_eval

REPO = Path(__file__).resolve().parents[1]
SETUPS = sorted(p.stem for p in (CONF_DIR / "setup").glob("*.yaml"))
CELL_KINDS = {
    "dense": ["method=dense"],
    "pruned": ["method=wanda", "runner.offload=false"],
    "offload": ["method=wanda", "runner.offload=true"],
}


def _mock_cuda(count: int):
    """CUDA present with `count` devices, as far as torch's and Lightning's checks can tell."""
    return (
        mock.patch("torch.cuda.is_available", return_value=True),
        mock.patch("torch.cuda.device_count", return_value=count),
        mock.patch("lightning.fabric.accelerators.cuda.num_cuda_devices", return_value=count),
    )


def _decide(compose_cfg, overrides: list[str], cuda_count: int = 1) -> torch.device:
    a, b, c = _mock_cuda(cuda_count)
    with a, b, c:
        settings = validate(compose_cfg(overrides))
        fabric = make_fabric(settings)
        return eval_device(settings.runner.eval_device, fabric.device)


def test_every_setup_and_cell_kind_evaluates_on_the_gpu(compose_cfg) -> None:
    table = {
        (setup, kind): str(_decide(compose_cfg, [f"+setup={setup}", *overrides]))
        for setup in SETUPS
        for kind, overrides in CELL_KINDS.items()
    }
    assert len(SETUPS) == 3 and len(table) == 9
    assert set(table.values()) == {"cuda:0"}, table
    # explicit settings are honoured: the CPU on request, and each rank of an 8-GPU world its own GPU
    assert str(_decide(compose_cfg, ["+setup=llava_next", "runner.eval_device=cpu"])) == "cpu"
    with mock.patch.dict("os.environ", {"LOCAL_RANK": "3"}):
        ddp = ["+setup=llava_next", "runner=ddp_gpu", "runner.devices=8"]
        assert str(_decide(compose_cfg, ddp, cuda_count=8)) == "cuda:3"
        assert str(_decide(compose_cfg, [*ddp, "runner.eval_device=cuda"], cuda_count=8)) == "cuda:3"
    assert str(_decide(compose_cfg, ["runner=cpu"])) == "cpu"


def test_eval_device_values_are_checked_in_one_line(compose_cfg) -> None:
    from tamp.cli.preflight import check_run_config

    with pytest.raises(ValueError, match=r"^runner.eval_device='gpu7' is not valid; valid: auto"):
        check_run_config(compose_cfg(["runner.eval_device=gpu7"]))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="runner.eval_device=cuda but no CUDA device is present"):
            check_run_config(compose_cfg(["runner.eval_device=cuda"]))


@pytest.mark.parametrize("kind", list(CELL_KINDS))
def test_recorded_eval_device_is_where_the_model_is_at_generate_time(kind: str, compose_cfg, tmp_path: Path) -> None:
    from tamp.eval.lmms_model import TampLMM

    seen: list[set[str]] = []
    original = TampLMM.generate_batch

    def spy(self, *args, **kwargs):
        seen.append({str(d) for d in model_devices(self.model)} | {str(self.device)})
        return original(self, *args, **kwargs)

    cfg = compose_cfg(["runner=cpu", "eval=tiny", "eval.limit=2", "calib.num_samples=2", "logger=none",
                       "runner.progress=false", *CELL_KINDS[kind]])
    with mock.patch.object(TampLMM, "generate_batch", spy):
        run(cfg, tmp_path)
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["status"] == "completed"
    devices = record["devices"]
    assert devices["offload"] is (kind == "offload")
    assert devices["prune"] == (None if kind == "dense" else "cpu")
    assert seen and all(s == {devices["eval"]} for s in seen), (devices, seen)


def test_a_model_on_several_devices_is_moved_whole_or_refused() -> None:
    bundle = fresh_tiny("llava_next")
    model = bundle.model
    model.lm_head.to("meta")  # stands in for a part left on another device (offload leaves the blocks)
    with pytest.raises(ValueError, match=r"parameters are on cpu, meta: evaluation needs one device"):
        place_for_eval(model, None)
    other = fresh_tiny("llava_next").model
    assert place_for_eval(other, "cpu") == torch.device("cpu") and model_devices(other) == {torch.device("cpu")}


@pytest.mark.filterwarnings("ignore:The following device_map keys do not match")
def test_a_device_map_dispatched_model_is_refused_before_any_work(tmp_path: Path) -> None:
    from accelerate import dispatch_model

    bundle = fresh_tiny("llava_next")
    blocks = "model.language_model.layers"
    device_map = {"model.vision_tower": "cpu", "model.multi_modal_projector": "cpu", "model.image_newline": "cpu",
                  "model.language_model.embed_tokens": "cpu", f"{blocks}.0": "cpu", f"{blocks}.1": "disk",
                  "model.language_model.norm": "cpu", "model.language_model.rotary_emb": "cpu", "lm_head": "cpu"}
    model = dispatch_model(bundle.model, device_map=device_map, offload_dir=str(tmp_path))
    sample = bundle.example_sample(0)
    with mock.patch.object(type(model), "forward", side_effect=AssertionError("a forward ran before the refusal")):
        with pytest.raises(ValueError) as err:
            tamp.prune(model, [sample], {"method": {"pruner": "wanda"}, "progress": False}, adapter=bundle.adapter)
    message = str(err.value)
    assert "\n" not in message and "device_map over cpu, disk (hf_device_map)" in message
    assert "runner.offload=true" in message
