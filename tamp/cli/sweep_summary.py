"""One summary line at the end of every multirun, and a non-zero exit when a cell failed.

A failing cell is recorded in its results.json and the sweep goes on (tamp.run), so without this the
sweep ended with status 0 and scripts, SLURM dependencies and CI could not tell. A Hydra callback,
registered in conf/run.yaml:

    hydra:
      callbacks:
        sweep_summary:
          _target_: tamp.cli.sweep_summary.SweepSummary

After the last cell it reads the results.json of every cell this multirun wrote under the sweep
directory (any launcher: the cells' files are the common ground) and prints
`7/9 cells completed; failed: 3_owl_0.5 (reason), ...` on stderr. A multirun into a sweep folder
it ran before skips the cells completed then (tamp.cli.resweep) and counts them:
`9/9 cells completed: 7 before, 2 now`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from tamp.core.io import first_line, natural_key
from tamp.tracking.run_record import COMPLETED, FAILED, RESULTS_FILE, RunRecord, RunRecordError


@dataclass(frozen=True)
class LostJob:
    number: int  # Hydra's job number (hydra.job.num)
    name: str  # the cell's folder under the sweep folder, as the summary line names cells
    reason: str


#: jobs that ended without a result (noted by tamp.cli.submitted), by the sweep folder's plan key
#: (tamp.cli.resweep.plan_key) and job number
LOST: dict[str, dict[int, LostJob]] = {}

EXIT_FAILED = 1
REASON_CHARS = 160
#: a cell's job directory holds Hydra's record of the job (hydra.output_subdir, `.hydra` by default)
JOB_MARKER = "overrides.yaml"


@dataclass(frozen=True)
class Cell:
    name: str  # the job directory relative to the sweep directory, e.g. 3_owl_0.5
    completed: bool
    reason: str = ""


def _short(text: str) -> str:
    line = first_line(text)
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 3] + "..."


def read_cell(sweep_dir: Path, job_dir: Path, since: float) -> Cell:
    """A cell's outcome from its results.json; a missing, stale or unreadable file is a failure with why."""
    name = str(job_dir.relative_to(sweep_dir))
    path = job_dir / RESULTS_FILE
    if not path.exists() or path.stat().st_mtime < since:
        return Cell(name, False, "no results.json written")
    try:
        record = RunRecord.read(path)
    except RunRecordError as err:
        return Cell(name, False, f"unreadable results.json ({type(err.__cause__ or err).__name__})")
    if record.status == COMPLETED:
        return Cell(name, True)
    if record.status == FAILED:
        return Cell(name, False, _short(str(record.error or "failed")))
    return Cell(name, False, f"status {record.status!r}: the cell did not finish")


def find_cells(sweep_dir: Path, since: float) -> list[Cell]:
    """The cells this multirun ran: job directories (or results.json files) written since it started."""
    jobs: set[Path] = set()
    for marker in sweep_dir.rglob(JOB_MARKER):
        if marker.parent.name.startswith(".") and marker.stat().st_mtime >= since:
            jobs.add(marker.parent.parent)
    for results in sweep_dir.rglob(RESULTS_FILE):
        if results.stat().st_mtime >= since:
            jobs.add(results.parent)
    jobs.discard(sweep_dir)
    return [read_cell(sweep_dir, job, since) for job in sorted(jobs, key=natural_key)]


def planned_cells(sweep_dir: Path, since: float) -> tuple[list[Cell], int] | None:
    """(cells, how many were completed before) from the sweeper's plan of this multirun; None without one."""
    from tamp.cli.resweep import PLANS, plan_key

    plan = PLANS.get(plan_key(sweep_dir))
    if plan is None:
        return None
    if any(cell.job_dir is None for cell in plan.cells):  # a new sweep folder: the files say it all
        return find_cells(sweep_dir, since), 0
    cells = [Cell(str(cell.job_dir.relative_to(plan.sweep_dir)), True) if cell.completed
             else read_cell(plan.sweep_dir, cell.job_dir, since) for cell in plan.cells]  # type: ignore[union-attr]
    return cells, len(plan.before)


def with_lost_jobs(cells: list[Cell], sweep_dir: Path) -> list[Cell]:
    """The cells, with why a submitit job ended without a result (out of memory, cancelled, node failure).

    Such a job's folder says little (no results.json, or one left "running") or does not exist (the job
    died before Hydra made it): its cell fails with the job's reason, and a cell without a folder is added.
    """
    from tamp.cli.resweep import plan_key

    lost = LOST.get(plan_key(sweep_dir))
    if not lost:
        return cells
    out = list(cells)
    for job in lost.values():
        at = next((i for i, cell in enumerate(out) if _job_number(cell.name) == job.number), None)
        if at is None:
            out.append(Cell(job.name, False, job.reason))
        elif not out[at].completed:  # a cell that recorded its completion before the job died stays completed
            out[at] = Cell(out[at].name, False, job.reason)
    return sorted(out, key=lambda cell: natural_key(cell.name))


def _job_number(name: str) -> int | None:
    """Hydra's job number a cell folder's name starts with (`3_owl_0.5`, `3`), else None."""
    head = Path(name).parts[0].split("_", 1)[0] if name else ""
    return int(head) if head.isdigit() else None


def summary_line(cells: list[Cell], before: int = 0) -> str:
    """`7/9 cells completed; failed: 3_owl_0.5 (reason), ...`; `9/9 cells completed: 7 before, 2 now`."""
    done = sum(cell.completed for cell in cells)
    line = f"{done}/{len(cells)} cells completed"
    if before:
        line += f": {before} before, {done - before} now"
    failed = [f"{cell.name} ({cell.reason})" for cell in cells if not cell.completed]
    return line + (f"; failed: {', '.join(failed)}" if failed else "")


class SweepSummary(Callback):
    """Hydra callback: summary line after the multirun; exit status 1 when any cell failed or none ran."""

    #: the multirun in progress and its config: Ctrl-C (or SIGTERM) skips Hydra's end callbacks
    active: ClassVar[tuple[SweepSummary, DictConfig] | None] = None

    def __init__(self) -> None:
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time() - 1.0  # file times may be rounded down to the second
        SweepSummary.active = (self, config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        SweepSummary.active = None
        sweep_dir = Path(str(config.hydra.sweep.dir))
        planned = planned_cells(sweep_dir, self.started)
        cells, before = planned if planned is not None else (
            find_cells(sweep_dir, self.started) if sweep_dir.is_dir() else [], 0)
        cells = with_lost_jobs(cells, sweep_dir)
        if not cells:
            print(f"tamp: no cells of this multirun found under {sweep_dir}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_FAILED)
        print(summary_line(cells, before), file=sys.stderr, flush=True)
        if not all(cell.completed for cell in cells):
            raise SystemExit(
                EXIT_FAILED
            )  # SystemExit passes Hydra's callback guard, which only catches Exception


def summarize_interrupted() -> bool:
    """After Ctrl-C or SIGTERM stopped a multirun, its summary line (the cells not reached count as not
    completed); False outside a multirun. Hydra calls no end-of-multirun callback when a job raises one."""
    if SweepSummary.active is None:
        return False
    summary, config = SweepSummary.active
    try:
        summary.on_multirun_end(config)
    except SystemExit:
        pass
    return True
