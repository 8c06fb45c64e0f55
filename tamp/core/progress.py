"""Progress of long loops: a tqdm bar on a terminal, log lines with elapsed time and ETA elsewhere.

With output redirected (SLURM, nohup, CI) tqdm disables itself (`disable=None`) or, when forced on,
writes one endless line of carriage returns. A cluster job needs the opposite: a few plain lines in
stderr and in the run's log (`run.log`, through Hydra's job logging) that say which phase is at
which step and when it will end, e.g. `pruning: block 3/32, elapsed 1m02s, ETA 9m50s`. The ETA comes
from the steps after the first (which carries the warm-up), once two of them are done; where steps cost
unequal work (a perturbed block's loss runs through every later block), `work` weighs them. Steps a
resumed run skips are told with `resume(bar, n)`, never guessed from the size of an update.

`progress_bar(total, desc, enabled, unit, every_s)` returns an object with tqdm's `update(n)`,
`close()` and context-manager interface; `track(iterable, ...)` wraps an iterable like `tqdm(it)`.
Log lines come from rank 0 only (data-parallel runs would repeat them); `every_s` throttles loops with
many fast steps (samples) to one line per that many seconds plus the last step; 0 logs every step
(blocks).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from tqdm.auto import tqdm

log = logging.getLogger("tamp.core.progress")
T = TypeVar("T")
#: steps after the first that an ETA waits for (one step's time is no rate)
MIN_RATE_STEPS = 2


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...

    def close(self) -> None: ...

    def __enter__(self) -> Progress: ...

    def __exit__(self, *exc: object) -> Any: ...


def is_terminal() -> bool:
    """Whether stderr is a terminal a bar can redraw (TAMP_PROGRESS=log forces log lines, =bar forces bars)."""
    forced = os.environ.get("TAMP_PROGRESS", "").lower()
    if forced in ("log", "bar"):
        return forced == "bar"
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def is_rank_zero() -> bool:
    """Rank 0 of a multi-process world (or the only process)."""
    for var in ("RANK", "LOCAL_RANK"):
        if os.environ.get(var, "0") not in ("", "0"):
            return False
    try:
        import torch.distributed as dist

        return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    except ImportError:  # pragma: no cover - torch is a dependency
        return True


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`: short enough for a log line, precise enough for an ETA."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class LogProgress:
    """tqdm's update/close interface, writing `desc: unit i/N, elapsed E, ETA R` log lines."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "",
        every_s: float = 0.0,
        logger: logging.Logger = log,
        clock: Any = time.monotonic,
        work: Callable[[int], float] | None = None,
    ) -> None:
        """`work(n)`: the work of the first n steps (default n), for an ETA over steps of unequal cost."""
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.n = 0
        self._log, self._clock = logger, clock
        self._work = work or float
        self._start = clock()
        self._last: float | None = None
        self._resumed = 0  # steps done before this process started (a resumed run): not in the rate
        #: (time, count) when the first step of this process ended: the rate is measured from there, since
        #: the first step carries the warm-up (lazy imports, caches, a first batch of prompts)
        self._first: tuple[float, int] | None = None

    def eta(self, now: float) -> float | None:
        """Seconds left at the rate of the steps after the first, once MIN_RATE_STEPS of them are done."""
        if self._first is None or not 0 < self.n < self.total:
            return None
        since, base = self._first
        if self.n - base < MIN_RATE_STEPS or now <= since:
            return None
        done = self._work(self.n) - self._work(base)
        return (now - since) / done * (self._work(self.total) - self._work(self.n)) if done > 0 else None

    def line(self) -> str:
        now = self._clock()
        elapsed = now - self._start
        step = f"{self.unit} {self.n}/{self.total}" if self.unit else f"{self.n}/{self.total}"
        text = f"{self.desc}: {step}, elapsed {duration(elapsed)}"
        eta = self.eta(now)
        if self._resumed and self.n == self._resumed:
            text += f" (resumed after {self._resumed})"
        elif eta is not None:
            text += f", ETA {duration(eta)}"
        return text

    def resume(self, n: int) -> None:
        """n more steps were done before this process started (a resumed run): counted, not in the rate."""
        if n <= 0:
            return
        self.n += n
        self._resumed = self.n
        self._log.info(self.line())
        self._last = self._clock()

    def update(self, n: int = 1) -> None:
        if n <= 0:
            return
        now = self._clock()
        if self._first is None:
            self._first = (now, self.n + n)
        self.n += n
        if self.n >= self.total or self._last is None or now - self._last >= self.every_s:
            self._log.info(self.line())
            self._last = now

    def close(self) -> None:
        pass

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    total: int, desc: str, enabled: bool = True, unit: str = "", every_s: float = 0.0, leave: bool = False,
    work: Callable[[int], float] | None = None,
) -> Progress:
    """A bar on a terminal, log lines otherwise, nothing when disabled or off rank 0 (`work`: LogProgress's)."""
    if not enabled or not is_rank_zero():
        return tqdm(total=total, desc=desc, disable=True)
    if is_terminal():
        return tqdm(total=total, desc=desc, unit=unit or "it", leave=leave)
    return LogProgress(total, desc, unit, every_s, work=work)


def resume(bar: Progress, n: int) -> None:
    """Count n steps a resumed run does not redo: `(resumed after n)` in the log, outside the ETA's rate."""
    if isinstance(bar, LogProgress):
        bar.resume(n)
    elif n > 0:
        bar.update(n)


def weighted_steps(runs: Sequence[tuple[int, float]]) -> Callable[[int], float]:
    """`work(n)` for steps in runs of (count, cost of each): the work of the first n steps."""
    ends: list[tuple[int, float, float]] = []  # (steps up to the run's end, work before it, cost of each)
    steps, total = 0, 0.0
    for count, cost in runs:
        ends.append((steps + count, total, cost))
        steps, total = steps + count, total + count * cost

    def work(n: int) -> float:
        start = 0
        for end, before, cost in ends:
            if n <= end:
                return before + (n - start) * cost
            start = end
        return total

    return work


def track(
    iterable: Iterable[T],
    desc: str,
    total: int | None = None,
    enabled: bool = True,
    unit: str = "",
    every_s: float = 30.0,
) -> Iterator[T]:
    """`for x in track(xs, "calibration", unit="sample")`: progress over an iterable."""
    if total is None:
        total = len(iterable)  # type: ignore[arg-type]
    with progress_bar(total, desc, enabled, unit, every_s) as bar:
        for item in iterable:
            yield item
            bar.update(1)


@contextmanager
def quiet_library_bars() -> Iterator[None]:
    """Off a terminal, no progress bars from transformers ("Loading weights", "Writing model shards"), HF Hub
    downloads or datasets for the length of the block: in a redirected log each is one long line of
    carriage returns. On a terminal (or TAMP_PROGRESS=bar) nothing changes; the switches are restored."""
    if is_terminal():
        yield
        return
    import datasets
    import huggingface_hub.utils as hub
    import transformers.utils.logging as hf_logging

    was = (hf_logging.is_progress_bar_enabled(), not hub.are_progress_bars_disabled(),
           datasets.is_progress_bar_enabled())
    hf_logging.disable_progress_bar()
    hub.disable_progress_bars()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        for enabled, turn_on in zip(was, (hf_logging.enable_progress_bar, hub.enable_progress_bars,
                                          datasets.enable_progress_bars), strict=True):
            if enabled:
                turn_on()
