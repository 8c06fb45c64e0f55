"""Calibration samples longer than the model's context or calib.max_tokens: cut and counted, never silently.

The tiny LLaVA's decoder has 512 positions. A record of ~700 tokens is cut after its last media token to
512, one log line counts the cut samples and results.json records them; image tokens are never cut; a
record whose media reach past the limit is refused with one line naming it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image
from tiny_models import fresh_tiny

from tamp.cli.run_command import run
from tamp.data.calib import CalibConfig, build_calibration
from tamp.data.sample import IMAGE
from tamp.data.sources import calibration_set

QUIET = ["logger=none", "runner.progress=false"]
LONG = " ".join(["red square"] * 350)  # about 700 tokens of the tiny word-level vocabulary


def _records(root: Path) -> Path:
    Image.new("RGB", (32, 32), "red").save(root / "red.png")
    answer = {"from": "gpt", "value": "red"}
    records = [
        {"id": "short", "image": "red.png", "conversations": [{"from": "human", "value": "<image>\nwhat colour?"}, answer]},
        {"id": "long_text", "image": "red.png",
         "conversations": [{"from": "human", "value": f"<image>\nwhat colour? {LONG}"}, answer]},
        {"id": "many_images", "image": ["red.png"] * 40,  # 40 x 16 image tokens: past 512 on their own
         "conversations": [{"from": "human", "value": "what colours?"}, answer]},
    ]
    path = root / "calib.json"
    path.write_text(json.dumps(records))
    return path


def _cfg(path: Path, **extra) -> dict:
    return {"source": "llava_json", "path": str(path), "num_samples": None, "progress": False, **extra}


@pytest.fixture(scope="module")
def llava():
    return fresh_tiny("llava")


def test_a_sample_longer_than_the_models_context_is_cut_after_its_media_and_counted(llava, tmp_path, caplog) -> None:
    path = _records(tmp_path)
    assert llava.adapter.context_length() == (512, "max_position_embeddings")
    where = {"id": ["short", "long_text"]}
    with caplog.at_level(logging.WARNING, logger="tamp"):
        samples, report = calibration_set(CalibConfig(**_cfg(path, where=where)), llava.adapter)
    by_id = {s.meta["id"]: s for s in samples}
    long = by_id["long_text"]
    assert long.num_tokens == 512 and long.meta["truncated_from"] > 600
    assert long.inputs["input_ids"].shape[1] == 512 and long.labels.shape[1] == 512
    assert int((long.modality_ids == IMAGE).sum()) == int((by_id["short"].modality_ids == IMAGE).sum()) > 0
    assert "truncated_from" not in by_id["short"].meta
    assert report.as_dict() == {"samples": 2, "tokens": 512 + by_id["short"].num_tokens, "truncated": 1,
                                "max_tokens": 512, "limit": "the model's context (max_position_embeddings=512)"}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("calibration:")]
    assert lines == ["calibration: 1 of 2 samples were longer than the model's context "
                     "(max_position_embeddings=512) and were cut to 512 tokens after their last media token"]


def test_calib_max_tokens_below_the_context_is_the_limit(llava, tmp_path) -> None:
    path = _records(tmp_path)
    samples = build_calibration(llava.adapter, _cfg(path, where={"id": ["short", "long_text"]}, max_tokens=100))
    assert max(s.num_tokens for s in samples) == 100
    assert [s.meta.get("truncated_from") is not None for s in samples] == [False, True]


def test_a_record_whose_media_reach_past_the_limit_is_refused_by_name(llava, tmp_path) -> None:
    path = _records(tmp_path)
    with pytest.raises(ValueError) as err:
        build_calibration(llava.adapter, _cfg(path, where={"id": "many_images"}))
    message = str(err.value)
    assert "'many_images'" in message and "max_position_embeddings=512" in message and "\n" not in message
    with pytest.raises(ValueError, match=r"'many_images'.*calib.max_tokens >= \d+"):
        build_calibration(llava.adapter, _cfg(path, where={"id": "many_images"}, max_tokens=100))


def test_the_run_records_how_many_samples_were_cut(compose_cfg, tmp_path: Path) -> None:
    path = _records(tmp_path)
    cfg = compose_cfg([*QUIET, "model.name=tiny:llava", "calib.source=llava_json", f"calib.path={path}",
                       "calib.num_samples=2", "+calib.where.id=[short,long_text]"])
    run(cfg, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["status"] == "completed"
    assert record["calibration"]["truncated"] == 1 and record["calibration"]["samples"] == 2
    assert record["calibration"]["max_tokens"] == 512


def test_a_run_over_a_record_with_too_many_media_positions_fails_naming_it(compose_cfg, tmp_path: Path) -> None:
    path = _records(tmp_path)
    cfg = compose_cfg([*QUIET, "model.name=tiny:llava", "calib.source=llava_json", f"calib.path={path}",
                       "calib.num_samples=1", "+calib.where.id=many_images"])
    with pytest.raises(ValueError, match="'many_images'"):
        run(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "failed"
