"""lmms-eval's own progress bars off when stderr is not a terminal, for the length of one evaluation.

lmms-eval 0.7.3 draws tqdm bars while it builds requests (no `disable` at all) and post-processes
(`disable=(RANK != 0)`, so always on for rank 0) and has no switch for them. Redirected to a file
(SLURM, nohup) each bar becomes one line of thousands of carriage-return updates. While an
evaluation runs, the `tqdm` names lmms-eval looks up (its modules' imports and the package attribute
that a function-local `from tqdm import tqdm` reads) point to a tqdm that is always disabled, and
HF datasets' bars (a task's first load: "Generating test split") are off through datasets' own
switch; everything is restored afterwards. On a terminal nothing changes.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import tqdm as tqdm_package

from tamp.core.progress import is_terminal

#: modules of lmms-eval that bind `tqdm` at import (module, attribute)
BOUND = (("lmms_eval.evaluator", "tqdm"), ("lmms_eval.api.task", "tqdm"))


class QuietTqdm(tqdm_package.tqdm):
    """A tqdm that never draws, whatever `disable` its caller passes; iterating it still yields every item."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


@contextmanager
def quiet_bars(enabled: bool | None = None) -> Iterator[None]:
    """Silence lmms-eval's bars inside the block; `enabled=None`: only when stderr is not a terminal."""
    if enabled is None:
        enabled = not is_terminal()
    if not enabled:
        yield
        return
    saved: list[tuple[Any, str, Any]] = []
    targets = [(tqdm_package, "tqdm")]
    for module_name, attr in BOUND:
        try:
            targets.append((importlib.import_module(module_name), attr))
        except ImportError:
            continue
    for owner, attr in targets:
        if hasattr(owner, attr):
            saved.append((owner, attr, getattr(owner, attr)))
            setattr(owner, attr, QuietTqdm)
    import datasets

    datasets_bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)
        if datasets_bars:
            datasets.enable_progress_bars()
