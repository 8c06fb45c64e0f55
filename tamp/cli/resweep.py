"""A multirun into a sweep folder it has run before: completed cells are left alone, the others run.

This is how a researcher finishes a sweep after a pre-emption or a fix: the same command with the
same `hydra.sweep.dir` runs only the cells that are missing, failed or interrupted, under their own
job numbers and folders (a cell is found by its settings, not its place in the grid: the same cells
in another order, or with cells added, keep their folders; a new cell takes a number no folder has), and the summary line says `9/9 cells completed: 7 before, 2 now`. Before
anything is launched (and before Hydra writes a file), the sweep folder and every cell folder that
exists are checked as a single run's folder is: a folder tamp did not make, a run of another config
or a folder another process is running in stops the whole sweep in one line.
`hydra_plugins.tamp_sweeper` is the Hydra sweeper (Hydra's basic sweeper) that calls this.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from tamp.cli.rundir import check_not_foreign, check_run_dir, completed_run, foreign_entries
from tamp.cli.runlock import LOCK_FILE, holder, in_use_message
from tamp.core.config import config_identity
from tamp.tracking.run_record import COMPLETED, RESULTS_FILE, RunRecord, RunRecordError

MULTIRUN_FILE = "multirun.yaml"


@dataclass
class PlannedCell:
    index: int  # Hydra's job number, kept whatever runs
    overrides: list[str]
    job_dir: Path | None  # None when the sweep folder is new (nothing to look at)
    completed: bool = False


@dataclass
class SweepPlan:
    sweep_dir: Path
    cells: list[PlannedCell] = field(default_factory=list)

    @property
    def to_run(self) -> list[PlannedCell]:
        return [cell for cell in self.cells if not cell.completed]

    @property
    def before(self) -> list[PlannedCell]:
        return [cell for cell in self.cells if cell.completed]


#: the plan of each multirun in this process, by resolved sweep folder: the summary callback reads it
PLANS: dict[str, SweepPlan] = {}


def plan_key(sweep_dir: str | Path) -> str:
    return os.path.realpath(sweep_dir)


def _foreign_sweep(sweep_dir: Path) -> list[str] | None:
    """The entries of a sweep folder tamp did not make; None when tamp may sweep into it."""
    if not sweep_dir.is_dir():
        return None if not sweep_dir.exists() else [sweep_dir.name]
    entries = sorted(p.name for p in sweep_dir.iterdir())
    try:
        saved = OmegaConf.load(sweep_dir / MULTIRUN_FILE)
        if all(key in saved for key in ("model", "method", "sparsity", "runner")):
            return None
    except Exception:  # noqa: BLE001 - missing or not a YAML mapping: decided by the entries below
        pass
    others = [name for name in entries if name != LOCK_FILE]
    if all((sweep_dir / name).is_dir() and foreign_entries(sweep_dir / name) is None for name in others):
        return None  # empty, or tamp run folders only
    return entries


def _job_config(config_loader: Any, config: DictConfig, overrides: Sequence[str], index: int,
                sweep_dir: Path) -> tuple[Path, DictConfig]:
    """The cell's folder and its task config, composed as Hydra's launchers compose them."""
    from hydra.core.hydra_config import HydraConfig

    sweep_config = config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = index
        sweep_config.hydra.job.num = index
    HydraConfig.instance().set_config(sweep_config)
    job_dir = sweep_dir / str(OmegaConf.select(sweep_config, "hydra.sweep.subdir"))
    with read_write(sweep_config.hydra.runtime), open_dict(sweep_config.hydra.runtime):
        sweep_config.hydra.runtime.output_dir = os.path.abspath(job_dir)
    HydraConfig.instance().set_config(sweep_config)
    task = copy.deepcopy(sweep_config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return job_dir, task


def plan_sweep(config_loader: Any, config: DictConfig, cells: Sequence[Sequence[str]]) -> SweepPlan:
    """Which cells run; ValueError (one line) when the sweep folder or a cell folder must not be touched."""
    from hydra.core.hydra_config import HydraConfig

    sweep_dir = Path(str(config.hydra.sweep.dir))
    plan = SweepPlan(sweep_dir)
    if not sweep_dir.exists():  # a new sweep: nothing to skip, nothing to compose twice
        plan.cells = [PlannedCell(i, list(cell), None) for i, cell in enumerate(cells)]
        return plan
    entries = _foreign_sweep(sweep_dir)
    if entries is not None:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise ValueError(f"hydra.sweep.dir={sweep_dir} is not empty and is not a tamp sweep folder (it holds "
                         f"{shown}); tamp never writes into another program's folder: use a new or empty folder")
    who = holder(sweep_dir)
    if who is not None:
        raise ValueError(in_use_message(sweep_dir, who))
    saved = HydraConfig.instance().cfg
    earlier = _earlier_cells(sweep_dir)
    used = {folder.number for folder in earlier}
    try:
        for index, cell in enumerate(cells):
            job_dir, task = _job_config(config_loader, config, cell, index, sweep_dir)
            found = _take_match(earlier, job_dir, config_identity(OmegaConf.to_container(task, resolve=True)), cell)  # type: ignore[arg-type]
            number = found.number if found is not None else _free_number(index, used)
            if found is not None:
                job_dir = found.folder
            elif number != index:  # its grid position is another cell's folder: a number no folder has
                job_dir, task = _job_config(config_loader, config, cell, number, sweep_dir)
            used.add(number)
            check_not_foreign(job_dir, "cell folder")
            who = holder(job_dir)
            if who is not None:
                raise ValueError(in_use_message(job_dir, who))
            check_run_dir(job_dir, task, resume=False)
            plan.cells.append(PlannedCell(number, list(cell), job_dir, completed_run(job_dir, task) is not None))
    finally:
        HydraConfig.instance().cfg = saved
    return plan


@dataclass
class EarlierCell:
    """A cell folder an earlier multirun made in the sweep folder: its job number and what it ran."""

    folder: Path
    number: int
    settings: dict[str, Any] | None  # tamp.core.config.config_identity of its results.json config; None: no results.json yet
    overrides: list[str] | None  # Hydra's .hydra/overrides.yaml (a cell that died before its results.json)
    completed: bool = False


def _earlier_cells(sweep_dir: Path) -> list[EarlierCell]:
    """The sweep folder's cell folders with a job number (Hydra's .hydra/hydra.yaml), in number order."""
    import yaml

    found = []
    for folder in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            hydra_yaml = yaml.safe_load((folder / ".hydra" / "hydra.yaml").read_text()) or {}
            number = int(hydra_yaml["hydra"]["job"]["num"])
            overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
            continue  # not a cell folder of a multirun (or its record is damaged): never matched, never reused
        try:
            record = RunRecord.read(folder / RESULTS_FILE)
            settings = config_identity(record.config) if isinstance(record.config, dict) else None
            completed = record.status == COMPLETED
        except RunRecordError:
            settings, completed = None, False
        found.append(EarlierCell(folder, number, settings, overrides if isinstance(overrides, list) else None,
                                 completed))
    return sorted(found, key=lambda cell: cell.number)


def _take_match(earlier: list[EarlierCell], natural: Path, settings: dict[str, Any],
                overrides: Sequence[str]) -> EarlierCell | None:
    """The earlier folder of the cell with these settings (removed from `earlier`: one folder per cell).

    A cell is its settings, not its position in the grid: the same cells in another order, or with
    cells added, find their folders. Its own grid position's folder is preferred. A folder that holds
    no completed run of other settings (its job died before results.json, or a failure recorded the
    config unresolved) is matched by the overrides Hydra recorded for it.
    """
    def same_overrides(cell: EarlierCell) -> bool:
        return (cell.overrides is not None and sorted(cell.overrides) == sorted(overrides)
                and not (cell.completed and cell.settings != settings))

    for same in (lambda cell: cell.settings == settings, same_overrides):
        matches = sorted((cell for cell in earlier if same(cell)), key=lambda cell: cell.folder != natural)
        if matches:
            break
    if not matches:
        return None
    earlier.remove(matches[0])
    return matches[0]


def _free_number(index: int, used: set[int]) -> int:
    """The cell's grid position as its job number when no folder has it, else the smallest number none has."""
    if index not in used:
        return index
    return next(number for number in range(len(used) + 1) if number not in used)


def cell_folder(config_loader: Any, config: DictConfig, overrides: Sequence[str], number: int) -> Path:
    """The folder Hydra gives the cell with these overrides and job number (for a job that never made it)."""
    from hydra.core.hydra_config import HydraConfig

    saved = HydraConfig.instance().cfg
    try:
        return _job_config(config_loader, config, overrides, number, Path(str(config.hydra.sweep.dir)))[0]
    finally:
        HydraConfig.instance().cfg = saved


def batches(cells: Sequence[PlannedCell], max_batch_size: int | None) -> list[list[PlannedCell]]:
    """Runs of consecutive job numbers (one launch each keeps every cell's number), at most max_batch_size long."""
    out: list[list[PlannedCell]] = []
    for cell in sorted(cells, key=lambda cell: cell.index):
        last = out[-1] if out else None
        if (last is not None and last[-1].index == cell.index - 1
                and (not max_batch_size or len(last) < max_batch_size)):
            last.append(cell)
        else:
            out.append([cell])
    return out
