"""Hydra's basic sweeper, except that a multirun into a sweep folder it ran before leaves completed cells alone.

Registered for tamp's runs in conf/hydra/sweeper/tamp.yaml (`override hydra/sweeper: tamp` in
conf/run.yaml); the grid, `hydra.sweeper.params` and `max_batch_size` are the basic sweeper's. What
runs and what is refused is decided in `tamp.cli.resweep`; Hydra finds this class because sweepers
must live in the `hydra_plugins` namespace package. With hydra-submitit's launchers (the slurm presets,
submitit_local) the cells are submitted by `tamp.cli.submitted`: every job is waited for, a job that
ends without a result is a failed cell of the summary line, and Ctrl-C says what happens to the jobs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

# tamp.cli.submitted (and the sweep summary and run records under it) is imported where a sweep uses it:
# Hydra's plugin scan executes this module for every command, `--help` and tab completion included


class TampBasicSweeper(BasicSweeper):
    """The basic sweeper's grid; completed cells of an earlier multirun into the same folder are skipped."""

    def sweep(self, arguments: list[str]) -> Any:
        from tamp.cli.resweep import MULTIRUN_FILE, PLANS, batches, plan_key, plan_sweep
        from tamp.cli.runlock import RunDirInUse, RunLock
        from tamp.cli.submitted import is_submitit
        from tamp.core.io import first_line, write_text_atomic

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        _refuse_missing_slurm(self.launcher)  # before anything is composed or written
        params = self._parse_config()
        params.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        grid = self.split_arguments(parser.parse_overrides(params), None)
        cells = [list(cell) for batch in grid for cell in batch]
        try:
            plan = plan_sweep(self.hydra_context.config_loader, self.config, cells)
        except ValueError as err:  # nothing was written: one line, as the pre-run check says it
            print(f"tamp: error: {first_line(err)}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None  # SystemExit passes Hydra's guard, which only catches Exception
        PLANS[plan_key(plan.sweep_dir)] = plan
        self.overrides = [[cell.overrides for cell in batch] for batch in batches(plan.to_run, self.max_batch_size)]
        self.batch_index = 0
        returns: list[Any] = []
        if not plan.to_run:
            return returns
        sweep_dir = Path(plan.sweep_dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            lock = RunLock(sweep_dir).acquire()  # one multirun per sweep folder at a time
        except RunDirInUse as err:
            print(f"tamp: error: {first_line(err)}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        try:
            write_text_atomic(sweep_dir / MULTIRUN_FILE, OmegaConf.to_yaml(self.config))  # never through a link
            if is_submitit(self.launcher):  # every job waited for, a job without result is a failed cell
                return self._submit(plan, plan_key(plan.sweep_dir))
            for batch in batches(plan.to_run, self.max_batch_size):
                overrides = [cell.overrides for cell in batch]
                self.validate_batch_is_legal(overrides)
                results = self.launcher.launch(overrides, initial_job_idx=batch[0].index)
                for result in results:
                    _ = result.return_value  # re-raises a job's exception, as the basic sweeper does
                self.batch_index += 1
                returns.append(results)
        finally:
            lock.release()
        return returns

    def _submit(self, plan: Any, key: str) -> list[Any]:
        """The cells to run as submitit jobs under their own numbers, max_batch_size at a time (None: all)."""
        from tamp.cli.submitted import CellLost, SubmissionRefused, submit_cells

        cells = plan.to_run
        size = self.max_batch_size or len(cells)
        returns: list[Any] = []
        for start in range(0, len(cells), size):
            batch = cells[start:start + size]
            self.validate_batch_is_legal([cell.overrides for cell in batch])
            try:
                results = submit_cells(self.launcher, [(cell.index, cell.overrides) for cell in batch], key)
            except SubmissionRefused as err:
                print(f"tamp: error: {err}", file=sys.stderr, flush=True)
                raise SystemExit(2) from None
            for result in results:
                if not isinstance(result._return_value, CellLost):  # a lost job: its reason is in the summary
                    _ = result.return_value  # re-raises a job's exception, as the basic sweeper does
            self.batch_index += 1
            returns.append(results)
        return returns


def _refuse_missing_slurm(launcher: Any) -> None:
    """A SLURM launcher where sbatch / srun / sacct are missing: one line, exit 2 (TAMP_PREFLIGHT=0 included)."""
    from tamp.cli.submitted import is_submitit, missing_tools_message

    if is_submitit(launcher) and launcher._EXECUTOR == "slurm":
        message = missing_tools_message()
        if message is not None:
            print(f"tamp: error: {message}", file=sys.stderr, flush=True)
            raise SystemExit(2)
