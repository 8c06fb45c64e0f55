"""Calibration data: LLaVA JSON/JSONL and HF datasets -> CalibSamples for tiny models of each family.

Fixture sets are written on the fly (PNG images with PIL, an mp4 video with and without an AAC sound
track and a stereo 8 kHz wav with PyAV / `wave`), so the tests need no network and no stored media.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tiny_models import fresh_tiny

from tamp.data.calib import CalibConfig, build_calibration, requires_modalities, truncate
from tamp.data.conversations import Record, split_placeholders, to_messages
from tamp.data.media import even_indices, load_audio, load_video
from tamp.data.sample import AUDIO, IMAGE, TEXT, VIDEO

av = pytest.importorskip("av")

VIDEO_FPS, VIDEO_FRAMES, AUDIO_RATE = 4, 6, 22050


# --------------------------------------------------------------------------------------- media files
def write_png(path: Path, colour: tuple[int, int, int], mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (40, 32), "white")
    image.paste(colour, (8, 6, 24, 22))
    image.convert(mode).save(path)


def _tone(rate: int, seconds: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def write_mp4(path: Path, with_audio: bool = False) -> None:
    """A 6-frame 48x32 MPEG-4 video of a moving red bar at 4 fps, optionally with a mono AAC track."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=VIDEO_FPS)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        sound = container.add_stream("aac", rate=AUDIO_RATE) if with_audio else None
        if sound is not None:
            sound.layout = "mono"
        for t in range(VIDEO_FRAMES):
            frame = np.full((32, 48, 3), 255, np.uint8)
            frame[:, 6 * t : 6 * t + 8] = (255, 0, 0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            signal = _tone(AUDIO_RATE, VIDEO_FRAMES / VIDEO_FPS)
            for start in range(0, len(signal), 1024):  # AAC takes 1024-sample frames
                chunk = np.zeros(1024, np.float32)
                piece = signal[start : start + 1024]
                chunk[: len(piece)] = piece
                frame = av.AudioFrame.from_ndarray(chunk[None], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = AUDIO_RATE, start
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)


def write_wav(path: Path, rate: int = 8000, seconds: float = 1.0) -> None:
    """Stereo 16-bit PCM at 8 kHz: the loader must downmix and resample to 16 kHz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mono = (_tone(rate, seconds) * 20000).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.stack([mono, mono], axis=1).tobytes())


# --------------------------------------------------------------------------------------- records
COLOURS = {"red": (255, 0, 0), "green": (0, 160, 0), "blue": (0, 0, 255), "yellow": (230, 220, 0)}


def turn(who: str, text: str) -> dict[str, str]:
    return {"from": who, "value": text}


def image_records() -> list[dict[str, Any]]:
    records = []
    for i, colour in enumerate(COLOURS):
        records.append(
            {
                "id": f"sg{i}",
                "image": f"sharegpt4v/{colour}.png",
                "conversations": [
                    turn("human", "<image>\nWhat color is the square?"),
                    turn("gpt", f"It is {colour}."),
                ],
            }
        )
    records.append(
        {
            "id": "coco0",
            "image": "coco/red.png",
            "conversations": [
                turn("human", "What color is the square?"),  # no placeholder: the image goes first
                turn("gpt", "The square is red."),
                turn("human", "How many squares are there?"),
                turn("gpt", "There is one square."),
            ],
        }
    )
    records.append(
        {
            "id": "coco1",
            "image": ["coco/red.png", "coco/blue.png"],
            "conversations": [
                turn("human", "Compare <image> and <image>. Which one is blue?"),
                turn("gpt", "The second one is blue."),
            ],
        }
    )
    return records


def video_records() -> list[dict[str, Any]]:
    return [
        {
            "id": "v0",
            "video": "videos/bar.mp4",
            "conversations": [
                turn("user", "<video>\nWhere does the bar move?"),
                turn("assistant", "It moves right."),
            ],
        },
        {
            "id": "v1",
            "video": "videos/bar_sound.mp4",
            "conversations": [turn("human", "<video>\nWhat moves?"), turn("gpt", "A red bar moves.")],
        },
    ]


def av_records() -> list[dict[str, Any]]:
    return [
        {
            "id": "av0",
            "video": "videos/bar_sound.mp4",
            "audio": "audio/tone.wav",
            "conversations": [turn("human", "<video>\n<audio>\nWhat sound is it?"), turn("gpt", "A tone.")],
        },
        {
            "id": "av1",
            "video": "videos/bar.mp4",
            "audio": "videos/bar_sound.mp4",  # the audio track of an mp4
            "conversations": [turn("human", "What do you hear and see?"), turn("gpt", "A bar and a tone.")],
        },
    ]


def write_json(path: Path, records: list[dict[str, Any]], jsonl: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=1))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("calib")
    for colour, rgb in COLOURS.items():
        write_png(root / "media" / "sharegpt4v" / f"{colour}.png", rgb, mode="RGBA")
    write_png(root / "media" / "coco" / "red.png", COLOURS["red"], mode="P")
    write_png(root / "media" / "coco" / "blue.png", COLOURS["blue"])
    write_mp4(root / "media" / "videos" / "bar.mp4")
    write_mp4(root / "media" / "videos" / "bar_sound.mp4", with_audio=True)
    write_wav(root / "media" / "audio" / "tone.wav")
    write_json(root / "images.json", image_records())
    write_json(root / "images.jsonl", image_records(), jsonl=True)
    write_json(root / "videos.json", video_records())
    write_json(root / "av.jsonl", av_records(), jsonl=True)
    return root


def cfg(root: Path, file: str, **extra: Any) -> dict[str, Any]:
    return {"source": "llava_json", "path": str(root / file), "media_dir": str(root / "media"), **extra}


def answer_text(bundle: Any, sample: Any) -> str:
    labels = sample.labels[0]
    tokenizer = getattr(bundle.processor, "tokenizer", bundle.processor)
    return tokenizer.decode(labels[labels != -100].tolist())


def counts(sample: Any) -> dict[int, int]:
    return {code: int((sample.modality_ids == code).sum()) for code in (TEXT, IMAGE, VIDEO, AUDIO)}


# --------------------------------------------------------------------------------------- media units
def test_media_decoders(media: Path) -> None:
    video = load_video(media / "media" / "videos" / "bar.mp4", num_frames=4)
    assert video.frames.shape == (4, 32, 48, 3) and video.frames.dtype == np.uint8
    assert video.total_frames == VIDEO_FRAMES and video.fps == VIDEO_FPS and video.indices == [0, 2, 3, 5]
    assert load_video(media / "media" / "videos" / "bar.mp4", num_frames=20).frames.shape[0] == VIDEO_FRAMES
    wav = load_audio(media / "media" / "audio" / "tone.wav", sampling_rate=16000)
    assert wav.dtype == np.float32 and wav.ndim == 1 and abs(len(wav) - 16000) <= 32
    assert 0.16 < float(np.abs(wav).max()) < 0.2  # 0.3 * 20000 / 32768: channels averaged, not summed
    track = load_audio(media / "media" / "videos" / "bar_sound.mp4", sampling_rate=16000)
    assert abs(len(track) / 16000 - VIDEO_FRAMES / VIDEO_FPS) < 0.2
    assert even_indices(10, 3) == [1, 5, 8] and even_indices(2, 5) == [0, 1]


def test_placeholders_become_content_in_place() -> None:
    assert split_placeholders("Compare <image> and <image>.") == [
        {"type": "text", "text": "Compare "},
        {"type": "image"},
        {"type": "text", "text": " and "},
        {"type": "image"},
        {"type": "text", "text": "."},
    ]
    record = Record("r", [turn("human", "Hi there"), turn("gpt", "Hello"), turn("human", "<video>\nAnd?")])
    record.turns.append(turn("gpt", "Yes"))
    messages = to_messages(record, {"image": 1, "video": 1, "audio": 0})
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "Hi there"}]
    assert messages[2]["content"] == [{"type": "video"}, {"type": "text", "text": "And?"}]


# --------------------------------------------------------------------------------------- families
@pytest.mark.parametrize("file", ["images.json", "images.jsonl"])
def test_llava_next_images_with_prefix(media: Path, file: str) -> None:
    bundle = fresh_tiny("llava_next")
    samples = build_calibration(bundle.adapter, cfg(media, file, prefix="sharegpt4v/", num_samples=3))
    assert len(samples) == 3
    assert all(s.meta["id"].startswith("sg") for s in samples)  # only the ShareGPT4V subset
    for s in samples:
        c = counts(s)
        assert c[IMAGE] > 0 and c[TEXT] > 0 and c[VIDEO] == c[AUDIO] == 0
        colour = next(k for k in COLOURS if f"sg{list(COLOURS).index(k)}" == s.meta["id"])
        assert f"It is {colour}." in answer_text(bundle, s)
        assert s.labels.shape == s.inputs["input_ids"].shape
        assert not (s.labels[0][s.modality_ids != TEXT] != -100).any()  # media never labelled


def test_multi_turn_and_multi_image(media: Path) -> None:
    bundle = fresh_tiny("llava_next")
    samples = build_calibration(
        bundle.adapter, cfg(media, "images.json", prefix="coco/", num_samples=2, seed=0)
    )
    by_id = {s.meta["id"]: s for s in samples}
    text = answer_text(bundle, by_id["coco0"])
    assert "The square is red." in text and "There is one square." in text
    single = int((by_id["coco0"].modality_ids == IMAGE).sum())
    assert int((by_id["coco1"].modality_ids == IMAGE).sum()) > single  # two images, two tiles' worth


def test_seeded_selection_is_deterministic(media: Path) -> None:
    bundle = fresh_tiny("llava")
    ids = [
        [
            s.meta["id"]
            for s in build_calibration(bundle.adapter, cfg(media, "images.json", num_samples=4, seed=seed))
        ]
        for seed in (7, 7, 8)
    ]
    assert ids[0] == ids[1] and len(set(ids[0])) == 4  # without replacement
    assert ids[0] != ids[2]
    every = build_calibration(bundle.adapter, cfg(media, "images.json", num_samples=None))
    assert [s.meta["id"] for s in every] == [r["id"] for r in image_records()]


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
def test_video_families(media: Path, family: str) -> None:
    bundle = fresh_tiny(family)
    samples = build_calibration(bundle.adapter, cfg(media, "videos.json", num_samples=2, num_frames=4))
    for s in samples:
        c = counts(s)
        assert c[VIDEO] > 0 and c[IMAGE] == c[AUDIO] == 0
        assert s.meta["video_metadata"][0]["frames_indices"] == [0, 2, 3, 5]
    assert "It moves right." in answer_text(bundle, next(s for s in samples if s.meta["id"] == "v0"))


def test_omni_audio_and_video(media: Path) -> None:
    bundle = fresh_tiny("qwen2_5_omni")
    samples = build_calibration(bundle.adapter, cfg(media, "av.jsonl", num_samples=2, num_frames=4))
    for s in samples:
        c = counts(s)
        assert c[AUDIO] > 0 and c[VIDEO] > 0 and c[IMAGE] == 0
        assert "input_features" in s.inputs
    report = requires_modalities(samples, required=("audio", "video"), min_modalities=3)
    assert report.ok and set(report.present) == {"text", "video", "audio"}
    assert not requires_modalities(samples, required=("image",)).ok


def test_omni_audio_from_video_in_video_mode(media: Path) -> None:
    bundle = fresh_tiny("qwen2_5_omni")
    bundle.adapter.use_audio_in_video = True  # each audio is its video's track, interleaved in its tokens
    spec = cfg(media, "videos.json", num_samples=1, num_frames=4, audio_from_video=True, where={"id": "v1"})
    (sample,) = build_calibration(bundle.adapter, spec)
    assert counts(sample)[AUDIO] > 0 and counts(sample)[VIDEO] > 0
    assert bool(sample.inputs["use_audio_in_video"])


def test_hf_dataset_source(media: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = image_records()[:4]
    folder = tmp_path / "hf"
    features = datasets.Features(
        {
            "sample_id": datasets.Value("string"),
            "img": datasets.Image(),
            "conv": [{"from": datasets.Value("string"), "value": datasets.Value("string")}],
            "source": datasets.Value("string"),
        }
    )
    table = {
        "sample_id": [r["id"] for r in rows],
        "img": [{"bytes": (media / "media" / r["image"]).read_bytes(), "path": r["image"]} for r in rows],
        "conv": [r["conversations"] for r in rows],
        "source": ["nlvr2", "other", "nlvr2", "nlvr2"],
    }
    folder.mkdir()
    datasets.Dataset.from_dict(table, features=features).to_parquet(str(folder / "train.parquet"))
    spec = {
        "source": "hf",
        "path": str(folder),
        "columns": {"id": "sample_id", "image": "img", "conversations": "conv"},
        "where": {"source": "nlvr2"},
        "prefix": "sharegpt4v/",
        "num_samples": 3,
    }
    bundle = fresh_tiny("llava_onevision")
    samples = build_calibration(bundle.adapter, spec)
    assert sorted(s.meta["id"] for s in samples) == ["sg0", "sg2", "sg3"]
    assert all(counts(s)[IMAGE] > 0 for s in samples)


def test_truncation_keeps_media(media: Path) -> None:
    bundle = fresh_tiny("llava")
    (sample,) = build_calibration(
        bundle.adapter, cfg(media, "images.json", num_samples=1, where={"id": "coco0"})
    )
    last_media = int((sample.modality_ids != TEXT).nonzero()[-1, 0]) + 1
    cut = truncate(sample, last_media + 2)
    assert cut.num_tokens == last_media + 2 and cut.inputs["input_ids"].shape[1] == last_media + 2
    assert cut.labels.shape[1] == last_media + 2
    with pytest.raises(ValueError, match="max_tokens >="):
        truncate(sample, last_media - 1, "coco0")


# --------------------------------------------------------------------------------------- bad inputs
def _bad_cases(root: Path) -> list[tuple[str, dict[str, Any], str]]:
    """(name, config, expected message fragment): every file is written here, inside `root`."""
    ok = image_records()[0]
    (root / "empty.json").write_text("")
    write_json(root / "empty_list.json", [])
    (root / "broken.json").write_text('[\n {"id": "a",\n  "conversations": [}\n]')
    (root / "broken.jsonl").write_text(json.dumps(ok) + "\n" + '{"id": "b", oops}\n')
    write_json(
        root / "no_answer.json", [{**ok, "id": "q1", "conversations": [turn("human", "<image>\nHi?")]}]
    )
    write_json(root / "missing_media.json", [{**ok, "id": "m1", "image": "sharegpt4v/nope.png"}])
    two = {**ok, "id": "p2", "conversations": [turn("human", "<image> <image> which?"), turn("gpt", "Red.")]}
    write_json(root / "placeholders.json", [two])
    write_json(
        root / "bad_role.json", [{**ok, "id": "r1", "conversations": [turn("robot", "x"), turn("gpt", "y")]}]
    )
    write_json(root / "video_for_llava.json", video_records()[:1])
    (root / "empty_hf").mkdir(exist_ok=True)
    images = str(root / "images.json")
    return [
        ("missing file", {"path": str(root / "nope.json")}, "nope.json does not exist"),
        ("empty file", {"path": str(root / "empty.json")}, "empty.json is empty"),
        ("empty list", {"path": str(root / "empty_list.json")}, "holds no records"),
        ("malformed json", {"path": str(root / "broken.json")}, "broken.json is not valid JSON at line 3"),
        ("malformed jsonl", {"path": str(root / "broken.jsonl")}, "broken.jsonl is not valid JSON at line 2"),
        ("no answer", {"path": str(root / "no_answer.json"), "num_samples": 1}, "record 'q1' has no answer"),
        (
            "missing media",
            {"path": str(root / "missing_media.json"), "num_samples": 1},
            "nope.png does not exist",
        ),
        (
            "placeholders",
            {"path": str(root / "placeholders.json"), "num_samples": 1},
            "2 <image> placeholder(s) but 1",
        ),
        ("bad role", {"path": str(root / "bad_role.json"), "num_samples": 1}, "speaker 'robot'"),
        ("too many", {"path": images, "num_samples": 50}, "has 6 records; valid: num_samples <= 6"),
        (
            "too many after prefix",
            {"path": images, "prefix": "coco/", "num_samples": 3},
            "has 2 records after",
        ),
        (
            "prefix matches none",
            {"path": images, "prefix": "llava/"},
            "valid: a prefix such as 'sharegpt4v/'",
        ),
        ("where matches none", {"path": images, "where": {"id": "zzz"}}, "such as 'sg0', 'sg1'"),
        ("unknown key", {"path": images, "num_sample": 3}, "unknown config key 'calib.num_sample'"),
        ("bad source", {"path": images, "source": "csv"}, "valid: llava_json, hf"),
        ("bad num_frames", {"path": images, "num_frames": 0}, "calib.num_frames=0 is out of range"),
        (
            "media the model lacks",
            {"path": str(root / "video_for_llava.json"), "num_samples": 1},
            "takes no video",
        ),
        (
            "hf missing",
            {"source": "hf", "path": str(root / "no_such_dataset")},
            "no_such_dataset does not exist",
        ),
        ("hf no data", {"source": "hf", "path": str(root / "empty_hf")}, "cannot be loaded"),
    ]


def test_bad_inputs_give_one_line_errors(media: Path) -> None:
    bundle = fresh_tiny("llava")
    for name, spec, fragment in _bad_cases(media):
        config = {"source": "llava_json", "media_dir": str(media / "media"), "num_samples": None, **spec}
        with pytest.raises((ValueError, FileNotFoundError)) as info:
            build_calibration(bundle.adapter, config)
        message = str(info.value)
        assert fragment in message, f"{name}: {message}"
        assert "\n" not in message, f"{name}: message spans lines: {message!r}"


def test_config_dataclass_is_accepted(media: Path) -> None:
    bundle = fresh_tiny("llava")
    spec = CalibConfig(
        path=str(media / "images.json"), media_dir=str(media / "media"), num_samples=1, progress=False
    )
    assert len(build_calibration(bundle.adapter, spec)) == 1
