"""The paper's calibration presets load the published releases as they are laid out.

Each test writes a small stand-in of a release in its real folder layout under `paths.data_dir`,
composes the preset with Hydra (nothing else overridden but the sample count), runs the pre-run
check and builds the samples for a tiny model of the family the paper calibrates:
- sharegpt4v: lmms-lab/LLaVA-NeXT-Data's `llava_next_raw_format/llava_next_raw_format_processed.json`
  with its images unpacked beside it; only records under `sharegpt4v/` are drawn;
- nlvr2: lmms-lab/M4-Instruct-Data's `m4_instruct_annotations.json` with the NLVR2 images unzipped
  beside it; only NLVR2's two-image records are drawn;
- avinstruct: AVInstruct's `avqa_data1.json` / `avqa_data2.json` (feature-file paths, `<Q>` markers)
  and MUSIC-AVQA videos, converted by `python -m tamp.data convert-avinstruct`, then drawn for
  Qwen2.5-Omni with the videos' sound tracks interleaved (`model.use_audio_in_video=true`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from test_calib_data import write_mp4, write_png
from tiny_models import fresh_tiny

from tamp.cli.preflight import check_run_config
from tamp.data.calib import build_calibration
from tamp.data.sample import AUDIO, IMAGE, VIDEO


def _turns(question: str, answer: str, placeholder: str = "<image>\n") -> list[dict]:
    return [{"from": "human", "value": f"{placeholder}{question}"}, {"from": "gpt", "value": answer}]


def _settings(compose_cfg, preset: str, data_dir: Path, *extra: str):
    cfg = compose_cfg([f"calib={preset}", f"paths.data_dir={data_dir}", "calib.num_samples=2", *extra])
    return check_run_config(cfg)  # the pre-run check: file structure and the draw


def _ids(samples) -> list[str]:
    return [s.meta["id"] for s in samples]


def test_sharegpt4v_from_the_raw_llava_next_release(compose_cfg, tmp_path):
    root = tmp_path / "LLaVA-NeXT-Data" / "llava_next_raw_format"
    records = []
    for i, image in enumerate(["sharegpt4v/sam/images/sa_1.jpg", "coco/train2017/1.jpg", "sharegpt4v/coco/2.jpg",
                               "sharegpt4v_extra/3.jpg", "ai2d/images/4.png", "sharegpt4v/llava/5.jpg"]):
        write_png(root / image, (40 * i, 0, 0))
        records.append({"id": f"r{i}", "image": image, "conversations": _turns("Describe it.", f"Picture {i}.")})
    (root / "llava_next_raw_format_processed.json").write_text(json.dumps(records))
    settings = _settings(compose_cfg, "sharegpt4v", tmp_path, "model=tiny_llava_next", "calib.num_samples=3")
    assert settings.calib.path == str(root / "llava_next_raw_format_processed.json")
    samples = build_calibration(fresh_tiny("llava_next").adapter, settings.calib_settings())
    assert sorted(_ids(samples)) == ["r0", "r2", "r5"]  # sharegpt4v/ only: not coco, ai2d or sharegpt4v_extra
    assert all(s.modality_counts().get("image", 0) > 0 for s in samples)


def test_nlvr2_from_m4_instruct(compose_cfg, tmp_path):
    root = tmp_path / "M4-Instruct-Data"
    records = []
    for i, (dataset, folder) in enumerate([("nlvr2", "nlvr2"), ("spot-the-diff", "spot-the-diff"),
                                          ("nlvr2", "nlvr2"), ("coinstruct", "coinstruct"), ("nlvr2", "nlvr2")]):
        images = [f"{folder}/images/{i}_{side}.png" for side in ("left", "right")]
        for k, image in enumerate(images):
            write_png(root / image, (0, 60 * k, 40 * i))
        turns = _turns("Is the statement true for the two images?", "True.", "<image>\n<image>\n")
        records.append({"id": f"m{i}", "image": images, "conversations": turns, "metadata": {"dataset": dataset}})
    (root / "m4_instruct_annotations.json").write_text(json.dumps(records))
    settings = _settings(compose_cfg, "nlvr2", tmp_path, "model=tiny_llava_onevision")
    assert settings.calib.path == str(root / "m4_instruct_annotations.json") and settings.calib.media_dir is None
    adapter = fresh_tiny("llava_onevision").adapter
    samples = build_calibration(adapter, settings.calib_settings())
    assert set(_ids(samples)) <= {"m0", "m2", "m4"} and len(samples) == 2
    first = samples[0]
    assert int((first.modality_ids == IMAGE).sum()) > 0 and first.inputs["pixel_values"].shape[0] == 2


# --------------------------------------------------------------------------------------- AVInstruct
def _avinstruct_release(tmp_path: Path) -> tuple[list[Path], Path]:
    """Two AVInstruct files (MUSIC-AVQA and AVQA ids mixed) and a MUSIC-AVQA video folder."""
    def record(video_id: str, question: str) -> dict:
        return {
            "video_id": video_id, "multi_choice": "", "correct_answer": "",
            "video": f"/mnt/sda/imagebind_v_feats/{video_id}.npy",
            "audio": f"/mnt/sda/imagebind_a_feats/{video_id}.mp3.npy",
            "conversations": [
                {"from": "human", "value": f"Summarize the video to help answer:\n<Q>{question}<Q>\n<video>"},
                {"from": "gpt", "value": "Two instruments are sounding, a violin and a cello."},
            ],
        }

    first = [record("00005580", "How many instruments are sounding?"), record("-0FHUc78Gqo_000030", "What?")]
    second = [record("00000272", "Where is the cello?"), record("00009999", "Is it loud?")]
    files = [tmp_path / "AVinstruct" / "avqa_data1.json", tmp_path / "AVinstruct" / "avqa_data2.json"]
    files[0].parent.mkdir(parents=True)
    for path, records in zip(files, (first, second), strict=True):
        path.write_text(json.dumps(records))
    videos = tmp_path / "MUSIC-AVQA" / "videos"
    for video_id in ("00005580", "00000272", "00001111"):
        write_mp4(videos / f"{video_id}.mp4", with_audio=True)
    return files, videos


def test_convert_avinstruct_writes_the_llava_file_the_preset_reads(tmp_path, capsys):
    from tamp.data.__main__ import main

    files, videos = _avinstruct_release(tmp_path)
    out = tmp_path / "data" / "AVInstruct" / "avinstruct_avqa_music.json"
    argv = ["convert-avinstruct", "--annotations", *map(str, files), "--video-dir", str(videos), "--output", str(out)]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == (
        f"wrote {out}: 2 records with a MUSIC-AVQA video (2 of 4 AVInstruct records have none in {videos})"
    )
    rows = json.loads(out.read_text())
    assert [r["video_id"] for r in rows] == ["00005580", "00000272"] and [r["id"] for r in rows] == [0, 1]
    assert rows[0]["video"] == rows[0]["audio"] == "../../MUSIC-AVQA/videos/00005580.mp4"
    assert rows[0]["conversations"][0]["value"] == (
        "<video>\nSummarize the video to help answer:\nHow many instruments are sounding?"
    )
    assert rows[0]["conversations"][1]["from"] == "gpt"
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert main(argv) == 2  # an existing output is refused, untouched
    assert "exists; valid: a new file, or --overwrite" in capsys.readouterr().err
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
    assert main([*argv, "--overwrite"]) == 0


@pytest.mark.parametrize(("change", "error"), [
    ("no_videos", "none of the 4 AVInstruct records names a video in"),
    ("missing_dir", "video folder"),
    ("bad_json", "is not valid JSON at line 1"),
])
def test_convert_avinstruct_bad_input_is_one_line(tmp_path, capsys, change, error):
    from tamp.data.__main__ import main

    files, videos = _avinstruct_release(tmp_path)
    if change == "no_videos":
        videos = tmp_path / "empty"
        videos.mkdir()
    elif change == "missing_dir":
        videos = tmp_path / "nope"
    else:
        files[1].write_text("[{")
    out = tmp_path / "out.json"
    assert main(["convert-avinstruct", "--annotations", *map(str, files), "--video-dir", str(videos),
                 "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("tamp.data: error: ") and error in err
    assert not out.exists()


def test_avinstruct_preset_with_audio_in_video(compose_cfg, tmp_path):
    from tamp.data.__main__ import main

    files, videos = _avinstruct_release(tmp_path)
    data = tmp_path / "data"
    out = data / "AVInstruct" / "avinstruct_avqa_music.json"
    assert main(["convert-avinstruct", "--annotations", *map(str, files), "--video-dir", str(videos),
                 "--output", str(out)]) == 0
    settings = _settings(compose_cfg, "avinstruct", data, "model=tiny_qwen2_5_omni", "model.use_audio_in_video=true",
                         "calib.num_frames=4")
    assert settings.model.use_audio_in_video and settings.calib.path == str(out)
    adapter = fresh_tiny("qwen2_5_omni").adapter
    adapter.use_audio_in_video = settings.model.use_audio_in_video  # as the runner sets it
    samples = build_calibration(adapter, settings.calib_settings())
    for sample in samples:  # the track rides inside the video (the processor places it by time)
        assert bool(sample.inputs["use_audio_in_video"]) and len(sample.meta["video_metadata"]) == 1
        assert int((sample.modality_ids == VIDEO).sum()) > 0 and int((sample.modality_ids == AUDIO).sum()) > 0
    plain = fresh_tiny("qwen2_5_omni").adapter  # the mode off: the track goes in as a separate audio
    sample = build_calibration(plain, settings.calib_settings())[0]
    assert "use_audio_in_video" not in sample.inputs and int((sample.modality_ids == AUDIO).sum()) > 0


def test_audio_in_video_is_refused_for_families_without_it(compose_cfg):
    with pytest.raises(ValueError, match="model.use_audio_in_video=true but the llava_next family"):
        check_run_config(compose_cfg(["model=tiny_llava_next", "model.family=llava_next",
                                      "model.use_audio_in_video=true"]))
