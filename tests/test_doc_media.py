"""Every form lmms-eval's doc_to_visual may hand the model reaches it, and video frames are decoded by seeking.

Media are written here: an H.264 clip with B-frames and a key frame every 12 frames (libx264, as real
videos are encoded), an MPEG-4 clip with sound, a wav and a PNG. The seeking decoder must return
exactly the frames a start-to-end decode numbers the same (for every frame count and rate setting).
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from paper_tasks import FFMPEG, NO_FFMPEG
from PIL import Image
from tiny_models import fresh_tiny

from tamp.data import video as video_mod
from tamp.data.media import media_kind
from tamp.data.video import DecodedVideo, frame_indices, load_video
from tamp.eval.doc_media import MediaReader, VideoSampling

av = pytest.importorskip("av")

RATE = 16000
H264_FRAMES, H264_FPS = 90, 24


def write_h264(path: Path, frames: int = H264_FRAMES, fps: int = H264_FPS, gop: int = 12) -> Path:
    """64 x 48 H.264 with B-frames, a key frame every `gop` frames; frame t shows t in its pixels."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": str(gop), "bf": "2", "preset": "veryfast", "keyint_min": str(gop)}
        for t in range(frames):
            image = np.zeros((48, 64, 3), np.uint8)
            image[..., 0] = (t * 7) % 256
            image[:, (t % 16) * 4 : (t % 16) * 4 + 4, 1] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_wav(path: Path | None = None, rate: int = 8000, seconds: float = 0.5) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)
        out.writeframes((tone * 32767).astype(np.int16).tobytes())
    if path is not None:
        path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    from test_calib_data import write_mp4

    write_mp4(root / "sound.mp4", with_audio=True)
    Image.new("RGB", (20, 10), "blue").save(root / "pic.png")
    write_wav(root / "tone.wav")
    return {"h264": write_h264(root / "h264.mp4"), "sound": root / "sound.mp4", "png": root / "pic.png",
            "wav": root / "tone.wav"}


# --------------------------------------------------------------------------------------- video decoding
@pytest.mark.parametrize(("num_frames", "fps"), [(8, None), (1, None), (32, None), (90, None), (200, None),
                                                 (32, 2.0), (8, 0.5), (3, 100.0)])
def test_seeking_returns_the_frames_a_full_decode_numbers_the_same(clips, num_frames, fps):
    seek = load_video(clips["h264"], num_frames=num_frames, fps=fps)
    full = load_video(clips["h264"], num_frames=num_frames, fps=fps, seek=False)
    assert seek.indices == full.indices == frame_indices(H264_FRAMES, H264_FPS, num_frames, fps)
    assert np.array_equal(seek.frames, full.frames)
    assert (seek.fps, seek.total_frames) == (H264_FPS, H264_FRAMES)


def test_frame_count_follows_count_and_rate():
    assert frame_indices(90, 24.0, 8) == [5, 16, 28, 39, 50, 61, 73, 84]
    assert len(frame_indices(90, 24.0, 32, fps=2.0)) == 7  # 3.75 s at 2 per second
    assert len(frame_indices(24 * 3600, 24.0, 32, fps=2.0)) == 32  # an hour: the count caps
    assert frame_indices(90, 24.0, 8, fps=0.01) == [45]  # never fewer than one
    assert frame_indices(4, 24.0, 8) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="num_frames=0"):
        frame_indices(10, 24.0, 0)
    with pytest.raises(ValueError, match="fps=0"):
        frame_indices(10, 24.0, 8, fps=0)


def test_default_path_seeks_instead_of_decoding_from_the_start(clips, monkeypatch):
    def no_linear(*args, **kwargs):
        raise AssertionError("decoded from the start")

    monkeypatch.setattr(video_mod, "_decode_linear", no_linear)
    assert load_video(clips["h264"], num_frames=4).frames.shape == (4, 48, 64, 3)


def test_unseekable_input_falls_back_to_a_full_decode(clips, monkeypatch):
    def refuse(*args, **kwargs):
        raise video_mod._NoSeek

    monkeypatch.setattr(video_mod, "_decode_seeking", refuse)
    video = load_video(clips["h264"], num_frames=4)
    assert np.array_equal(video.frames, load_video(clips["h264"], num_frames=4, seek=False).frames)


def test_decoded_video_carries_its_timing():
    video = DecodedVideo(np.zeros((8, 4, 4, 3), np.uint8), 30.0, 30 * 3600, list(range(0, 30 * 3600, 30 * 450)))
    assert video.sampled_fps == pytest.approx(8 / 3600)
    assert video.metadata()["duration"] == 3600 and video.metadata()["frames_indices"][1] == 13500


def test_qwen_processors_are_told_the_sampling_rate():
    """8 frames of an hour: Qwen2.5-VL's and Omni's grid step is 900 s, not a default rate's."""

    frames = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    hour = DecodedVideo(frames, 30.0, 30 * 3600, [int((i + 0.5) * 30 * 3600 / 8) for i in range(8)])
    for family, key in (("qwen2_5_vl", "second_per_grid_ts"), ("qwen2_5_omni", "video_second_per_grid")):
        adapter = fresh_tiny(family).adapter
        text = adapter.render([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]}], True)
        assert float(adapter.process(text, None, [hour], None)[key][0]) == pytest.approx(900.0), family
        assert float(adapter.process(text, None, [frames], None)[key][0]) <= 1.0, family  # a bare array: a default rate


# --------------------------------------------------------------------------------------- doc_to_visual forms
def _reader(frames: int = 4, audio_in_video: bool = False) -> MediaReader:
    return MediaReader(RATE, VideoSampling(num_frames=frames), audio_in_video=audio_in_video)


