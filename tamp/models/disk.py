"""What every file tamp writes gets: the umask's normal mode, a digest to check it by, a write error that names it.

safetensors writes its files 0600 whatever the umask (a saved model, its masks and a checkpoint
would be unreadable to the group that reads the rest of the run folder, 0644), so tamp sets the
mode a plain `open()` would have given. A full disk surfaces as safetensors' or torch's own error
without the file's name; `naming_path` turns it into one line that says where and what to do.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tamp.core.io import plain_mode

#: errors that mean "the disk (or the quota) is full", by errno and as Rust/C++ libraries word them
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FULL_WORDS = ("no space left on device", "disk quota exceeded", "os error 28", "os error 122", "storagefull")


class DiskWriteError(OSError):
    """Writing a file failed for a reason of the disk (full, quota, read-only); the message is one line."""

    def __str__(self) -> str:
        return str(self.strerror) if self.strerror is not None else (str(self.args[0]) if self.args else "write failed")


def normal_modes(folder: str | Path) -> None:
    """tamp.core.io.plain_mode for every regular file under a folder tamp made (a save being written); links are
    left alone."""
    for path in Path(folder).rglob("*"):
        if not path.is_symlink() and stat.S_ISREG(path.lstat().st_mode):
            plain_mode(path)


def sha256_file(path: str | Path) -> str:
    """The file's bytes' SHA-256 (hex), read in 8 MiB pieces: ~0.3 s per GB."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def disk_full(err: BaseException) -> bool:
    """Whether an error (an OSError, or safetensors' Rust error wrapping one) says the disk is full."""
    if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
        return True
    return any(word in str(err).lower() for word in _FULL_WORDS)


@contextmanager
def naming_path(what: str, path: str | Path) -> Iterator[None]:
    """Re-raise a disk error (full, quota, read-only, I/O) while writing `path` as one line naming it."""
    try:
        yield
    except DiskWriteError:
        raise
    except Exception as err:
        if not (disk_full(err) or (isinstance(err, OSError) and err.errno in (errno.EROFS, errno.EIO))):
            raise
        code = getattr(err, "errno", None) or errno.ENOSPC
        reason = "the disk is full" if disk_full(err) else os.strerror(code).lower()
        raise DiskWriteError(code, f"cannot write {what} {path}: {reason} ({_first(err)}); free space on that "
                                   "disk or choose another folder, then run the same command again") from err


def _first(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__
