"""Small file and error helpers every layer may use: this module imports nothing from tamp.

Atomic writes go to a temporary name in the target's directory and are renamed over it, so a reader
(the report, a resumed run, a second process) never sees half a file. `first_line` is how every
user-facing error is shortened to the one line tamp prints and records.
"""

from __future__ import annotations

import json
import os
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
