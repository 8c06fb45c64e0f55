"""Small file and error helpers every layer may use: this module imports nothing from tamp.

Atomic writes go to a temporary name in the target's directory and are renamed over it, so a reader
(the report, a resumed run, a second process) never sees half a file, and a symbolic link someone
put where tamp writes is replaced, never written through: the temporary file is created here and
now (O_EXCL | O_NOFOLLOW), and the rename swaps the directory entry, whatever it pointed to.
`first_line` is how every user-facing error is shortened to the one line tamp prints and records.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: how tamp creates a file it writes: never through a link, never onto an existing file
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def new_temporary(path: str | Path) -> Path:
    """A new empty file beside `path`, `.NAME.<pid><random>.tmp`, made by this call (never an existing one).

    The name keeps the `.NAME.<digits>.tmp` form that tamp.pipeline.checkpoint recognises as its own
    unfinished write; the random digits make a name another process (or a planted link) holds no obstacle.
    """
    path = Path(path)
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}{secrets.randbelow(10**6):06d}.tmp")
        try:
            os.close(os.open(tmp, CREATE_FLAGS, 0o666))
            return tmp
        except FileExistsError:  # pragma: no cover - a million names
            continue


def _umask() -> int:
    """This process's umask, read without changing it where Linux says it (/proc), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_mode(path: str | Path) -> None:
    """Give the regular file at `path` the mode a plain `open()` gives (0o666 less the umask; 0644 usually).

    safetensors 0.8 writes every file (a model shard, masks.safetensors, a checkpoint block) to a
    temporary of its own created 0600 and renames it onto the name it is given, so without this the
    weights a run saves are readable by their owner only, while the rest of the run folder is not.
    A link is left as it is (opened with O_NOFOLLOW).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a new temporary file beside `path`, then rename it to `path`.

    `write` may replace the temporary (safetensors renames its own onto it); the file renamed onto
    `path` gets a plain file's mode (`plain_mode`). A link at `path` is replaced, its target untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temporary(path)
    try:
        write(tmp)
        plain_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _fill(tmp: Path, data: bytes) -> None:
    """Write `data` into the temporary `new_temporary` made (O_NOFOLLOW: still that file, not a link put there)."""
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)), "wb") as f:
        f.write(data)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` atomically."""
    return write_atomic(path, lambda tmp: _fill(tmp, data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


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
