"""The calibration config and its checks, without the code that reads and encodes the data.

`CalibConfig` is what `calib.*` of a run holds; the run schema (tamp.cli.schema) builds on it when
composing and checking a command, which must not pay for numpy, PIL or tqdm (tamp.data.calib, which
builds the samples, imports those).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tamp.data.conversations import MEDIA_KINDS

SOURCES = ("llava_json", "hf")
#: how `num_samples` records are drawn: python's random.sample, or numpy's choice as the official code
DRAWS = ("python", "official")


@dataclass
class CalibConfig:
    """Where the calibration conversations come from and how many are drawn."""

    name: str = ""  # preset name (conf/calib/<name>.yaml); informational
    source: str = "llava_json"  # llava_json | hf
    path: str = ""  # JSON/JSONL file, or dataset folder / Hub id in the cache for `hf`
    media_dir: str | None = None  # media paths are relative to this (default: the file's folder)
    prefix: str | None = None  # keep records whose media path (or `prefix_field`) starts with this
    prefix_field: str | None = None
    where: dict[str, Any] = field(default_factory=dict)  # keep records whose fields equal (one of) these
    num_samples: int | None = 128  # None: every selected record
    seed: int = 42
    draw: str = "python"  # python: random.Random(seed).sample | official: np.random.seed(seed); np.random.choice
    num_frames: int = 8  # video frames sampled evenly per video (at most)
    fps: float | None = None  # at most this many frames per second of video; null: num_frames always
    max_tokens: int | None = None  # cut longer samples after their last media token (tamp.data.fit)
    audio_from_video: bool = False  # a video without an audio entry gives its own sound track as audio
    subset: str | None = None  # hf: the dataset's config name (`load_dataset(path, subset, split)`)
    split: str = "train"
    columns: dict[str, str] = field(default_factory=dict)  # renames: id, conversations, image, video, audio
    progress: bool = True

    def validate(self) -> CalibConfig:
        if self.source not in SOURCES:
            raise ValueError(f"calib.source='{self.source}' is unknown; valid: {', '.join(SOURCES)}")
        if not self.path:
            raise ValueError("calib.path is empty; valid: a LLaVA JSON/JSONL file or an HF dataset folder/id")
        if self.draw not in DRAWS:
            raise ValueError(f"calib.draw='{self.draw}' is unknown; valid: {', '.join(DRAWS)}")
        if self.draw == "official" and not 0 <= self.seed < 2**32:  # numpy's seed range
            raise ValueError(f"calib.seed={self.seed} is out of range for calib.draw=official; valid: 0 <= seed < 2**32")
        for key, low in (("num_samples", 1), ("num_frames", 1), ("max_tokens", 1)):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < low):
                raise ValueError(f"calib.{key}={value!r} is out of range; valid: an integer >= {low}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"calib.fps={self.fps!r} is out of range; valid: a number > 0, or null")
        unknown = sorted(set(self.columns) - {"id", "conversations", *MEDIA_KINDS})
        if unknown:
            raise ValueError(
                f"calib.columns.{unknown[0]} is unknown; valid: id, conversations, {', '.join(MEDIA_KINDS)}"
            )
        return self
