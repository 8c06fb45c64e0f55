"""What lmms-eval's `doc_to_visual` returns, sorted into the images, videos and audios a processor takes.

Task code hands back whatever its dataset holds, as the dataset delivers it: PIL images (datasets'
`Image()`), torchcodec `AudioDecoder` / `VideoDecoder` objects (datasets 5's decoded `Audio()` /
`Video()` features), `{"array", "sampling_rate"}` dicts, undecoded `{"bytes", "path"}` values, raw
bytes, file paths (the video benchmarks' files under $HF_HOME), numpy arrays or tensors, lists of
PIL frames. Videos are sampled with the eval settings (`eval.video.num_frames`, `eval.video.fps`)
by seeking (tamp.data.video), and a video file read for several questions in a row is decoded once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tamp.data.media import load_audio, load_image, media_kind
from tamp.data.video import DecodedVideo, decoder_video, load_video

#: decoded video files kept: VideoMME asks ~3 questions per video, in a row
VIDEO_CACHE_SIZE = 4


@dataclass(frozen=True)
class VideoSampling:
    """Frames per video: at most `num_frames`, spread evenly; with `fps`, at most that many per second."""

    num_frames: int = 8
    fps: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.num_frames, bool) or not isinstance(self.num_frames, int) or self.num_frames < 1:
            raise ValueError(f"eval.video.num_frames={self.num_frames!r} is out of range; valid: an integer >= 1")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"eval.video.fps={self.fps!r} is out of range; valid: a number > 0, or null")


@dataclass
class Media:
    """The media of one request, sorted by kind, in the forms the family adapters take.

    `audio_in_video`: the audios are the videos' own sound tracks (Qwen2.5-Omni interleaves them
    inside the video's tokens), so the prompt gets no separate audio parts.
    """

    images: list[Image.Image] = field(default_factory=list)
    videos: list[Any] = field(default_factory=list)  # DecodedVideo, (T, H, W, 3) arrays or lists of PIL frames
    audios: list[np.ndarray] = field(default_factory=list)  # 1-D float32 at the processor's rate
    audio_in_video: bool = False


class MediaReader:
    """Turns doc_to_visual output into `Media` for one model (its audio rate, video sampling)."""

    def __init__(self, sampling_rate: int, video: VideoSampling | None = None, audio_in_video: bool = False) -> None:
        self.sampling_rate = int(sampling_rate)
        self.video = video or VideoSampling()
        self.audio_in_video = bool(audio_in_video)
        self._videos: OrderedDict[tuple, tuple[DecodedVideo, np.ndarray | None]] = OrderedDict()

    def read(self, visuals: Any) -> Media:
        """Sort doc_to_visual's output by kind (a single item or a list of items; None is nothing)."""
        media = Media()
        if visuals is None:
            return media
        items = visuals if isinstance(visuals, (list, tuple)) else [visuals]
        tracks: list[np.ndarray | None] = []
        for item in items:
            self._add(media, item, tracks)
        if self.audio_in_video and media.videos and not media.audios and tracks and all(t is not None for t in tracks):
            media.audios = [t for t in tracks if t is not None]
            media.audio_in_video = True
        return media

    # ------------------------------------------------------------------------------ one item
    def _add(self, media: Media, item: Any, tracks: list[np.ndarray | None]) -> None:
        if item is None:
            return
        if isinstance(item, Image.Image):
            media.images.append(item.convert("RGB"))
        elif isinstance(item, DecodedVideo):
            media.videos.append(item)
            tracks.append(None)
        elif hasattr(item, "get_frames_at") and hasattr(item, "metadata"):  # torchcodec VideoDecoder
            media.videos.append(decoder_video(item, self.video.num_frames, self.video.fps))
            tracks.append(self._track(decoder_source(item)) if self.audio_in_video else None)
        elif hasattr(item, "get_all_samples") or (hasattr(item, "sample_rate") and hasattr(item, "data")):
            media.audios.append(load_audio(item, sampling_rate=self.sampling_rate))  # AudioDecoder / AudioSamples
        elif isinstance(item, Mapping):
            self._add_mapping(media, item, tracks)
        elif isinstance(item, (str, Path, bytes, bytearray)):
            self._add_file(media, item, media_kind(item), tracks)
        elif isinstance(item, (np.ndarray, torch.Tensor)):
            self._add_array(media, item, tracks)
        elif isinstance(item, (list, tuple)) and item and all(isinstance(f, Image.Image) for f in item):
            media.videos.append([f.convert("RGB") for f in item])
            tracks.append(None)
        else:
            raise TypeError(
                f"unsupported media item from doc_to_visual: {type(item).__name__}; valid: PIL images, paths, "
                "bytes, {bytes, path} or {array, sampling_rate} dicts, torchcodec decoders, arrays, lists of frames"
            )

    def _add_mapping(self, media: Media, item: Mapping[str, Any], tracks: list[np.ndarray | None]) -> None:
        if "array" in item:  # a decoded HF audio value, resampled
            media.audios.append(load_audio(dict(item), sampling_rate=self.sampling_rate))
        elif item.get("bytes") or item.get("path"):  # an undecoded Image / Audio / Video value
            self._add_file(media, dict(item), media_kind(dict(item)), tracks)
        else:
            raise TypeError(f"unsupported media dict from doc_to_visual with keys {sorted(item)}; "
                            "valid: {array, sampling_rate} or {bytes, path}")

    def _add_file(self, media: Media, ref: Any, kind: str, tracks: list[np.ndarray | None]) -> None:
        if kind == "image":
            media.images.append(load_image(ref))
        elif kind == "audio":
            media.audios.append(load_audio(ref, sampling_rate=self.sampling_rate))
        else:
            video, track = self._video(ref)
            media.videos.append(video)
            tracks.append(track)

    def _add_array(self, media: Media, item: np.ndarray | torch.Tensor, tracks: list[np.ndarray | None]) -> None:
        array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
        if array.ndim == 1:  # a waveform, taken to be at the processor's rate already
            media.audios.append(array.astype(np.float32))
        elif array.ndim == 3:
            media.images.append(Image.fromarray(_channels_last(array).astype(np.uint8)).convert("RGB"))
        elif array.ndim == 4:
            media.videos.append(_channels_last(array))
            tracks.append(None)
        else:
            raise ValueError(f"cannot tell the modality of a media array shaped {tuple(array.shape)}; "
                             "valid: (samples,) audio, (H, W, C) image, (T, H, W, C) video")

    # ------------------------------------------------------------------------------ video files
    def _video(self, ref: Any) -> tuple[DecodedVideo, np.ndarray | None]:
        """A video's frames (and its sound track when audio goes in the video), decoded once per file."""
        key = _file_key(ref)
        if key is not None and key in self._videos:
            self._videos.move_to_end(key)
            return self._videos[key]
        video = load_video(ref, num_frames=self.video.num_frames, fps=self.video.fps)
        track = self._track(ref) if self.audio_in_video else None
        if key is not None:
            self._videos[key] = (video, track)
            while len(self._videos) > VIDEO_CACHE_SIZE:
                self._videos.popitem(last=False)
        return video, track

    def _track(self, ref: Any) -> np.ndarray | None:
        """The video's own sound track, or None when it has none."""
        try:
            return load_audio(ref, sampling_rate=self.sampling_rate)
        except ValueError:  # no audio stream, or no samples in it
            return None


