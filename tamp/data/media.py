"""Media decoding for calibration records: images with PIL, video frames and audio tracks with PyAV.

A media reference is what a record holds: a path relative to the media folder (LLaVA JSON), or an
in-memory value from an HF dataset (a PIL image, raw bytes, `{"bytes", "path"}` from an undecoded
Image/Video feature, `{"array", "sampling_rate"}` from an Audio feature). PyAV is imported lazily so
the package imports without it; every decoder returns plain numpy / PIL values the processors take.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile

DEFAULT_SAMPLING_RATE = 16000  # Whisper-style feature extractors


@dataclass
class DecodedVideo:
    """Evenly sampled frames plus what a video processor's metadata would need (fps, indices)."""

    frames: np.ndarray  # (num_frames, H, W, 3) uint8: the layout every video processor accepts
    fps: float | None
    total_frames: int
    indices: list[int]

    def metadata(self) -> dict[str, Any]:
        """Fields of transformers' `VideoMetadata`, for processors that time-scale positions."""
        height, width = self.frames.shape[1:3]
        duration = self.total_frames / self.fps if self.fps else None
        return {
            "total_num_frames": self.total_frames,
            "fps": self.fps,
            "width": int(width),
            "height": int(height),
            "duration": duration,
            "frames_indices": list(self.indices),
        }


def resolve(ref: Any, media_dir: str | Path | None) -> Any:
    """A string reference becomes a path under `media_dir` (absolute paths stay); others pass through."""
    if isinstance(ref, dict) and not ref.get("bytes") and ref.get("path") and "array" not in ref:
        ref = ref["path"]
    if isinstance(ref, (str, Path)):
        path = Path(ref)
        if not path.is_absolute() and media_dir is not None:
            path = Path(media_dir) / path
        return path
    return ref


def check_exists(ref: Any, media_dir: str | Path | None, record_id: str) -> None:
    """Fail early, before any decoding, on a media file that is not there."""
    target = resolve(ref, media_dir)
    if isinstance(target, Path) and not target.is_file():
        if target.is_dir():
            raise IsADirectoryError(
                f"record '{record_id}': media path {target} is a folder, not a media file; "
                f"valid: the path of one image, video or audio file (relative to media_dir={media_dir})"
            )
        raise FileNotFoundError(
            f"record '{record_id}': media file {target} does not exist; "
            f"valid: a path relative to media_dir={media_dir} or an absolute path"
        )


def describe(ref: Any, media_dir: str | Path | None) -> str:
    """How an error names a media reference: its path, or what kind of in-memory value it is."""
    target = resolve(ref, media_dir)
    if isinstance(target, Path):
        return str(target)
    if isinstance(target, dict) and isinstance(target.get("path"), str):
        return target["path"]
    return f"an in-memory {type(target).__name__}"


def verify_image(ref: Any, media_dir: str | Path | None, record_id: str) -> None:
    """Read an image file whole without decoding its pixels (PIL's verify): a cut-off file is named now.

    Checks the PNG chunks' CRCs and that the file ends where its format says; cheap enough to run on
    every drawn record before the model loads.
    """
    target = resolve(ref, media_dir)
    if isinstance(target, Image.Image):
        return
    try:
        with strict_decoding(), Image.open(_source(target)) as image:
            image.verify()
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, struct.error, ... for bad files
        raise ValueError(
            f"record '{record_id}': image {describe(ref, media_dir)} cannot be decoded "
            f"({type(err).__name__}: {str(err).strip() or 'corrupt'}); valid: a whole image file (re-copy it)"
        ) from None


def _source(ref: Any) -> Any:
    """What PIL / PyAV can open: a path string or a file-like object over in-memory bytes."""
    if isinstance(ref, Path):
        return str(ref)
    if isinstance(ref, (bytes, bytearray)):
        return io.BytesIO(ref)
    if isinstance(ref, dict) and ref.get("bytes"):
        return io.BytesIO(ref["bytes"])
    return ref


@contextmanager
def strict_decoding() -> Iterator[None]:
    """PIL raises on a cut-off image file inside this block, whatever the process set globally.

    lmms-eval sets `ImageFile.LOAD_TRUNCATED_IMAGES = True` when it is imported (its task module, for
    one dataset's broken images), after which PIL pads a truncated calibration image with grey and says
    nothing; tamp imports lmms-eval before calibrating whenever eval tasks are configured.
    """
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def load_image(ref: Any, media_dir: str | Path | None = None) -> Image.Image:
    """An RGB PIL image (processors expect three channels; PNGs may be RGBA or palette); a cut-off file raises."""
    ref = resolve(ref, media_dir)
    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    with strict_decoding(), Image.open(_source(ref)) as image:
        return image.convert("RGB")


