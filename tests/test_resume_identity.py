"""What a checkpoint and a run directory are tied to: the config, the weights, the calibration media.

A resume must never mix two experiments: another config, another checkpoint of the same
architecture, or a calibration set with the same text and other images is another run. The plan's
allocation scores come back with the plan; an interrupted run says "interrupted", not "failed".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_models import fresh_tiny

import tamp
from tamp.api.functions import fingerprint
from tamp.cli.run_command import run
from tamp.cli.rundir import RunDirRefused, check_run_dir
from tamp.eval.evaluate import evaluate
from tamp.eval.lmms_model import NonFiniteLogitsError
from tamp.methods.components import as_prune_config
from tamp.models.tiny import build_tiny
from tamp.pipeline.engine import LayerwiseEngine
from tamp.tracking.results import ResultsFile

REPO = Path(__file__).resolve().parents[1]
CFG = as_prune_config({"device": "cpu", "progress": False})


QUIET = ["logger=none", "runner.progress=false"]


@pytest.fixture(scope="module")
def bundle():
    return fresh_tiny("llava_next")


def test_the_fingerprint_covers_the_calibration_pixels(bundle) -> None:
    sample = bundle.example_sample()
    other = bundle.example_sample()
    other.inputs = {**other.inputs, "pixel_values": other.inputs["pixel_values"].clone() + 0.5}
    assert torch.equal(sample.inputs["input_ids"], other.inputs["input_ids"]), "same text"
    assert fingerprint(bundle.model, [sample], CFG) == fingerprint(bundle.model, [bundle.example_sample()], CFG)
    assert fingerprint(bundle.model, [sample], CFG) != fingerprint(bundle.model, [other], CFG)


def test_the_fingerprint_covers_the_weights(bundle) -> None:
    samples = [bundle.example_sample()]
    other = build_tiny("llava_next", seed=1)  # same architecture and config, other weights
    assert other.model.config.to_json_string() == bundle.model.config.to_json_string()
    assert fingerprint(bundle.model, samples, CFG) != fingerprint(other.model, samples, CFG)


def test_resumed_plan_keeps_its_allocation_scores(tmp_path: Path) -> None:
    cfg = {"device": "cpu", "progress": False, "checkpoint_dir": str(tmp_path),
           "method": {"pruner": "wanda", "allocation": {"name": "das"}}}
    first = fresh_tiny("llava_next")
    samples = [first.example_sample()]
    full = tamp.prune(first.model, samples, cfg, adapter=first.adapter)
    assert full.allocation_scores, "DAS scores every linear"
    progress = tmp_path / "progress.json"
    saved = json.loads(progress.read_text())
    saved["completed_blocks"] = 1  # as if killed after the first block
    progress.write_text(json.dumps(saved))
    again = fresh_tiny("llava_next")
    resumed = tamp.prune(again.model, [again.example_sample()], cfg, adapter=again.adapter)
    assert resumed.allocation_scores == full.allocation_scores


def test_resume_refusals_leave_the_directory_untouched(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg([*QUIET, "calib.num_samples=1"])
    with pytest.raises(RunDirRefused, match="does not exist"):
        check_run_dir(tmp_path / "nope", cfg, resume=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirRefused, match="holds no checkpoint"):
        check_run_dir(tmp_path / "empty", cfg, resume=True)
    done = tmp_path / "done"
    results = run(cfg, done)
    assert results["status"] == "completed"
    before = (done / "results.json").read_text()
    with pytest.raises(RunDirRefused, match="completed run"):
        check_run_dir(done, cfg, resume=True)
    other = compose_cfg([*QUIET, "calib.num_samples=1", "method=sparsegpt"])
    with pytest.raises(RunDirRefused, match=r"another configuration \(method\.name"):
        run(other, done)
    assert (done / "results.json").read_text() == before
    run(compose_cfg([*QUIET, "calib.num_samples=1", "runner.progress=true"]), done)  # a volatile setting may differ


def test_an_interrupted_run_says_so(tmp_path: Path) -> None:
    data = ResultsFile(tmp_path, {}).fail(KeyboardInterrupt("signal SIGTERM"))
    assert data["status"] == "interrupted" and "SIGTERM" in data["error"]
    assert ResultsFile(tmp_path, {}).fail(ValueError("bad"))["status"] == "failed"


def test_float16_is_applied_to_tiny_models(compose_cfg, tmp_path: Path) -> None:
    from tamp.cli.schema import validate
    from tamp.models.named import load_named_model

    model = load_named_model(validate(compose_cfg([*QUIET, "model.dtype=float16"])).model_settings()).model
    assert {p.dtype for p in model.parameters()} == {torch.float16}


def test_nan_logits_fail_the_evaluation(bundle) -> None:
    model = fresh_tiny("llava_next").model
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    for task in ("tamp_tiny_colour", "tamp_tiny_colour_mc"):  # generation and log-likelihood
        with pytest.raises(NonFiniteLogitsError, match="non-finite logits"):
            evaluate(model, bundle.processor, bundle.adapter, [task], limit=1)


def test_engine_protocol_is_unchanged_for_methods_without_plan_state(bundle) -> None:
    class Plain:  # a LayerwiseMethod of its own, with no plan_state / restore_plan_state
        needs_block_forward = False

        def plan(self, engine):
            return {n: 0.0 for linears in engine.linears for n in linears}

        def begin_block(self, index, linears):
            pass

        def observe(self, name, x, z, ctx):
            pass

        def end_block(self, index, linears, plan, engine):
            return {n: torch.zeros_like(lin.weight, dtype=torch.bool) for n, lin in linears.items()}

    model = fresh_tiny("llava_next")
    engine = LayerwiseEngine(model.model, model.adapter, [model.example_sample()], device=torch.device("cpu"),
                             progress=False)
    plan, masks = engine.prune(Plain())
    assert set(plan) == set(masks)