def test_every_form_a_dataset_delivers_is_sorted_by_kind(clips):
    png, wav, mp4 = clips["png"].read_bytes(), clips["wav"].read_bytes(), clips["h264"].read_bytes()
    forms = [
        (Image.open(clips["png"]), "image"),
        (str(clips["png"]), "image"),
        (clips["h264"], "video"),
        (str(clips["wav"]), "audio"),
        (png, "image"),  # raw bytes: told by their content
        (mp4, "video"),
        (wav, "audio"),
        ({"bytes": png, "path": None}, "image"),  # undecoded Image() / Video() / Audio() values
        ({"bytes": mp4, "path": "clip"}, "video"),
        ({"bytes": None, "path": str(clips["wav"])}, "audio"),
        ({"array": np.zeros(8000, np.float32), "sampling_rate": 8000}, "audio"),
        (np.zeros(RATE, np.float32), "audio"),
        (np.zeros((10, 20, 3), np.uint8), "image"),
        (torch.zeros(3, 10, 20, dtype=torch.uint8), "image"),  # channels first
        (np.zeros((5, 10, 20, 3), np.uint8), "video"),
        ([Image.new("RGB", (20, 10))] * 3, "video"),
    ]
    reader = _reader()
    for item, kind in forms:
        media = reader.read([item, None])
        got = {k for k in ("image", "video", "audio") if getattr(media, f"{k}s")}
        assert got == {kind}, f"{type(item).__name__}: {got}"
    media = reader.read(forms[0][0])  # a single item, not in a list
    assert len(media.images) == 1
    assert reader.read({"array": np.zeros(8000, np.float32), "sampling_rate": 8000}).audios[0].shape == (RATE,)
    assert reader.read(torch.zeros(3, 10, 20, dtype=torch.uint8)).images[0].size == (20, 10)
    for bad in (object(), {"foo": 1}, np.zeros((2, 2, 2, 2, 2))):
        with pytest.raises((TypeError, ValueError), match="doc_to_visual|modality"):
            reader.read([bad])
    with pytest.raises(ValueError, match="cannot tell what media"):
        media_kind(b"not a media file")


def test_video_bytes_and_paths_give_the_same_frames(clips):
    reader = _reader()
    from_path = reader.read(str(clips["h264"])).videos[0]
    from_bytes = reader.read(clips["h264"].read_bytes()).videos[0]
    assert isinstance(from_path, DecodedVideo) and np.array_equal(from_path.frames, from_bytes.frames)


def test_a_video_read_for_several_questions_is_decoded_once(clips, monkeypatch):
    calls = []
    real = video_mod.load_video

    import tamp.eval.doc_media as doc_media

    monkeypatch.setattr(doc_media, "load_video", lambda *a, **k: calls.append(a) or real(*a, **k))
    reader = _reader()
    first, second = (reader.read([str(clips["h264"])]).videos[0] for _ in range(2))
    assert len(calls) == 1 and first is second


def test_audio_in_video_takes_the_videos_own_track(clips):
    media = _reader(audio_in_video=True).read([str(clips["sound"])])
    assert media.audio_in_video and len(media.audios) == 1 and abs(len(media.audios[0]) / RATE - 1.5) < 0.2
    silent = _reader(audio_in_video=True).read([str(clips["h264"])])  # no sound track: video only
    assert not silent.audio_in_video and not silent.audios
    assert not _reader().read([str(clips["sound"])]).audios  # the mode is off: the track stays out


@pytest.mark.skipif(not FFMPEG, reason=NO_FFMPEG)
def test_torchcodec_decoders_from_datasets_reach_the_model(clips):
    """datasets 5's decoded Audio() / Video() values: torchcodec AudioDecoder / VideoDecoder objects."""
    import datasets

    table = datasets.Dataset.from_dict(
        {"audio": [{"bytes": write_wav(), "path": "t.wav"}], "video": [str(clips["h264"])]}
    ).cast_column("audio", datasets.Audio()).cast_column("video", datasets.Video())
    row = table[0]
    assert type(row["audio"]).__name__ == "AudioDecoder" and type(row["video"]).__name__ == "VideoDecoder"
    media = _reader(frames=6).read([row["video"], row["audio"]])
    assert media.audios[0].shape == (RATE // 2,)  # 0.5 s at 8 kHz, resampled to 16 kHz
    decoded = media.videos[0]
    reference = load_video(clips["h264"], num_frames=6)
    assert decoded.indices == reference.indices
    assert np.abs(decoded.frames.astype(int) - reference.frames.astype(int)).max() <= 2  # two RGB converters


def test_audio_prompt_parts_follow_the_mode(clips):
    """A video's own track gets no audio part in the prompt (the processor interleaves it)."""
    from tamp.eval.doc_media import Media
    from tamp.eval.lmms_model import TampLMM

    bundle = fresh_tiny("qwen2_5_omni")
    lm = TampLMM(bundle.model, bundle.processor, bundle.adapter, batch_size=1)
    track = np.zeros(RATE, np.float32)
    separate = lm.messages("q", Media(videos=[np.zeros((2, 8, 8, 3), np.uint8)], audios=[track]))
    inside = lm.messages("q", Media(videos=[np.zeros((2, 8, 8, 3), np.uint8)], audios=[track], audio_in_video=True))
    assert [p["type"] for p in separate[0]["content"]] == ["video", "audio", "text"]
    assert [p["type"] for p in inside[0]["content"]] == ["video", "text"]
