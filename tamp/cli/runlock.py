"""One process per run folder: `RUN_DIR/.tamp.lock`, held with flock while a run (or a sweep) works in it.

Two runs writing one results.json, checkpoint and W&B run at once corrupt all three, so the second
is refused in one line naming the process that holds the folder. The kernel drops an flock when its
process dies (SIGKILL, a lost node), so a lock file left behind is stale and the next run takes it
over; the pid and host written into it are only for the message. The processes a run starts itself
(Fabric's workers re-run the command) inherit the lock through TAMP_HELD_LOCKS and pass.

The lock file is opened with O_NOFOLLOW and must be a plain file with one name: a symbolic (or hard)
link put at `.tamp.lock` would make the pid written into it land in someone else's file, so such a
lock is refused in one line naming it, and nothing is written.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from pathlib import Path

LOCK_FILE = ".tamp.lock"
HELD_ENV = "TAMP_HELD_LOCKS"
_NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
#: the folders whose lock this process has taken (held now or released since): tamp.cli.runlog's test
_TAKEN: set[str] = set()


class RunDirInUse(ValueError):
    """Another live process holds the folder's lock; the message names it."""


class LockNotOurs(RunDirInUse):
    """The folder's lock file is a link or not a plain file: refused like a folder in use, nothing written."""


def not_a_lock(path: str | Path) -> str | None:
    """Why the file at `path` cannot be tamp's lock (a symbolic link, a hard link, not a plain file); None if it can."""
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return f"is a symbolic link (to {os.readlink(path)})"
    if not stat.S_ISREG(info.st_mode):
        return "is not a plain file"
    if info.st_nlink != 1:
        return f"is a file with {info.st_nlink} names (a hard link)"
    return None


def lock_refused_message(path: str | Path, why: str) -> str:
    return (f"{path} {why}; tamp writes its lock only into a file of its own, never through a link: "
            "remove it, or use another folder")


def _key(directory: str | Path) -> str:
    return os.path.realpath(directory)


def _held_here(directory: str | Path) -> bool:
    """This process or one of its parents holds the lock (TAMP_HELD_LOCKS lists it)."""
    return _key(directory) in os.environ.get(HELD_ENV, "").split(os.pathsep)


def taken_here(directory: str | Path) -> bool:
    """This process holds `directory`'s lock, inherited it, or held it earlier (its run's last lines come after)."""
    return _held_here(directory) or _key(directory) in _TAKEN


def _describe(path: Path) -> str:
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW), "rb") as f:
            info = json.loads(f.read(65536))
        return f"pid {info['pid']} on {info['host']} ({' '.join(info.get('argv', []))[:80]})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _try_flock(fd: int) -> bool:
    """True when this process got the lock, False when a live process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as err:  # a file system without flock (some NFS mounts): the pid decides
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        return False


def holder(directory: str | Path) -> str | None:
    """Who holds `directory` now ('pid 12 on node3 (...)'), or None when it is free or the lock is stale."""
    path = Path(directory) / LOCK_FILE
    if _held_here(directory) or not_a_lock(path) is not None or not path.is_file():
        return None  # a lock that is not a plain file is no run's (RunLock refuses it)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW)
    except OSError:  # gone, or replaced by a link since
        return None
    try:
        if _try_flock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
    finally:
        os.close(fd)
    return _describe(path)


def in_use_message(directory: str | Path, who: str) -> str:
    return (f"{directory} is in use by {who}; wait for that run to end, or use another folder "
            f"(a lock left by a process that has ended is taken over)")


class RunLock:
    """`with RunLock(run_dir):` holds the folder's lock for the block; RunDirInUse when another run has it."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / LOCK_FILE
        self.fd: int | None = None
        self._env_before: str | None = None

    def acquire(self) -> RunLock:
        if _held_here(self.dir):
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # the file may be replaced between open and flock by a run that just ended
            fd = self._open()
            if not _try_flock(fd):
                os.close(fd)
                raise RunDirInUse(in_use_message(self.dir, _describe(self.path)))
            try:
                same = os.fstat(fd).st_ino == os.lstat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - five races in a row
            raise RunDirInUse(in_use_message(self.dir, _describe(self.path)))
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "argv": [os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)]}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        self.fd = fd
        _TAKEN.add(_key(self.dir))
        self._env_before = os.environ.get(HELD_ENV)
        os.environ[HELD_ENV] = os.pathsep.join(filter(None, [self._env_before, _key(self.dir)]))
        return self

    def _open(self) -> int:
        """The lock file, created if absent; LockNotOurs for a link or a file that is not a plain one of its own."""
        try:  # O_NONBLOCK: a FIFO put there must not hang the open (a plain file ignores the flag)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | _NOFOLLOW, 0o644)
        except OSError:
            why = not_a_lock(self.path)
            if why is None:
                raise
            raise LockNotOurs(lock_refused_message(self.path, why)) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            raise LockNotOurs(lock_refused_message(self.path, not_a_lock(self.path) or "is not a plain file"))
        return fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            try:  # before unlocking: a waiting run then makes a fresh file; only the file this lock made
                if os.lstat(self.path).st_ino == os.fstat(self.fd).st_ino:
                    self.path.unlink()
            except FileNotFoundError:
                pass
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
            if self._env_before is None:
                os.environ.pop(HELD_ENV, None)
            else:
                os.environ[HELD_ENV] = self._env_before

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
