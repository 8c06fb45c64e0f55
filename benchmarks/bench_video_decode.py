"""Benchmark: decoding the frames of one 3-minute 480p clip, start to end (before) vs by seeking (tamp now).

The clip is synthetic and made once (854 x 480, 30 fps, 180 s, H.264 with B-frames and x264's default
key frame interval of 250 frames, a textured scene panned across), cached under
outputs/cache/bench/. For each frame count the table gives the best-of-N wall time of
`tamp.data.video.load_video` with `seek=False` (decode every frame up to the last one wanted: what
evaluation and calibration did before) and with seeking (the default), and, for comparison, the other
seeking readers in the lock: decord and torchcodec (which needs FFmpeg's shared libraries). All
return the same frames (checked).

    python benchmarks/bench_video_decode.py [--frames 8 32] [--repeats 3] [--clip PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tamp.data.video import frame_indices, load_video  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "outputs" / "cache" / "bench" / "clip_480p_180s_h264.mp4"
WIDTH, HEIGHT, FPS, SECONDS = 854, 480, 30, 180


def make_clip(path: Path) -> Path:
    """The synthetic clip, written with PyAV's bundled libx264 (about a minute on 2 cores)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.mp4")
    rng = np.random.default_rng(0)
    rows, cols = HEIGHT * 3 // 2, WIDTH  # the yuv420p planes stacked, as PyAV takes them
    ys, xs = np.mgrid[0 : 2 * rows, 0 : 2 * cols]
    # a textured scene (gradients, blobs, grain) the camera pans across: compresses like real footage
    texture = (96 + 48 * np.sin(xs / 37.0) * np.cos(ys / 23.0) + 40 * np.sin((xs + ys) / 91.0)
               + rng.normal(0, 6, xs.shape)).clip(0, 255).astype(np.uint8)
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "veryfast"}  # x264 defaults otherwise: key frame every 250, B-frames
        for t in range(FPS * SECONDS):
            dy, dx = (t // 2) % rows, (3 * t) % cols
            plane = np.ascontiguousarray(texture[dy : dy + rows, dx : dx + cols])
            frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    partial.rename(path)
    return path


def _decord(path: Path, num_frames: int) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    wanted = frame_indices(len(reader), reader.get_avg_fps(), num_frames)
    return reader.get_batch(wanted).asnumpy()


def _torchcodec(path: Path, num_frames: int) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(str(path), dimension_order="NHWC", num_ffmpeg_threads=1)
    meta = decoder.metadata
    return decoder.get_frames_at(frame_indices(meta.num_frames, meta.average_fps, num_frames)).data.numpy()


def _best(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clip", type=Path, default=CLIP)
    args = parser.parse_args()
    if not args.clip.exists():
        start = time.perf_counter()
        make_clip(args.clip)
        print(f"made {args.clip} in {time.perf_counter() - start:.0f} s")
    readers: dict[str, Callable[[Path, int], np.ndarray]] = {
        "start to end (before)": lambda p, n: load_video(p, num_frames=n, seek=False).frames,
        "seeking (tamp)": lambda p, n: load_video(p, num_frames=n).frames,
        "decord": _decord,
    }
    try:
        from tamp.eval.hazards import ffmpeg_major_version

        if ffmpeg_major_version() is not None:
            readers["torchcodec"] = _torchcodec
    except ImportError:
        pass
    print(f"one {SECONDS} s {WIDTH}x{HEIGHT} H.264 clip ({args.clip.stat().st_size / 1e6:.0f} MB); "
          f"best of {args.repeats}")
    print("| frames | " + " | ".join(readers) + " | speed-up (seeking) |")
    print("|---:|" + "---:|" * (len(readers) + 1))
    for count in args.frames:
        times, reference = [], None
        for name, read in readers.items():
            seconds, frames = _best(lambda read=read, count=count: read(args.clip, count), args.repeats)
            if reference is None:
                reference = frames
            exact = name == "seeking (tamp)"  # decord and torchcodec convert to RGB with other code
            differs = np.abs(frames.astype(int) - reference.astype(int)).max()
            if (exact and differs) or differs > 3:
                raise SystemExit(f"{name} returned other frames than a start-to-end decode")
            times.append(seconds)
        cells = " | ".join(f"{t:.2f} s" for t in times)
        print(f"| {count} | {cells} | {times[0] / times[1]:.1f}x |")


if __name__ == "__main__":
    main()
