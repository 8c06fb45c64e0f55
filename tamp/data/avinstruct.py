"""AVInstruct's MUSIC-AVQA part as a LLaVA-style calibration file (the paper's audio-visual calibration set).

The released AVInstruct annotations (two JSON lists, `avqa_data1.json` and `avqa_data2.json`, in the
Bay-CAT repository's `AVinstruct/` folder) hold records such as::

    {"video_id": "00005580", "video": "/mnt/.../00005580.npy", "audio": "/mnt/.../00005580.mp3.npy",
     "conversations": [{"from": "human", "value": "...:\\n<Q>How many instruments ...?<Q>\\n<video>"},
                       {"from": "gpt", "value": "..."}]}

whose `video` / `audio` point at feature files of the authors' own machine. The paper (and the TAMP
code's `datasets/transform_to_avinstruct.py`) keeps the records whose `video_id` names a video of
MUSIC-AVQA (`<video_dir>/<video_id>.mp4`), in file order, first file first, and rewrites them: the
video and its sound track are that mp4, the first human turn starts with `<video>\\n`, and `<Q>`
markers are dropped from human turns. `convert` does the same and writes the media paths relative
to the output file, so the calibration preset needs no media folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tamp.core.io import write_json_atomic

VIDEO_TOKEN = "<video>"
QUESTION_MARK = "<Q>"


@dataclass
class Conversion:
    """What `convert` wrote: the kept records and how many were left out for lack of a video."""

    output: Path
    kept: int
    missing_video: int
    read: int


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"AVInstruct annotation file {path} does not exist; valid: the released "
                                "avqa_data1.json / avqa_data2.json (Bay-CAT repository, AVinstruct/)")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise ValueError(f"AVInstruct annotation file {path} is not valid JSON at line {err.lineno}, "
                         f"column {err.colno}: {err.msg}; valid: a JSON list of records") from None
    if not isinstance(data, list):
        raise ValueError(f"AVInstruct annotation file {path} holds a {type(data).__name__}; "
                         "valid: a JSON list of records")
    return data


def convert_turns(turns: Sequence[dict[str, Any]], record: str) -> list[dict[str, Any]]:
    """The conversation with `<video>` first in the first human turn and no `<Q>` in human turns."""
    out = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise ValueError(f"AVInstruct record '{record}' turn {index} has no text 'value'; "
                             "valid: {from, value} turns")
        turn = dict(turn)
        if turn.get("from") == "human":
            text = turn["value"]
            if index == 0:
                text = f"{VIDEO_TOKEN}\n{text.replace(VIDEO_TOKEN, '').strip()}"
            turn["value"] = text.replace(QUESTION_MARK, "").strip()
        out.append(turn)
    return out


def convert(
    annotations: Sequence[str | Path], video_dir: str | Path, output: str | Path, overwrite: bool = False,
    extension: str = ".mp4",
) -> Conversion:
    """Write the MUSIC-AVQA records of the AVInstruct files as one LLaVA-style JSON list.

    Refuses an existing `output` unless `overwrite`; writes atomically (a failed run leaves nothing
    that looks finished). Records keep `video_id`; `id` numbers the kept records from 0.
    """
    video_dir, output = Path(video_dir), Path(output)
    if not video_dir.is_dir():
        raise FileNotFoundError(f"video folder {video_dir} does not exist; valid: the folder of MUSIC-AVQA's "
                                f"videos (<video_id>{extension} files)")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; valid: a new file, or --overwrite to replace it")
    if output.is_dir():
        raise IsADirectoryError(f"{output} is a folder; valid: a .json file path")
    present = {p.name for p in video_dir.iterdir() if p.suffix == extension}
    base = output.resolve().parent
    rows: list[dict[str, Any]] = []
    read = missing = 0
    for path in annotations:
        for raw in _records(Path(path)):
            read += 1
            video_id = str(raw.get("video_id", "")) if isinstance(raw, dict) else ""
            if not video_id or f"{video_id}{extension}" not in present:
                missing += 1
                continue
            media = Path(os.path.relpath(video_dir.resolve() / f"{video_id}{extension}", base)).as_posix()
            turns = raw.get("conversations")
            if not isinstance(turns, list) or not turns:
                raise ValueError(f"AVInstruct record '{video_id}' in {path} has no 'conversations' list; "
                                 "valid: a non-empty list of {from, value} turns")
            rows.append({"id": len(rows), "video_id": video_id, "audio": media, "video": media,
                         "conversations": convert_turns(turns, video_id)})
    if not rows:
        raise ValueError(f"none of the {read} AVInstruct records names a video in {video_dir} "
                         f"(<video_id>{extension}); valid: the MUSIC-AVQA video folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output, rows)
    return Conversion(output, len(rows), missing, read)
