"""Progress a cluster job can read: log lines with elapsed time and ETA when stderr is no terminal."""

from __future__ import annotations

import io
import logging
import sys

import pytest
import tqdm as tqdm_package

from tamp.core.progress import LogProgress, duration, progress_bar, track
from tamp.eval.quiet import QuietTqdm, quiet_bars
from tamp.tracking.wandb_logger import console_settings

pytestmark = pytest.mark.fast  # the unit tier: make test-fast


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tamp.core.progress"]


def test_one_line_per_block_with_elapsed_and_an_eta_from_the_blocks_after_the_first(caplog):
    """Issue 26.7: the first step carries the warm-up (`request 1/1600, ETA 17m58s`, done in 24 s)."""
    caplog.set_level(logging.INFO, logger="tamp.core.progress")
    clock = Clock()
    with LogProgress(6, "pruning", unit="block", clock=clock) as bar:
        for seconds in (60.0, 10.0, 10.0, 10.0, 10.0, 10.0):  # block 1: imports, caches, a first compile
            clock.now += seconds
            bar.update(1)
    assert messages(caplog) == [
        "pruning: block 1/6, elapsed 1m00s",  # not `ETA 5m00s`
        "pruning: block 2/6, elapsed 1m10s",  # one step after the first is no rate yet
        "pruning: block 3/6, elapsed 1m20s, ETA 30s",
        "pruning: block 4/6, elapsed 1m30s, ETA 20s",
        "pruning: block 5/6, elapsed 1m40s, ETA 10s",
        "pruning: block 6/6, elapsed 1m50s",
    ]


def test_fast_steps_are_throttled_but_the_last_is_logged(caplog):
    caplog.set_level(logging.INFO, logger="tamp.core.progress")
    clock = Clock()
    bar = LogProgress(100, "capture", unit="sample", every_s=30.0, clock=clock)
    for _ in range(100):
        clock.now += 1.0
        bar.update(1)
    lines = messages(caplog)
    assert [line.split(",")[0] for line in lines] == [
        f"capture: sample {n}/100" for n in (1, 31, 61, 91, 100)
    ]
    assert lines[1] == "capture: sample 31/100, elapsed 31s, ETA 1m09s"


def test_a_resumed_run_counts_only_its_own_blocks_in_the_eta(caplog):
    caplog.set_level(logging.INFO, logger="tamp.core.progress")
    clock = Clock()
    bar = LogProgress(10, "pruning", unit="block", clock=clock)
    bar.resume(6)  # the engine skips the checkpointed blocks at once (tamp.core.progress.resume)
    for _ in range(3):
        clock.now += 5.0
        bar.update(1)
    assert messages(caplog) == [
        "pruning: block 6/10, elapsed 0s (resumed after 6)",
        "pruning: block 7/10, elapsed 5s",
        "pruning: block 8/10, elapsed 10s",
        "pruning: block 9/10, elapsed 15s, ETA 5s",
    ]


def test_duration():
    assert [duration(s) for s in (0.4, 59, 61, 3600 * 2 + 7 * 60 + 5)] == ["0s", "59s", "1m01s", "2h07m"]


def test_progress_bar_is_a_log_off_a_terminal_and_a_bar_on_one(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="tamp.core.progress")
    monkeypatch.delenv("TAMP_PROGRESS", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert isinstance(progress_bar(2, "pruning", unit="block"), LogProgress)
    assert list(track([1, 2, 3], "calibration", unit="sample")) == [1, 2, 3]
    assert messages(caplog)[-1] == "calibration: sample 3/3, elapsed 0s"
    assert isinstance(progress_bar(2, "x", enabled=False), tqdm_package.tqdm)  # disabled: no lines at all
    monkeypatch.setenv("RANK", "1")
    assert not isinstance(progress_bar(2, "x"), LogProgress)  # other ranks stay quiet
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("TAMP_PROGRESS", "bar")
    bar = progress_bar(2, "pruning", unit="block")
    assert isinstance(bar, tqdm_package.tqdm) and not bar.disable
    bar.close()


@pytest.mark.integration(reason="imports lmms-eval")
def test_lmms_eval_bars_are_off_while_evaluating_off_a_terminal():
    import datasets
    import lmms_eval.api.task as task_module
    import lmms_eval.evaluator as evaluator_module

    original = tqdm_package.tqdm
    out = io.StringIO()
    with quiet_bars(enabled=True):
        assert task_module.tqdm is QuietTqdm and evaluator_module.tqdm is QuietTqdm
        from tqdm import tqdm  # a function-local import, as lmms-eval's bootstrap does

        assert list(tqdm(range(3), file=out, disable=False)) == [0, 1, 2]
        assert not datasets.is_progress_bar_enabled()
    assert out.getvalue() == ""
    assert (
        tqdm_package.tqdm is original and task_module.tqdm is original and evaluator_module.tqdm is original
    )
    assert datasets.is_progress_bar_enabled()
    with quiet_bars(enabled=False):
        assert task_module.tqdm is original


@pytest.mark.parametrize(
    ("env", "silent"), [({}, True), ({"WANDB_SILENT": "false"}, None), ({"WANDB_QUIET": "true"}, None)]
)
def test_wandb_is_silent_unless_the_environment_asks(monkeypatch, env, silent):
    for var in ("WANDB_SILENT", "WANDB_QUIET"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    settings = console_settings()
    assert (settings.silent if settings is not None else None) is silent


def test_library_bars_are_off_only_while_a_cell_runs_off_a_terminal(monkeypatch):
    """transformers' "Loading weights", HF Hub's and datasets' bars: off inside the block, restored after."""
    import datasets
    import huggingface_hub.utils as hub
    import transformers.utils.logging as hf_logging

    from tamp.core.progress import quiet_library_bars

    monkeypatch.setenv("TAMP_PROGRESS", "log")  # as with output redirected
    states = lambda: (hf_logging.is_progress_bar_enabled(), not hub.are_progress_bars_disabled(),  # noqa: E731
                      datasets.is_progress_bar_enabled())
    assert states() == (True, True, True)
    with quiet_library_bars():
        assert states() == (False, False, False)
    assert states() == (True, True, True)
    monkeypatch.setenv("TAMP_PROGRESS", "bar")  # a terminal: left alone
    with quiet_library_bars():
        assert states() == (True, True, True)
