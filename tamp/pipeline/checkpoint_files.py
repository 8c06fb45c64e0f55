"""A checkpoint folder's layout and the checks that read only its JSON and file headers.

What a run folder's guards need (tamp.cli.rundir: is there anything to resume; tamp.cli.preflight: is
it whole) without torch: the file names, the progress marker and the header checks of the block and
scoring files. Writing and loading the tensors is tamp.pipeline.checkpoint's job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tamp.core.io import first_line, safetensors_problem
from tamp.models.disk import sha256_file

PROGRESS = "progress.json"
SCORING = "scoring.safetensors"
#: progress.json's {block file name: SHA-256 of its bytes}; a block file's metadata key for the RNG state after it
DIGESTS = "digests"
RNG_AFTER = "rng_after"


def has_checkpoint(directory: str | Path) -> bool:
    """Whether a checkpoint directory holds progress to resume: a plan with blocks, or a scoring pass."""
    directory = Path(directory)
    return (directory / PROGRESS).is_file() or (directory / SCORING).is_file()


class CheckpointMismatchError(ValueError):
    """The directory holds a checkpoint of a different run configuration."""


class CheckpointCorruptError(ValueError):
    """A checkpoint file is not what tamp wrote (cut short, overwritten); the message names the file."""


_START_OVER = "the run cannot continue from it: move {dir} away to prune from the start"


def _check_block(path: Path, directory: Path) -> None:
    if not path.is_file():
        raise CheckpointCorruptError(f"checkpoint block {path} is missing; {_START_OVER.format(dir=directory)}")
    problem = safetensors_problem(path)
    if problem is not None:
        raise CheckpointCorruptError(f"checkpoint block {path} is unreadable: {problem}; "
                                     f"{_START_OVER.format(dir=directory)}")


def _digest_problem(path: Path, recorded: str) -> str | None:
    """Why block file `path` is not the file whose SHA-256 was `recorded`; None when it is."""
    if not path.is_file():
        return "is missing"
    problem = safetensors_problem(path)
    if problem is not None:
        return f"is unreadable ({problem})"
    if sha256_file(path) != recorded:
        return "does not match the digest recorded when it was written (damaged on disk or overwritten)"
    return None


def _recorded_digests(progress: dict[str, Any]) -> dict[str, str]:
    digests = progress.get(DIGESTS)
    if not isinstance(digests, dict):
        return {}
    return {k: v for k, v in digests.items() if isinstance(k, str) and isinstance(v, str)}


def read_progress(directory: str | Path) -> dict[str, Any] | None:
    """A checkpoint's progress marker, None when there is none; one line naming the file when it is garbage."""
    directory = Path(directory)
    path = directory / PROGRESS
    if not path.exists():
        return None
    try:
        progress = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointCorruptError(f"checkpoint progress file {path} is unreadable ({first_line(err)}); "
                                     f"{_START_OVER.format(dir=directory)}") from None
    fields = {"fingerprint": str, "plan": dict, "completed_blocks": int}
    bad = next((k for k, kind in fields.items() if not isinstance(progress, dict) or not isinstance(progress.get(k), kind)), None)
    if bad is not None:
        raise CheckpointCorruptError(f"checkpoint progress file {path} has no valid '{bad}'; "
                                     f"{_START_OVER.format(dir=directory)}")
    return progress


def check_checkpoint(directory: str | Path) -> None:
    """Before a run continues from `directory`: its progress marker parses and its completed blocks are whole.

    Headers only (milliseconds): a cut-off block file is named before the model loads, not by
    safetensors' `incomplete metadata` after it.
    """
    progress = read_progress(directory)
    scoring = Path(directory) / SCORING
    if progress is None and scoring.is_file():  # an interrupted scoring pass: its statistics must read
        problem = safetensors_problem(scoring)
        if problem is not None:
            raise CheckpointCorruptError(f"checkpoint scoring file {scoring} is unreadable: {problem}; "
                                         f"{_START_OVER.format(dir=directory)}")
    if progress is None:
        return
    digests = _recorded_digests(progress)
    for index in range(progress["completed_blocks"]):
        name = f"block_{index:04d}.safetensors"
        if name in digests:  # checked whole on resume; a damaged one is recomputed, not refused
            break
        _check_block(Path(directory) / name, Path(directory))