def decoder_source(decoder: Any) -> Any:
    """What a torchcodec VideoDecoder reads, to take its sound track from (it decodes pictures only).

    datasets' `Video()` feature keeps the stored `{"path", "bytes"}` on the decoder (`_hf_encoded`,
    its own way back to the encoded value) and the path in its metadata; a decoder made elsewhere
    keeps neither, and its sound cannot be read: one line rather than a video scored without it.
    """
    encoded = getattr(decoder, "_hf_encoded", None)
    if isinstance(encoded, Mapping) and (encoded.get("bytes") or encoded.get("path")):
        return dict(encoded)
    path = getattr(decoder.metadata, "path", None)
    if isinstance(path, str) and path:
        return path
    raise ValueError(
        "model.use_audio_in_video=true, but a torchcodec VideoDecoder from doc_to_visual does not say which "
        "file it reads, so its sound track cannot be decoded; valid: the video's path or {bytes, path}, or a "
        "decoder from datasets' Video() feature"
    )


def _file_key(ref: Any) -> tuple | None:
    path = ref.get("path") if isinstance(ref, dict) and not ref.get("bytes") else ref
    if not isinstance(path, (str, Path)):
        return None
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return (str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


def _channels_last(array: np.ndarray) -> np.ndarray:
    """(..., C, H, W) -> (..., H, W, C) when the channels are clearly first (tensors from torchvision)."""
    if array.shape[-1] not in (1, 3, 4) and array.shape[-3] in (1, 3, 4):
        return np.moveaxis(array, -3, -1)
    return array
