"""Video frames for calibration and evaluation: which frames (a count and a rate), decoded by seeking.

`load_video` decodes only what the frames it keeps need: for each wanted frame it seeks to the key
frame at or before it and decodes forward to it (PyAV, whose wheel bundles FFmpeg), so a 3-minute
clip costs a few key-frame intervals instead of every frame up to the last one wanted (README,
"Video decoding"; `benchmarks/bench_video_decode.py`). The key frames' times come from the packets
(read, not decoded): a wanted frame with no key frame between it and the last decoded one is
reached by decoding on instead of seeking back. Containers that cannot seek by time (no frame rate,
no timestamps, a seek that lands past its target) are decoded start to end, as before; both paths
return the same frames.

`DecodedVideo` keeps what a processor needs to place the frames in time: the native frame rate, the
frame count and the chosen indices (Qwen2-VL / Qwen2.5-VL read transformers' `VideoMetadata`,
Qwen2.5-Omni a sampling rate, see `tamp.models.base.video_inputs`).
"""

from __future__ import annotations

import bisect
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tamp.data.media_ref import resolve


@dataclass
class DecodedVideo:
    """Frames sampled from a video plus what a video processor's metadata needs (fps, indices)."""

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

    @property
    def sampled_fps(self) -> float | None:
        """Frames kept per second of video (8 frames of a 60 s clip: 0.133), None without a frame rate."""
        if not self.fps or not self.total_frames:
            return None
        return len(self.indices) * self.fps / self.total_frames


def even_indices(total: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over `total` frames (centre of each segment)."""
    if total <= 0:
        return []
    count = min(count, total)
    return [int((i + 0.5) * total / count) for i in range(count)]


def frame_indices(total: int, native_fps: float | None, num_frames: int, fps: float | None = None) -> list[int]:
    """The frames to keep: at most `num_frames`, and with `fps` at most `fps` per second of video.

    Both as lmms-eval's video loaders count them (`fps` lowers the count for short clips only); the
    kept frames are spread evenly over the whole video.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames} is out of range; valid: an integer >= 1")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps={fps} is out of range; valid: a number > 0, or null for num_frames frames")
    count = min(num_frames, total)
    if fps is not None and native_fps:
        count = min(count, max(1, int(total / native_fps * fps)))
    return even_indices(total, count)


def _source(ref: Any) -> Any:
    """What PyAV opens: a path string or a file-like object over in-memory bytes."""
    if isinstance(ref, Path):
        return str(ref)
    if isinstance(ref, (bytes, bytearray)):
        return io.BytesIO(ref)
    if isinstance(ref, dict) and ref.get("bytes"):
        return io.BytesIO(ref["bytes"])
    if isinstance(ref, dict) and ref.get("path"):
        return str(ref["path"])
    return ref


def _scan(container: Any, stream: Any) -> tuple[int, list[float]]:
    """(frame count, key frame times in seconds) from the packets alone, nothing decoded.

    The count is the header's when it has one, else the number of non-empty packets.
    """
    count, keys = 0, []
    for packet in container.demux(stream):
        if not packet.size:
            continue
        count += 1
        if packet.is_keyframe and packet.pts is not None:
            keys.append(float(packet.pts * stream.time_base))
    container.seek(0)
    return (int(stream.frames) if stream.frames else count), sorted(keys)


def _rgb(frame: Any) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def _decode_linear(container: Any, stream: Any, wanted: list[int]) -> tuple[list[np.ndarray], int]:
    """Every frame from the start up to the last wanted one; (kept frames, frames decoded)."""
    chosen, frames, index = set(wanted), [], -1
    for index, frame in enumerate(container.decode(stream)):
        if index in chosen:
            frames.append(_rgb(frame))
        if len(frames) == len(wanted):
            break
    return frames, index + 1


class _NoSeek(Exception):
    """The container cannot be decoded by seeking (no timestamps, or a seek landed past its target)."""


def _decode_seeking(
    container: Any, stream: Any, wanted: list[int], rate: float, keys: list[float]
) -> list[np.ndarray]:
    """The wanted frames by seeking to the key frame at or before each; raises _NoSeek where unsound.

    Frame i is the first frame whose time is at least i / rate less half a frame (the frame a
    start-to-end decode numbers i, for a constant frame rate). No seek when no key frame (`keys`)
    lies after the last decoded frame and at or before the target: decoding on is cheaper.
    """
    time_base = stream.time_base
    start = float((stream.start_time or 0) * time_base)
    half = 0.5 / rate
    frames: list[np.ndarray] = []
    decoder = None
    last = None  # time of the last decoded frame
    for index in wanted:
        target = start + index / rate
        key = keys[bisect.bisect_right(keys, target + half) - 1] if keys and keys[0] <= target + half else None
        fresh = decoder is None or last is None or target < last or (key is not None and key > last)
        if fresh:
            container.seek(int(target / time_base), stream=stream, backward=True, any_frame=False)
            decoder = container.decode(stream)
        found = None
        for frame in decoder:
            if frame.pts is None:
                raise _NoSeek
            last = float(frame.pts * time_base)
            if fresh and last > target + half:  # landed after the target: this container seeks badly
                raise _NoSeek
            fresh = False
            if last >= target - half:
                found = frame
                break
        if found is None:  # the end came first: the header over-counted
            break
        frames.append(_rgb(found))
    return frames


def load_video(
    ref: Any, media_dir: str | Path | None = None, num_frames: int = 8, fps: float | None = None,
    seek: bool = True,
) -> DecodedVideo:
    """Decode the frames `frame_indices` picks (RGB); `seek=False` decodes start to end (the old path)."""
    import av

    name = resolve(ref, media_dir)
    with av.open(_source(name)) as container:
        if not container.streams.video:
            raise ValueError(f"media {name} has no video stream; valid: a video file (mp4, webm, avi, ...)")
        stream = container.streams.video[0]
        total, keys = _scan(container, stream)
        native = float(stream.average_rate) if stream.average_rate else None
        wanted = frame_indices(total, native, num_frames, fps)
        frames: list[np.ndarray] = []
        decoded = total
        if seek and native:
            try:
                frames = _decode_seeking(container, stream, wanted, native, keys)
            except (_NoSeek, av.error.FFmpegError):
                container.seek(0)
                frames = []
        if not frames:
            frames, decoded = _decode_linear(container, stream, wanted)
    if not frames:
        raise ValueError(f"media {name} holds no decodable video frames; valid: a non-empty video")
    if len(frames) < len(wanted):  # the header over-counted: keep what was decoded
        wanted = wanted[: len(frames)]
        total = max(min(total, decoded), len(frames))
    return DecodedVideo(np.stack(frames), native, total, wanted)


def decoder_video(decoder: Any, num_frames: int = 8, fps: float | None = None) -> DecodedVideo:
    """Frames from a torchcodec `VideoDecoder` (what datasets' `Video()` feature hands out), by seeking."""
    meta = decoder.metadata
    total = int(meta.num_frames or 0)
    native = float(meta.average_fps) if meta.average_fps else None
    wanted = frame_indices(total, native, num_frames, fps)
    if not wanted:
        raise ValueError("a torchcodec VideoDecoder with no frames; valid: a non-empty video")
    data = decoder.get_frames_at(indices=wanted).data
    frames = data.cpu().numpy()
    if frames.shape[-1] not in (1, 3, 4) and frames.shape[1] in (1, 3, 4):  # NCHW (the default order)
        frames = frames.transpose(0, 2, 3, 1)
    return DecodedVideo(np.ascontiguousarray(frames[..., :3]).astype(np.uint8, copy=False), native, total, wanted)
