"""A sweep's shared allocation scores: computed by the first cell of a key, read by every other.

DAS, OWL and ECoFLaP score the dense model before they know the target (tamp.sparsity.shared), and
the scoring costs more than the pruning (ECoFLaP's zeroth-order pass most of all), so the cells of a
sweep that differ only in sparsity, pattern or pruner share one entry: SWEEP_DIR/.cache/scores_<key>.json.
The key is what the scores depend on: the content digests tamp.prune computes (model config and
weights, every calibration sample, the allocation's resolved settings, seed, targeted linears, number
of processes, device type, versions) plus the run's own words for them (model name, dtype, weights
identity, precision, calibration draw), stored in the file and compared when it is read: a hash
collision or a file from another tamp is recomputed, never reused.

Any launcher works (basic, joblib, submitit, SLURM array jobs on a shared filesystem): a cell takes
`.scores_<key>.lock` (fcntl.flock, opened with O_NOFOLLOW) before it reads or computes, so a second
cell of the same key waits and then reads what the first wrote. The kernel drops the lock of a cell
that dies. An entry is written atomically (temporary file, rename) with `"complete": true` after the
scores are whole, so a cell killed while scoring or writing leaves nothing that reads as complete.
In a Fabric world rank 0 alone touches the files and hands its decision and the scores to the others;
it polls the lock between short broadcasts, so a long wait never times a collective out.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tamp.core.io import write_json_atomic

if TYPE_CHECKING:  # tamp.sparsity imports torch; the CLI's modules import it only where they run
    from tamp.sparsity.shared import ScoreState

log = logging.getLogger("tamp")
FORMAT = 1
KIND = "allocation_scores"  # tamp.sparsity.shared.KIND: results.json's `reused` key
_NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class ScoreLock:
    """`.scores_<key>.lock`: flock held while one cell reads or computes the key's scores (the file stays)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        """True when taken now, False while another process holds it; a link or odd file is refused."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_NONBLOCK: a FIFO put there must not hang the open
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | _NOFOLLOW, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise ValueError(f"{self.path} is a symbolic link; tamp locks only a file of its own: remove it") from None
            raise
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            raise ValueError(f"{self.path} is not a plain file of its own (a hard link or special file): remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as err:  # a file system without flock (Lustre mounted without -o flock, some NFS)
            os.close(fd)
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            log.warning("%s cannot be locked on this file system (%s): cells of the same key may each compute "
                        "its entry (the entry is still written whole)", self.path, err.strerror)
            return True
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class SweepStore:
    """What the sweep's stores in SWEEP_DIR/.cache have in common: the folder, the run's own key items, this
    process's rank in its world, rank 0's broadcast, the lock's poll interval and what was reused."""

    def __init__(
        self,
        directory: str | Path,
        context: dict[str, str] | None = None,
        rank: int = 0,
        world_size: int = 1,
        broadcast: Callable[[Any], Any] | None = None,
        poll_s: float = 1.0,
    ) -> None:
        self.dir = Path(directory)
        self.context = dict(context or {})
        self.rank = rank
        self.world_size = world_size
        self.broadcast = broadcast
        self.poll_s = poll_s
        #: {kind: the entry this run read it from} for every kind reused from another run's entry
        self.reused: dict[str, str] = {}

    def _share(self, value: Any) -> Any:
        """Rank 0's value on every process (every process calls it, in the same order)."""
        if self.world_size > 1 and self.broadcast is not None:
            return self.broadcast(value)
        return value


class ScoreCache(SweepStore):
    """A tamp.sparsity.shared.ScoreStore in a folder; `reused` says which kinds came from which file."""

    def entry(self, key: dict[str, str]) -> tuple[Path, dict[str, str]]:
        """(the entry's path, the items it is stored and compared by)."""
        items = {**self.context, **{k: str(v) for k, v in key.items()}}
        digest = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]
        return self.dir / f"scores_{digest}.json", items

    def fetch(self, key: dict[str, str], compute: Callable[[], ScoreState]) -> ScoreState:
        path, items = self.entry(key)
        lock = ScoreLock(path.with_name(f".{path.stem}.lock")) if self.rank == 0 else None
        try:
            self._acquire(lock)
            state = read_entry(path, items) if lock is not None else None
            if self._share(state is not None):
                state = self._share(state)
                self.reused[KIND] = str(path)
                log.info("allocation scores reused from %s (same model, calibration samples and allocation)", path)
                return state
            state = compute()
            if lock is not None:
                write_json_atomic(path, {"format": FORMAT, "kind": KIND, "key": items, "scores": state,
                                         "complete": True})
                log.info("allocation scores stored in %s for the sweep's other cells", path)
            return state
        finally:
            if lock is not None:
                lock.release()

    def _acquire(self, lock: ScoreLock | None) -> None:
        wait_for_lock(lock, self._share, self.poll_s, "allocation scores")


def wait_for_lock(lock: ScoreLock | None, share: Callable[[Any], Any], poll_s: float, what: str) -> None:
    """Take a key's lock on rank 0 (`lock`; None on the other ranks); every rank waits with it, one short
    broadcast (`share`: rank 0's value on every rank) per poll, so a long wait never times a collective out."""
    waited = False
    while True:
        outcome: bool | str = False
        if lock is not None:
            try:
                outcome = lock.try_acquire()
            except (OSError, ValueError) as err:
                outcome = f"{type(err).__name__}: {err}"
        outcome = share(outcome)  # a refusal on rank 0 stops every rank, none waits on a collective
        if isinstance(outcome, str):
            raise ValueError(outcome.split(": ", 1)[1] if lock is not None else outcome)
        if outcome:
            return
        if not waited and lock is not None:
            log.info("waiting for %s: another cell is computing the same %s", lock.path, what)
        waited = True
        time.sleep(poll_s)


def read_entry(path: Path, items: dict[str, str]) -> ScoreState | None:
    """The scores of a complete entry written for exactly `items`, else None (a warning says why)."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("allocation score cache %s is unreadable (%s): scoring again", path, err)
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("kind") != KIND:
        log.warning("allocation score cache %s is not an entry of this tamp: scoring again", path)
        return None
    if data.get("complete") is not True:
        log.warning("allocation score cache %s was not completed (its cell stopped): scoring again", path)
        return None
    if data.get("key") != items:
        log.warning("allocation score cache %s was written for other settings: scoring again", path)
        return None
    from tamp.sparsity.shared import check_state

    try:
        return check_state(data.get("scores"), str(path))
    except ValueError as err:
        log.warning("%s: scoring again", err)
        return None
