"""A closed stdout or stderr never changes a run: `python -m tamp.run ... 2>&1 | head -1` finishes as it would.

When the reader of a pipe goes away, the next write raises BrokenPipeError wherever it happens (a
progress bar, a print, a library's warning while the model loads), and the run would fail and
record that error, or worse, an OSError handler would report it as a missing file. `guard_streams()`
wraps sys.stdout and sys.stderr so that the first write to a closed pipe points the file descriptor
at /dev/null instead: output is dropped, the run goes on, and results.json records its real outcome.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any, TextIO


def _closed_pipe(err: OSError) -> bool:
    return isinstance(err, BrokenPipeError) or err.errno in (errno.EPIPE, errno.ECONNRESET)


class PipeSafeStream:
    """A text stream whose writes to a closed pipe are dropped (the descriptor then goes to /dev/null)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.closed_pipe = False

    def _to_devnull(self) -> None:
        self.closed_pipe = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())  # C code and child processes writing here are spared too
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as err:
            if not _closed_pipe(err):
                raise
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as err:
            if not _closed_pipe(err):
                raise
            self._to_devnull()
            try:
                self._stream.flush()  # what was buffered now goes to /dev/null
            except OSError:
                pass

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, buffer, ...
        return getattr(self._stream, name)


def guard_streams() -> None:
    """Wrap sys.stdout and sys.stderr (once); call before anything captures them (logging, tqdm)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, PipeSafeStream):
            setattr(sys, name, PipeSafeStream(stream))
