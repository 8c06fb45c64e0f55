"""Media decoding for calibration records and evaluation documents: images with PIL, audio with PyAV.

A media reference is what a record or a document holds: a path relative to the media folder (LLaVA
JSON), or an in-memory value from an HF dataset (a PIL image, raw bytes, `{"bytes", "path"}` from an
undecoded Image/Audio/Video feature, `{"array", "sampling_rate"}`, or the torchcodec `AudioDecoder`
that datasets 5 hands out for a decoded Audio feature). Video frames: tamp.data.video. PyAV is
imported lazily so the package imports without it; every decoder returns plain numpy / PIL values.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile

from tamp.data.media_ref import resolve
from tamp.data.video import DecodedVideo, even_indices, frame_indices, load_video

__all__ = [
    "DecodedVideo",
    "even_indices",
    "frame_indices",
    "load_audio",
    "load_image",
    "load_video",
    "media_kind",
    "processor_sampling_rate",
    "resolve",
]

DEFAULT_SAMPLING_RATE = 16000  # Whisper-style feature extractors
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".gif", ".flv", ".mpeg", ".mpg"})
AUDIO_EXTENSIONS = frozenset({".wav", ".mp3", ".flac", ".ogg", ".m4a", ".opus", ".aac"})


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
    """Read an image to its end and decode its pixels: a cut-off or damaged file is named now.

    PIL's verify checks the PNG chunks' CRCs but reads nothing of a JPEG's scan data, so a JPEG cut in
    half passed it; decoding every pixel (strictly: no grey padding) catches both, at a few ms per
    image, before the model loads. An in-memory image not yet decoded is decoded the same way.
    """
    target = resolve(ref, media_dir)
    try:
        if isinstance(target, Image.Image):
            with strict_decoding():
                target.load()
            return
        with strict_decoding(), Image.open(_source(target)) as image:
            image.verify()
        source = _source(target)
        if hasattr(source, "seek"):  # a file object the caller handed in: verify read it to its end
            source.seek(0)
        with strict_decoding(), Image.open(source) as image:  # verify leaves the image unusable
            image.load()
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
    ref = _from_decoder(ref)
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


def _from_decoder(ref: Any) -> Any:
    """A torchcodec `AudioDecoder` (datasets' decoded Audio value) or `AudioSamples` as an array dict."""
    if hasattr(ref, "get_all_samples"):
        ref = ref.get_all_samples()
    if hasattr(ref, "data") and hasattr(ref, "sample_rate") and not isinstance(ref, np.ndarray):
        data = ref.data.detach().cpu().numpy() if hasattr(ref.data, "detach") else np.asarray(ref.data)
        return {"array": data, "sampling_rate": int(ref.sample_rate)}
    return ref


def _suffix(ref: Any) -> str:
    path = ref.get("path") if isinstance(ref, dict) else ref
    return Path(path).suffix.lower() if isinstance(path, (str, Path)) and path else ""


def media_kind(ref: Any) -> str:
    """'image', 'video' or 'audio' for a path, raw bytes or a `{"bytes", "path"}` value.

    The file name's extension when it has a known one, else the content: an image PIL can open, else
    a container with a video stream (video) or only sound (audio).
    """
    suffix = _suffix(ref)
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in AUDIO_EXTENSIONS:
        return "audio"
    if suffix in Image.registered_extensions():
        return "image"
    source = _source(resolve(ref, None))
    try:
        with Image.open(source) as image:
            image.verify()
        return "image"
    except Exception:  # noqa: BLE001 - not an image PIL knows: ask PyAV
        if hasattr(source, "seek"):
            source.seek(0)
    import av

    try:
        with av.open(source) as container:
            if container.streams.video:
                return "video"
            if container.streams.audio:
                return "audio"
    except av.error.FFmpegError:
        pass
    raise ValueError(f"cannot tell what media {_describe(ref)} holds; valid: an image, a video or an audio file")


def _describe(ref: Any) -> str:
    if isinstance(ref, (bytes, bytearray)):
        return f"<{len(ref)} bytes>"
    if isinstance(ref, dict):
        return str(ref.get("path") or f"<{len(ref.get('bytes') or b'')} bytes>")
    return str(ref)


def processor_sampling_rate(processor: Any) -> int:
    """The rate the processor's feature extractor expects (Whisper-style: 16 kHz)."""
    extractor = getattr(processor, "feature_extractor", None)
    return int(getattr(extractor, "sampling_rate", None) or DEFAULT_SAMPLING_RATE)
