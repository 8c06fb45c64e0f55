"""Small file and error helpers every layer may use: this module imports nothing from tamp.

Atomic writes go to a temporary name in the target's directory and are renamed over it, so a reader
(the report, a resumed run, a second process) never sees half a file. `first_line` is how every
user-facing error is shortened to the one line tamp prints and records.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary path beside `path`, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write `data` as indented JSON atomically; values JSON cannot hold are written as their str()."""
    return write_text_atomic(path, json.dumps(data, indent=1, default=str))


def first_line(err: BaseException | str) -> str:
    """The first line of an error's message (or of a text), or the error's type when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def safetensors_problem(path: str | Path) -> str | None:
    """What is wrong with a .safetensors file, read from its header and size alone; None when it is whole.

    The format is an 8-byte little-endian header length, a JSON header giving every tensor's byte
    range, then the data: a file cut short (a copy or download that stopped) or overwritten has a
    header that does not parse or ranges past its end. Reading the header costs milliseconds, even for
    a 5 GB shard, so a model folder or a checkpoint is checked before anything loads from it.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"{size} bytes, shorter than a safetensors header"
            length = int.from_bytes(head, "little")
            if length > size - 8:
                return f"header of {length} bytes in a file of {size} bytes (cut short or not safetensors)"
            header = json.loads(handle.read(length).decode("utf-8"))
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "its header is not valid JSON (corrupt or not safetensors)"
    if not isinstance(header, dict):
        return "its header is not a JSON object (corrupt or not safetensors)"
    ends = [entry["data_offsets"][1] for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict) and isinstance(entry.get("data_offsets"), list)
            and len(entry["data_offsets"]) == 2 and isinstance(entry["data_offsets"][1], int)]
    if len(ends) != len([k for k in header if k != "__metadata__"]):
        return "its header lacks tensor byte ranges (corrupt or not safetensors)"
    needed = 8 + length + max(ends, default=0)
    if needed > size:
        return f"truncated: its tensors need {needed} bytes, the file has {size}"
    return None


def check_safetensors(path: str | Path, what: str = "safetensors file") -> None:
    """Raise a one-line ValueError naming `path` when `safetensors_problem` finds something wrong."""
    problem = safetensors_problem(path)
    if problem is not None:
        raise ValueError(f"{what} {path} is unreadable: {problem}")


def natural_key(path: str | Path) -> list[Any]:
    """Sort key: 0, 1, ..., 10 in number order (Hydra names a multirun's cells by job number)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]
