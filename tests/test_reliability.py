"""Pre-emption, bad input and numerical trouble: resume exactly, fail with one line, never look finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from block_delay import with_block_delay
from safetensors.torch import load_file
from tiny_models import fresh_tiny

import tamp
from tamp.cli.run_command import run
from tamp.models.tiny import save_tiny
from tamp.pipeline.checkpoint import CheckpointMismatchError
from tamp.pipeline.engine import NonFiniteError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
RUN = [sys.executable, "-m", "tamp.run", "logger=none", "method=sparsegpt", "runner.save_model=true",
       "calib.num_samples=6", "runner.progress=false"]


QUIET = ["logger=none", "runner.progress=false"]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(run_dir / "model" / "model.safetensors"))
    return {k: v for k, v in tensors.items() if "language_model" in k and ".layers." in k and k.endswith("proj.weight")}


def test_killed_run_resumes_to_the_same_masks(compose_cfg, tmp_path: Path) -> None:
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    # the uninterrupted reference: the same run in this process (only the killed one needs a process of its own)
    assert run(compose_cfg(RUN[3:]), reference)["status"] == "completed"

    slow = with_block_delay(ENV, 30)
    proc = subprocess.Popen([*RUN, f"hydra.run.dir={resumed}"], cwd=REPO, env=slow,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = resumed / "checkpoint" / "progress.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if progress.exists() and json.loads(progress.read_text())["completed_blocks"] >= 1:
            break
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert json.loads((resumed / "results.json").read_text())["status"] == "running"
    assert not (resumed / "model").exists(), "a killed run must not leave a model that looks finished"

    subprocess.run([*RUN, f"hydra.run.dir={resumed}"], cwd=REPO, env=ENV, check=True, timeout=300)
    assert json.loads((resumed / "results.json").read_text())["status"] == "completed"
    want, got = _weights(reference), _weights(resumed)
    assert want.keys() == got.keys() and len(want) == 14
    for name in want:
        assert torch.equal(want[name] == 0, got[name] == 0), f"mask of {name} differs after resume"
        assert torch.equal(want[name], got[name]), f"weights of {name} differ after resume"
    assert not (resumed / "checkpoint").exists(), "the checkpoint is removed once the run completed"


def test_checkpoint_of_another_config_is_refused(tmp_path: Path) -> None:
    bundle = fresh_tiny("llava_next")
    samples = [bundle.example_sample()]
    base = {"device": "cpu", "progress": False, "checkpoint_dir": str(tmp_path)}
    (tmp_path / "progress.json").parent.mkdir(exist_ok=True)
    (tmp_path / "progress.json").write_text(json.dumps({"fingerprint": "other", "plan": {}, "completed_blocks": 1}))
    with pytest.raises(CheckpointMismatchError, match="different configuration"):
        tamp.prune(bundle.model, samples, base, adapter=bundle.adapter)


def _calib_files(tmp_path: Path) -> dict[str, Path]:
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(tmp_path / "red.png")
    good = {"id": "a", "image": "red.png",
            "conversations": [{"from": "human", "value": "<image>\nwhat colour?"}, {"from": "gpt", "value": "red"}]}
    files = {
        "empty": "",
        "malformed": '[{"id": "a", "conversations": [',
        "no_answer": json.dumps([{**good, "conversations": good["conversations"][:1]}]),
        "missing_media": json.dumps([{**good, "image": "blue.png"}]),
        "few": json.dumps([good, {**good, "id": "b"}]),
    }
    paths = {}
    for name, text in files.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(text)
    return paths


CALIB_CASES = [
    ("missing", ["calib.path={dir}/nope.json"], "nope.json"),
    ("empty", ["calib.path={dir}/empty.json"], "empty.json"),
    ("malformed", ["calib.path={dir}/malformed.json"], "malformed.json"),
    ("no_answer", ["calib.path={dir}/no_answer.json"], "answer"),
    ("missing_media", ["calib.path={dir}/missing_media.json"], "blue.png"),
    ("too_many", ["calib.path={dir}/few.json", "calib.num_samples=5"], "2"),
]


@pytest.mark.parametrize(("case", "overrides", "fragment"), CALIB_CASES, ids=[c[0] for c in CALIB_CASES])
def test_bad_calibration_input_is_one_line(compose_cfg, case: str, overrides: list[str], fragment: str, tmp_path: Path) -> None:
    _calib_files(tmp_path)
    cfg = compose_cfg([*QUIET, "calib.source=llava_json", "calib.num_samples=1", *[o.format(dir=tmp_path) for o in overrides]])
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        run(cfg, tmp_path / "run")
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "failed"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["sparsity.pattern=3:5", "sparsity.target=0.6"], "in_features divisible by 5"),  # target = N/M
        (["eval.tasks=[no_such_task_xyz]"], "no_such_task_xyz"),
        (["runner=gpu"] if not torch.cuda.is_available() else ["runner.devices=99", "runner=gpu"], "CUDA"),
        (["model.name=nobody/no-such-model-xyz"], "not in the local Hugging Face cache"),
        (["model.name=/definitely/not/here"], "/definitely/not/here"),
    ],
)
def test_bad_run_input_is_one_line(compose_cfg, overrides: list[str], fragment: str, tmp_path: Path) -> None:
    with pytest.raises((ValueError, RuntimeError, OSError)) as err:
        run(compose_cfg([*QUIET] + overrides), tmp_path)
    message = str(err.value)
    assert fragment in message, message
    assert "\n" not in message


def test_unknown_family_of_a_local_model_is_one_line(compose_cfg, tmp_path: Path) -> None:
    save_tiny(fresh_tiny("llava"), tmp_path / "model")
    with pytest.raises(ValueError, match="unknown model family 'foo'; valid: "):
        run(compose_cfg([*QUIET, f"model.name={tmp_path / 'model'}", "model.family=foo"]), tmp_path / "run")


def test_online_wandb_without_credentials_falls_back_to_offline(compose_cfg, tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_MODE", "")
    cfg = compose_cfg([*QUIET, "logger=wandb", "logger.wandb.mode=online", "calib.num_samples=1"])
    with caplog.at_level("WARNING"):
        results = run(cfg, tmp_path / "run")
    assert results["status"] == "completed"
    assert any("offline" in r.getMessage() for r in caplog.records)
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_nan_activations_stop_with_the_block_named() -> None:
    bundle = fresh_tiny("llava_next")
    block = bundle.adapter.decoder_blocks()[1]
    with torch.no_grad():
        block.mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="decoder block 1"):
        tamp.prune(bundle.model, [bundle.example_sample()], {"device": "cpu", "progress": False},
                   adapter=bundle.adapter)


def test_nan_statistics_stop_with_the_linear_named() -> None:
    from tamp.core.config import PruneConfig
    from tamp.methods.composed import ComposedMethod
    from tamp.pipeline.engine import LayerwiseEngine

    bundle = fresh_tiny("llava_next")
    engine = LayerwiseEngine(bundle.model, bundle.adapter, [bundle.example_sample()], progress=False)
    method = ComposedMethod.from_config(PruneConfig())
    linears = engine.linears[0]
    name = next(iter(linears))
    method.begin_block(0, linears)
    for other, linear in linears.items():
        method.stats[other].add(torch.ones(3, linear.in_features))
    method.stats[name].add(torch.full((1, linears[name].in_features), float("inf")))
    with pytest.raises(NonFiniteError, match=name.replace(".", r"\.")):
        method.end_block(0, linears, {n: 0.5 for n in linears}, engine)
