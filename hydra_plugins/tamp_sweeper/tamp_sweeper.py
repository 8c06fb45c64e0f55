"""Hydra's basic sweeper, except that a multirun into a sweep folder it ran before leaves completed cells alone.

Registered for tamp's runs in conf/hydra/sweeper/tamp.yaml (`override hydra/sweeper: tamp` in
conf/run.yaml); the grid, `hydra.sweeper.params` and `max_batch_size` are the basic sweeper's. What
runs and what is refused is decided in `tamp.cli.resweep`; Hydra finds this class because sweepers
must live in the `hydra_plugins` namespace package.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf


class TampBasicSweeper(BasicSweeper):
    """The basic sweeper's grid; completed cells of an earlier multirun into the same folder are skipped."""

    def sweep(self, arguments: list[str]) -> Any:
        from tamp.cli.resweep import MULTIRUN_FILE, PLANS, batches, plan_key, plan_sweep
        from tamp.cli.runlock import RunDirInUse, RunLock
        from tamp.io import first_line

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
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
            OmegaConf.save(self.config, sweep_dir / MULTIRUN_FILE)
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
