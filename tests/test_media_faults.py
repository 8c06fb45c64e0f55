"""Faults that hid behind media and lmms-eval: each is named in one line, none is scored as if it were fine.

- lmms-eval's `@retry` turned a task's own exception into `RetryError[<Future ... raised ValueError>]`;
- a JPEG cut in half passed the pre-run check (PIL's verify reads none of a JPEG's scan data);
- with `use_audio_in_video`, a datasets `Video()` column (a torchcodec VideoDecoder) lost the sound
  track that the same video given as a path keeps.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from paper_tasks import FFMPEG, NO_FFMPEG
from PIL import Image
from test_bad_files import _calib, _cli, _hashes
from test_calib_data import write_mp4
from tiny_models import fresh_tiny

from tamp.data.media import verify_image

RATE = 16000


def _jpeg(size: int = 96) -> bytes:
    """A noisy JPEG (incompressible: a cut lands inside the scan data)."""
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------ lmms-eval's retry
FAULT_UTILS = '''
from PIL import Image


def doc_to_visual(doc):
    return [Image.new("RGB", (32, 32), doc["colour"])]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return "What colour is it?"


def process_results(doc, results):
    raise ValueError(f"doc {doc['id']} has no field 'label' (the scorer needs it)")
'''


def _fault_task(root: Path) -> Path:
    """A task whose own scoring raises, as a task with a wrong column does."""
    folder = root / "fault_task"
    folder.mkdir()
    (folder / "docs.json").write_text(json.dumps([{"id": 0, "colour": "red"}]))
    (folder / "utils.py").write_text(FAULT_UTILS)
    (folder / "tamp_fault_task.yaml").write_text(
        "task: tamp_fault_task\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {folder / 'docs.json'}\ntest_split: test\noutput_type: generate_until\n"
        "doc_to_visual: !function utils.doc_to_visual\ndoc_to_text: !function utils.doc_to_text\n"
        "doc_to_target: colour\nprocess_results: !function utils.process_results\n"
        "generation_kwargs:\n  max_new_tokens: 2\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 0.1\n"
    )
    return folder


def test_a_task_error_under_lmms_evals_retry_names_the_task_and_its_cause(tmp_path, monkeypatch) -> None:
    import tenacity
    from lmms_eval.api.task import ConfigurableTask

    from tamp.eval.evaluate import TaskFailedError, evaluate

    # lmms-eval waits 2 s between its 5 attempts; the attempts and the RetryError stay as they are
    monkeypatch.setattr(ConfigurableTask.process_results.retry, "wait", tenacity.wait_none())
    bundle = fresh_tiny("llava_next")
    with pytest.raises(TaskFailedError) as err:
        evaluate(bundle.model, bundle.processor, bundle.adapter, ["tamp_fault_task"],
                 include_paths=[str(_fault_task(tmp_path))], limit=1, batch_size=1, bootstrap_iters=0)
    assert str(err.value) == ("lmms-eval task tamp_fault_task failed: ValueError: doc 0 has no field 'label' "
                              "(the scorer needs it) (lmms-eval tried 5 times)")
    assert isinstance(err.value.__cause__, ValueError)  # the task's own traceback stays chained for run.log


# ------------------------------------------------------------------------------------ images
def test_a_jpeg_cut_in_half_fails_the_pre_run_check_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    """`python -m tamp.run` with a calibration record whose JPEG was cut in half: exit 2 before any work."""
    user = tmp_path / "user"
    user.mkdir()
    data = _jpeg()
    (user / "cut.jpg").write_bytes(data[: len(data) // 2])
    path = _calib(user, "cut.jpg")
    before = _hashes(user)
    out = tmp_path / "outputs"
    code, lines = _cli(["model.name=tiny:llava", "calib.source=llava_json", f"calib.path={path}",
                        "calib.num_samples=1", "logger=none", "runner.progress=false", f"paths.output_dir={out}"],
                       monkeypatch, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("tamp: error: record 'rec1': image ") and str(user / "cut.jpg") in lines[0]
    assert "cannot be decoded" in lines[0] and "truncated" in lines[0]
    assert _hashes(user) == before and not out.exists()


def test_whole_images_pass_and_a_lazily_opened_cut_image_does_not(tmp_path) -> None:
    data = _jpeg()
    (tmp_path / "whole.jpg").write_bytes(data)
    verify_image("whole.jpg", tmp_path, "r0")  # a whole file passes
    verify_image(data, None, "r0")
    lazy = Image.open(io.BytesIO(data[: len(data) // 2]))  # what a caller may hand in: opened, not decoded
    with pytest.raises(ValueError, match=r"record 'r1': image an in-memory JpegImageFile cannot be decoded") as err:
        verify_image(lazy, None, "r1")
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------ video sound
@pytest.fixture(scope="module")
def sound_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "sound.mp4"
    write_mp4(path, with_audio=True)
    return path


@pytest.mark.skipif(not FFMPEG, reason=NO_FFMPEG)
@pytest.mark.parametrize("stored", ["path", "bytes"])
def test_a_video_column_keeps_its_sound_track_with_audio_in_video(sound_clip, stored) -> None:
    """datasets' Video() hands doc_to_visual a torchcodec VideoDecoder: its track is the path's track."""
    import datasets

    from tamp.eval.doc_media import MediaReader, VideoSampling

    value = str(sound_clip) if stored == "path" else {"bytes": sound_clip.read_bytes(), "path": None}
    row = datasets.Dataset.from_dict({"video": [value]}).cast_column("video", datasets.Video())[0]
    assert type(row["video"]).__name__ == "VideoDecoder"
    reader = MediaReader(RATE, VideoSampling(num_frames=4), audio_in_video=True)
    from_column, from_path = reader.read([row["video"]]), reader.read([str(sound_clip)])
    assert from_column.audio_in_video and from_path.audio_in_video
    assert len(from_column.audios) == 1 and np.array_equal(from_column.audios[0], from_path.audios[0])
    assert from_column.videos[0].indices == from_path.videos[0].indices
    assert not MediaReader(RATE, VideoSampling(num_frames=4)).read([row["video"]]).audios  # the mode is off


@pytest.mark.skipif(not FFMPEG, reason=NO_FFMPEG)
def test_a_decoder_that_hides_its_file_is_refused_with_audio_in_video(sound_clip) -> None:
    """A VideoDecoder task code built itself keeps no source: one line, not a video scored without its sound."""
    from torchcodec.decoders import VideoDecoder

    from tamp.eval.doc_media import MediaReader, VideoSampling

    with pytest.raises(ValueError, match=r"use_audio_in_video=true, but a torchcodec VideoDecoder") as err:
        MediaReader(RATE, VideoSampling(num_frames=4), audio_in_video=True).read([VideoDecoder(sound_clip.read_bytes())])
    assert "\n" not in str(err.value)
