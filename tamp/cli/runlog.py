"""RUN_DIR/run.log, Hydra's file log, written only into a file of the run's own and only by the run's own process.

Hydra opens its log file with a plain `open(path, "a")` before tamp has checked anything: a symbolic
link put at run.log would receive the run's log lines, and a second process refused because the
folder is in use would append its error to the first run's log. `RunLogHandler` (named by
conf/hydra/job_logging/tamp.yaml) keeps Hydra's append semantics for a real file, but

- opens the file with O_NOFOLLOW and writes only into a plain file with one name; anything else
  (a link, a FIFO, a hard link) is named once on stderr and the file log is left off;
- holds its lines back until this process holds the folder's lock (tamp.cli.runlock; or held it:
  a failed cell's last line is logged after the lock is released), or works under the lock of the
  run that started it (a rank > 0): a process refused at the lock never opens the file, and its
  lines reach only the console.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from collections import deque
from pathlib import Path
from typing import TextIO

#: lines held back before the lock is taken (a run logs a few dozen there; the bound is for safety)
MAX_HELD = 10_000


class RunLogRefused(OSError):
    """The log file is not a plain file of the run's own; the message says what it is."""


def open_log(path: str | Path, encoding: str | None = None, errors: str | None = None) -> TextIO:
    """`path` opened for appending, created if absent; RunLogRefused when it is a link or not a plain file."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as err:
        if os.path.islink(path):
            raise RunLogRefused(f"{path} is a symbolic link (to {os.readlink(path)})") from None
        raise RunLogRefused(f"{path} cannot be opened ({err.strerror or err})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        what = "not a plain file" if not stat.S_ISREG(info.st_mode) else f"a file with {info.st_nlink} names"
        raise RunLogRefused(f"{path} is {what}")
    return os.fdopen(fd, "a", encoding=encoding or "utf-8", errors=errors)


def _works_under_lock(folder: str) -> bool:
    """This process holds (or held) `folder`'s lock, inherited it from the run that started it, or is a rank > 0."""
    from tamp.cli.launch import launch_rank
    from tamp.cli.runlock import taken_here

    return taken_here(folder) or launch_rank() != 0


class RunLogHandler(logging.FileHandler):
    """Hydra's file handler for run.log: appends, never through a link, only once the run holds its folder."""

    def __init__(self, filename: str | os.PathLike[str], mode: str = "a", encoding: str | None = None,
                 delay: bool = True, errors: str | None = None) -> None:
        super().__init__(filename, mode, encoding=encoding, delay=True, errors=errors)  # opened on the first line
        self._held: deque[logging.LogRecord] = deque(maxlen=MAX_HELD)
        self._writing = False
        self._refused = False

    def _open(self) -> TextIO:
        return open_log(self.baseFilename, self.encoding, self.errors)

    def _may_write(self) -> bool:
        if not self._writing:
            self._writing = _works_under_lock(os.path.dirname(self.baseFilename))
        return self._writing

    def emit(self, record: logging.LogRecord) -> None:
        if self._refused:
            return
        if not self._may_write():
            self._held.append(record)
            return
        if self.stream is None:
            try:
                self.stream = self._open()
            except RunLogRefused as err:
                self._refused = True
                self._held.clear()
                print(f"tamp: warning: {err}; the run's log is not written to a file (tamp never writes "
                      "through a link); the console has it", file=sys.stderr, flush=True)
                return
        while self._held:
            super().emit(self._held.popleft())
        super().emit(record)

    def close(self) -> None:
        """A process that held the folder writes what it held back; one that never did drops it (console only)."""
        self.acquire()
        try:
            if self._held and not self._refused and self._may_write():
                self.emit(self._held.pop())  # writes the lines held before it first
            self._held.clear()
        finally:
            self.release()
        super().close()
