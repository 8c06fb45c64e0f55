"""A task's own exception, out from under lmms-eval's `@retry`.

lmms-eval wraps `Task.download` and `Task.process_results` in tenacity's `@retry`: after the last
attempt the caller gets `RetryError[<Future at 0x... state=finished raised ValueError>]`, which names
neither the task nor what went wrong. Here that becomes one line with the task's name and the
underlying exception's first line; the exception stays chained for the traceback in run.log.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType

from tamp.core.io import first_line


class TaskFailedError(RuntimeError):
    """lmms-eval task code raised (after lmms-eval's retries): the message names the task and the cause."""


def underlying(err: BaseException) -> tuple[BaseException, int]:
    """(the exception a tenacity RetryError stands for, attempts made), through nested retries."""
    from tenacity import RetryError

    attempts = 1
    while isinstance(err, RetryError):
        attempt = err.last_attempt
        attempts = attempt.attempt_number
        cause = attempt.exception() if attempt.failed else None
        if cause is None:
            break
        err = cause
    return err, attempts


def task_of(traceback: TracebackType | None) -> str | None:
    """The lmms-eval task whose method raised: the innermost frame whose `self` has a `config.task` name."""
    name = None
    while traceback is not None:
        owner = traceback.tb_frame.f_locals.get("self")
        task = getattr(getattr(owner, "config", None), "task", None)
        if isinstance(task, str) and task:
            name = task
        traceback = traceback.tb_next
    return name


def describe(err: BaseException, names: Sequence[str]) -> str:
    """One line: which task failed (or which were being scored), the cause's type and first line."""
    cause, attempts = underlying(err)
    task = task_of(cause.__traceback__) or task_of(err.__traceback__)
    where = f"task {task}" if task else f"a task of {', '.join(names)}"
    tries = f" (lmms-eval tried {attempts} times)" if attempts > 1 else ""
    return f"lmms-eval {where} failed: {type(cause).__name__}: {first_line(cause)}{tries}"


@contextmanager
def retry_reveals_the_cause(names: Sequence[str]) -> Iterator[None]:
    """A tenacity RetryError from task code becomes a TaskFailedError naming the task and the real error."""
    from tenacity import RetryError

    try:
        yield
    except RetryError as err:
        cause, _ = underlying(err)
        raise TaskFailedError(describe(err, names)) from cause