def even_indices(total: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over `total` frames (centre of each segment)."""
    if total <= 0:
        return []
    count = min(count, total)
    return [int((i + 0.5) * total / count) for i in range(count)]


def _count_video_frames(container: Any, stream: Any) -> int:
    """Frame count without decoding: the header's, else the number of non-empty packets."""
    if stream.frames:
        return int(stream.frames)
    count = sum(1 for packet in container.demux(stream) if packet.size)
    container.seek(0)
    return count


def load_video(ref: Any, media_dir: str | Path | None = None, num_frames: int = 8) -> DecodedVideo:
    """Decode `num_frames` evenly spaced RGB frames; only the chosen frames are converted to arrays."""
    import av

    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames} is out of range; valid: num_frames >= 1")
    name = resolve(ref, media_dir)
    with av.open(_source(name)) as container:
        if not container.streams.video:
            raise ValueError(f"media {name} has no video stream; valid: a video file (mp4, webm, avi, ...)")
        stream = container.streams.video[0]
        total = _count_video_frames(container, stream)
        wanted = even_indices(total, num_frames)
        chosen, frames, index = set(wanted), [], -1
        for index, frame in enumerate(container.decode(stream)):
            if index in chosen:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == len(wanted):
                break
        fps = float(stream.average_rate) if stream.average_rate else None
    if not frames:
        raise ValueError(f"media {name} holds no decodable video frames; valid: a non-empty video")
    if len(frames) < len(wanted):  # the header over-counted: keep what was decoded
        wanted = wanted[: len(frames)]
        total = max(index + 1, len(frames))
    return DecodedVideo(np.stack(frames), fps, total, wanted)


def _resample(frames: Any, rate: int) -> np.ndarray:
    """Mono float32 at `rate` from PyAV audio frames (any layout, format or rate).

    Channels are averaged here rather than by the resampler, whose downmix matrix boosts the sum of
    stereo channels by 3 dB.
    """
    import av

    resampler = av.AudioResampler(format="fltp", rate=rate)  # planar: (channels, samples) arrays
    chunks = []
    for frame in frames:
        frame.pts = None  # the resampler re-times; source timestamps would only trigger warnings
        chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(frame))
    chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(None))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _array_frame(array: np.ndarray, rate: int) -> Any:
    """A PyAV audio frame over an in-memory waveform (mono or channels-first / channels-last)."""
    import av

    data = np.asarray(array, dtype=np.float32)
    if data.ndim == 2 and data.shape[0] > data.shape[1]:  # (samples, channels)
        data = data.T
    data = data.mean(axis=0) if data.ndim == 2 else data.reshape(-1)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[None, :]), format="flt", layout="mono")
    frame.sample_rate = int(rate)
    return frame


def load_audio(
    ref: Any, media_dir: str | Path | None = None, sampling_rate: int = DEFAULT_SAMPLING_RATE
) -> np.ndarray:
    """The first audio track as a mono float32 waveform at `sampling_rate` (wav, mp3, mp4, ...)."""
    import av

    ref = resolve(ref, media_dir)
    if isinstance(ref, dict) and "array" in ref:
        rate = ref.get("sampling_rate") or sampling_rate
        return _resample([_array_frame(ref["array"], rate)], sampling_rate)
    if isinstance(ref, np.ndarray):  # already a waveform: assumed to be at the target rate
        return ref.astype(np.float32, copy=False).reshape(-1)
    with av.open(_source(ref)) as container:
        if not container.streams.audio:
            raise ValueError(f"media {ref} has no audio stream; valid: a file with a sound track")
        audio = _resample(container.decode(container.streams.audio[0]), sampling_rate)
    if audio.size == 0:
        raise ValueError(f"media {ref} holds no decodable audio samples; valid: a non-empty sound track")
    return audio


def processor_sampling_rate(processor: Any) -> int:
    """The rate the processor's feature extractor expects (Whisper-style: 16 kHz)."""
    extractor = getattr(processor, "feature_extractor", None)
    return int(getattr(extractor, "sampling_rate", None) or DEFAULT_SAMPLING_RATE)
