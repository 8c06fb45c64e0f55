"""`python -m tamp.run`: compose the config with Hydra and run one sweep cell (or one run).

The Hydra entry point is a thin shell around `run(cfg)`, which tests call directly with a
composed config. A failing cell of a multirun is recorded as failed and the sweep goes on; a
failing single run exits non-zero with a one-line error (HYDRA_FULL_ERROR=1 for the traceback).
A completed run of the same config is left untouched (one line, exit 0); SIGTERM and Ctrl-C record
"interrupted" and exit 143 / 130 with one line; a closed stdout/stderr changes nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from tamp.cli import CONF_DIR
from tamp.cli.schema import register_schema

# what only a run uses (run folders, their lock, results.json, the score columns) is imported inside the
# functions that use it: `--help`, `--info`, `--cfg` and tab completion import this module and never run
if TYPE_CHECKING:
    from tamp.tracking.run_record import RunRecord

log = logging.getLogger("tamp")
register_schema()


class CellExit(RuntimeError):
    """Code run inside a cell called sys.exit (lmms-eval's task code does): the cell fails with it."""

    def __init__(self, code: object) -> None:
        reason = code if isinstance(code, str) else f"sys.exit({code!r})"
        super().__init__(f"the cell's code exited: {reason}")
        self.code = code


def run(cfg: DictConfig, run_dir: str | Path, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Validate, start the Fabric world the runner asks for, run the cell; return its results.

    A run folder tamp did not make, one of another config, one in use by another process and a save
    target that is not tamp's to replace are refused before anything is written; a completed run of
    this same config is returned as it is, nothing written. The other ranks of a world that SLURM
    starts as tasks (slurm_ddp) work in rank 0's folder under its lock; only rank 0 records and prints.
    """
    from contextlib import nullcontext

    from omegaconf import OmegaConf

    from tamp.cli.launch import cell_world, is_script_child, launch_rank
    from tamp.cli.preflight import check_run_config
    from tamp.cli.rundir import check_not_foreign, check_run_dir, completed_message, completed_run
    from tamp.cli.runlock import RunLock
    from tamp.cli.runner import SealedConfig, make_fabric, run_cell
    from tamp.models.saving import check_run_save
    from tamp.tracking.run_record import RESULTS_FILE, RunRecord

    rank = launch_rank()
    resume = bool(cfg.get("resume"))
    if not is_script_child():  # a ddp child works in the folder its parent checked and holds
        check_not_foreign(run_dir, "resume" if resume else "hydra.run.dir")
        check_run_dir(run_dir, cfg, resume=resume)  # refusals leave the directory untouched
    done = None if resume or is_script_child() else completed_run(run_dir, cfg)
    if done is not None:
        log.info(completed_message(run_dir))
        return done.to_json()
    with RunLock(run_dir) if rank == 0 else nullcontext():  # ranks > 0 work under rank 0's lock
        started = time.time()
        try:
            # one-line error for a bad value or file, before any heavy work; the calibration file on rank 0 only
            settings = check_run_config(cfg, calibration=rank == 0)
            check_run_save(settings, OmegaConf.to_container(cfg, resolve=True), run_dir)  # type: ignore[arg-type]
            fabric = make_fabric(settings)
            cache = str(cache_dir) if cache_dir else None
            with cell_world(fabric, cache):  # ddp's re-executed ranks run this cell only, as a single run
                fabric.launch(run_cell, SealedConfig(cfg, settings), str(run_dir), cache)
        except BaseException as err:  # run_cell records its own failures; this covers what comes before
            if rank == 0:
                record_failure(cfg, run_dir, err, since=started)
            raise
        if fabric.global_rank != 0:  # rank 0 writes results.json and prints the summary line
            return {"status": "worker", "rank": fabric.global_rank}
        record = RunRecord.read(Path(run_dir) / RESULTS_FILE)
    _print_summary(record, run_dir)
    return record.to_json()


def summary_head(record: RunRecord) -> str:
    """`wanda, seed 42: sparsity 0.5000 (target 0.5, 2:4)`; `..., seed 1, calib.seed 7: ...` when a seed is set
    apart; a saved checkpoint by its own method and measured sparsity."""
    from tamp.tracking.run_names import name_of_record, seed_words
    from tamp.tracking.run_record import pattern_label

    name = name_of_record(record.to_json())
    achieved = record.sparsity.achieved or 0
    if name.saved:
        return f"{name.label()}: sparsity {achieved:.4f} (measured on its weights; {_saved_by(record.sparsity.manifest)})"
    seed = f", {seed_words(name.seed)}" if name.seed is not None and not name.dense else ""
    s = record.sparsity
    pattern = pattern_label(s.pattern, s.nm, record.method.allocation)
    shape = "" if pattern == "unstructured" or name.dense else f", {pattern}"
    return f"{name.label()}{seed}: sparsity {achieved:.4f} (target {s.target}{shape})"


def _saved_by(manifest: dict[str, Any] | None) -> str:
    """`saved by wanda at target 0.5` (`... 0.5 2:4` for N:M): what the sparsity manifest says made the weights."""
    if not manifest:
        return "no sparsity manifest beside the weights"
    pattern = manifest.get("pattern")
    return (f"saved by {manifest.get('method')} at target {manifest.get('target')}"
            + (f" {pattern}" if pattern not in (None, "unstructured") else ""))


def _print_summary(record: RunRecord, run_dir: str | Path) -> None:
    from tamp.eval.columns import column_scores
    from tamp.tracking.run_record import RESULTS_FILE

    line = summary_head(record)
    primary = {task: record.scores.get(task, {}) for task in record.primary_metric}
    scores = record.scores if record.columns else primary  # older records: every primary metric's column
    for label, value in column_scores(record.primary_metric, scores, record.columns).items():
        line += f", {label} {value:.4f}"
    print(f"{line}; results in {Path(run_dir) / RESULTS_FILE}")


def record_failure(cfg: DictConfig, run_dir: str | Path, err: BaseException, since: float = 0.0) -> None:
    """Make sure the cell's results.json says "failed" or "interrupted" (validation errors happen before it exists).

    A failure already recorded (since `since`: not one of an earlier attempt) is kept as it is.
    """
    from omegaconf import OmegaConf

    from tamp.tracking.results import ResultsFile
    from tamp.tracking.run_record import (
        FAILED,
        INTERRUPTED,
        RESULTS_FILE,
        MethodId,
        ModelId,
        RunRecord,
        RunRecordError,
        Sparsity,
    )

    path = Path(run_dir) / RESULTS_FILE
    try:
        if RunRecord.read(path).status in (FAILED, INTERRUPTED) and path.stat().st_mtime >= since - 1.0:
            return
    except RunRecordError:  # none yet (or unreadable): this failure is the record
        pass
    raw: dict[str, Any] = OmegaConf.to_container(cfg, resolve=False)  # type: ignore[assignment]
    model, method, sparsity = (raw.get(k) or {} for k in ("model", "method", "sparsity"))
    # the config may not resolve: the method's allocation and tokens stay unrecorded rather than guessed
    base = RunRecord(
        experiment=raw.get("experiment"),
        model=ModelId(model.get("name"), model.get("family")),
        method=MethodId(method.get("name"), method.get("pruner")),
        sparsity=Sparsity(sparsity.get("target"), sparsity.get("pattern")),
        config=raw,
    )
    ResultsFile(run_dir, base).fail(err)


#: the app Hydra runs: conf/run.yaml (`--help`, `--info`, `--cfg` print it through tamp.cli.help, same settings)
CONFIG_NAME = "run"


@hydra.main(config_path=str(CONF_DIR), config_name=CONFIG_NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from tamp.cli.launch import (
        CACHE_ENV,
        in_world,
        is_script_child,
        launch_rank,
        requeue_signalled,
        watch_requeue_signal,
    )
    from tamp.cli.rundir import RunDirRefused
    from tamp.cli.runlock import RunDirInUse
    from tamp.cli.study import check_study_applied
    from tamp.core.io import first_line

    watch_requeue_signal()  # a submitit job being requeued records "interrupted", not "failed"
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    cache_dir = Path(hc.sweep.dir) / ".cache" if multirun else os.environ.get(CACHE_ENV)  # a ddp child: its cell's
    run_dir = cfg.get("resume") or hc.runtime.output_dir  # resume=PATH continues the run in PATH
    try:
        try:
            check_study_applied(cfg.get("experiment"), hc.runtime.choices)  # also without the preflight
            run(cfg, run_dir, cache_dir)
        except SystemExit as exit_:  # code inside the cell called sys.exit: fail this cell, not the sweep
            if requeue_signalled():  # submitit requeues this job by exiting: let it
                raise
            raise CellExit(exit_.code) from exit_
    except Exception as err:  # noqa: BLE001 - every failure becomes a recorded, one-line error
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = first_line(err)
        if not isinstance(err, (RunDirRefused, RunDirInUse)) and launch_rank() == 0:  # never another run's folder
            record_failure(cfg, run_dir, err)
        log.error("cell %s failed: %s", hc.job.num if multirun else hc.job.name, message)
        print(f"tamp: error: {message}", file=sys.stderr)
        # a ddp child that failed inside the world exits 0: rank 0 meets the failure too and records the cell,
        # and a non-zero exit would make Lightning kill the whole sweep; one that never joined must say so
        if not multirun and not (is_script_child() and in_world()):
            sys.exit(2)


def cli() -> None:
    """`python -m tamp.run` / `tamp-run`: check the whole command (every cell) first, then Hydra runs it.

    With a launcher that runs the cells elsewhere (hydra/launcher=slurm, from a login node) the check
    is the one for another machine, and one line says what it left to the jobs.
    """
    from tamp.cli.streams import guard_streams

    guard_streams()  # `... | head -1`: a closed pipe drops output, never the run
    if any("resume=" in arg for arg in sys.argv[1:]):  # else nothing to add: run folders' module not imported
        from tamp.cli.rundir import resume_in_place

        sys.argv = resume_in_place(sys.argv)  # resume=DIR: Hydra's run folder is DIR, not a new stray one
    from tamp.cli.help import hydra_answer, show_answer

    if hydra_answer(sys.argv[1:]):  # Hydra's own --help / --info / --cfg / -sc, each piece of its work done once
        show_answer(main.__wrapped__, str(CONF_DIR), CONFIG_NAME, sys.argv[1:])  # type: ignore[attr-defined]
        sys.exit(0)
    from tamp.cli.preflight import NothingToDo, PreflightError, enabled, preflight

    if enabled():
        try:
            checked = preflight(sys.argv[1:], local=None)  # a SLURM launcher: checked for its nodes
        except PreflightError as err:
            print(f"tamp: error: {err}", file=sys.stderr)
            sys.exit(2)
        except NothingToDo as done:
            print(f"tamp: {done}", file=sys.stderr)
            sys.exit(0)
        if checked.note():
            print(checked.note(), file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # SLURM pre-emption: record "interrupted", keep the checkpoint
    try:
        main()
    except KeyboardInterrupt as err:  # SIGTERM or Ctrl-C: the cell recorded "interrupted" on its way out
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # SLURM may signal again while this exits
        name = str(err) or "signal SIGINT"
        code = 128 + (signal.SIGTERM if "SIGTERM" in name else signal.SIGINT)
        print(f"tamp: interrupted by {name.removeprefix('signal ')}; results.json says \"interrupted\" and the "
              "checkpoint is kept: the same command resumes", file=sys.stderr)
        from tamp.cli.sweep_summary import summarize_interrupted

        summarize_interrupted()  # a multirun: Hydra runs no end-of-multirun callback then, so its summary here
        sys.exit(code)
    finally:  # a multirun refused or failed after it started: no later call of this process sees it as running
        from tamp.cli.sweep_summary import SweepSummary

        SweepSummary.active = None


def _interrupt(signum: int, frame: Any) -> None:
    signal.signal(signum, signal.SIG_IGN)  # once: a second SIGTERM must not cut the recording short
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


if __name__ == "__main__":
    cli()
