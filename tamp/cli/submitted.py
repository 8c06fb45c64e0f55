"""Cells run as submitit jobs (SLURM, or submitit's local executor): submitted, waited for, accounted for.

hydra-submitit-launcher waits for its jobs with `job.results()`, which raises submitit's
UncompletedJobError (a page of log) at the first job that ended without a result (out of memory,
`scancel`, a node failure) and leaves the other jobs unread: the sweep ended in a traceback and no
summary. tamp's sweeper submits through `submit_cells` instead: the launcher's own executor and
parameters, every job waited for, and a job without a result returned as a failed cell whose reason,
in words, the summary line gives (`LOST`). Ctrl-C (or SIGTERM) while waiting says what is true: SLURM
jobs keep running on the cluster, with their ids, how to cancel them and how to collect their results.
A machine without SLURM's commands is refused in one line before anything is submitted.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from tamp.cli.sweep_summary import LOST, LostJob

#: what submitit runs on the submitting machine: sbatch submits, srun must be found (submitit refuses to
#: build its SLURM executor without it), sacct follows the jobs' states
SLURM_TOOLS = ("sbatch", "srun", "sacct")
#: SLURM job states (sacct) in words, for a job that ended without a result
_STATES = {
    "OUT_OF_MEMORY": "out of memory (raise hydra.launcher.mem_gb)",
    "CANCELLED": "cancelled (scancel, or the cluster)",
    "NODE_FAIL": "its node failed",
    "BOOT_FAIL": "its node failed to start",
    "TIMEOUT": "time limit reached (hydra.launcher.timeout_min)",
    "DEADLINE": "deadline reached",
    "PREEMPTED": "pre-empted",
    "FAILED": "the job's process failed (its log says why)",
    "REVOKED": "revoked by the cluster",
    "INTERRUPTED": "killed by a signal",  # submitit's local executor: the job's process ended by a signal
    "FINISHED": "its process exited before writing a result (killed, out of memory, or a crash)",
}

#: states in which a job has written no result and will not: its cell is lost at once
_NO_RESULT = frozenset(_STATES) - {"FAILED", "FINISHED"}


class SubmissionRefused(ValueError):
    """The cells cannot be submitted from this machine; the message is the one line the user sees."""


class CellLost(RuntimeError):
    """A job ended without a result (the cell's reason): returned, not raised, as the job's return value."""




def missing_tools_message(launcher_name: str = "slurm") -> str | None:
    """One line when SLURM's commands are not on this machine's PATH (a laptop, a compute node's container)."""
    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
    if not missing:
        return None
    return (f"hydra/launcher={launcher_name} submits through SLURM ({', '.join(SLURM_TOOLS)}), and "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on this machine's PATH; valid: run the "
            "command on a login node of your cluster, or run the cells on this machine with "
            "hydra/launcher=local_parallel (or hydra/launcher=basic, one cell at a time)")


def is_submitit(launcher: Any) -> bool:
    """Whether Hydra's launcher is hydra-submitit's (any preset: slurm, slurm_ddp, submitit_local, ...)."""
    try:
        from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
    except ImportError:  # the plugin is not installed: no submitit launcher can be chosen either
        return False
    return isinstance(launcher, BaseSubmititLauncher)


def _executor(launcher: Any) -> Any:
    """The submitit executor the launcher's parameters describe (folder, requeues, then the rest)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    cluster = launcher._EXECUTOR
    params = dict(launcher.params)
    init: dict[str, Any] = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init[f"{cluster}_max_num_timeout"] = params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(cluster=cluster, **init)
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in shared else f"{cluster}_{k}": v for k, v in params.items()})
    return executor


def submit_cells(launcher: Any, cells: list[tuple[int, list[str]]], plan_key: str) -> list[Any]:
    """Submit every (job number, overrides) cell as one job array and wait for all of them.

    Returns Hydra's JobReturn per cell; a job that ended without a result returns a failed JobReturn
    holding `CellLost`, and is noted in LOST for the summary line. SubmissionRefused: no SLURM here.
    """
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, JobStatus, filter_overrides

    if launcher._EXECUTOR == "slurm":
        message = missing_tools_message()
        if message is not None:
            raise SubmissionRefused(message)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in launcher.config.hydra.sweep:
        os.chmod(sweep_dir, int(str(launcher.config.hydra.sweep.mode), 8))
    executor = _executor(launcher)
    for number, overrides in cells:
        print(f"tamp: job {number}: {' '.join(filter_overrides(overrides))}", file=sys.stderr, flush=True)
    state = Singleton.get_state()
    jobs = executor.map_array(launcher, [list(o) for _, o in cells], ["hydra.sweep.dir"] * len(cells),
                              [n for n, _ in cells], [f"job_id_for_{n}" for n, _ in cells], [state] * len(cells))
    print(_submitted_line(jobs, launcher._EXECUTOR, sweep_dir), file=sys.stderr, flush=True)
    lost = LOST.setdefault(plan_key, {})
    returns = []
    try:
        for (number, overrides), job in zip(cells, jobs, strict=True):
            reason = _ended_without_result(job, sweep_dir)
            if reason is None:
                try:
                    returns.append(job.results()[0])
                    continue
                except Exception as err:  # noqa: BLE001 - submitit's UncompletedJobError / FailedJobError
                    reason = lost_reason(job, err, sweep_dir)
            lost[number] = LostJob(number, _cell_name(launcher, number, overrides, sweep_dir), reason)
            returns.append(JobReturn(overrides=list(overrides), status=JobStatus.FAILED,
                                     _return_value=CellLost(reason)))
    except KeyboardInterrupt as err:
        _stop_waiting(jobs, launcher._EXECUTOR, sweep_dir, str(err))
    return returns


def _cell_name(launcher: Any, number: int, overrides: list[str], sweep_dir: Path) -> str:
    """`3_owl_0.5`: the folder Hydra names the cell (the job may have died before making it)."""
    from tamp.cli.resweep import cell_folder

    try:
        folder = cell_folder(launcher.hydra_context.config_loader, launcher.config, overrides, number)
        return str(folder.relative_to(sweep_dir))
    except Exception:  # noqa: BLE001 - a name that does not resolve here: the job's number says which cell
        return f"job {number} ({' '.join(overrides)})"


def _submitted_line(jobs: list[Any], cluster: str, sweep_dir: Path) -> str:
    count = f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}"
    if cluster == "slurm":
        return (f"tamp: submitted {count} to SLURM ({_ids(jobs)}); waiting for them (Ctrl-C stops the waiting, "
                f"not the jobs); results under {sweep_dir}")
    return f"tamp: started {count} on this machine (submitit's {cluster} executor); results under {sweep_dir}"


def _ids(jobs: list[Any]) -> str:
    """`job 4242, tasks 4242_0..4242_6` for an array, the ids themselves otherwise."""
    ids = [str(job.job_id) for job in jobs]
    arrays = sorted({i.split("_")[0] for i in ids})
    if len(arrays) == 1 and len(ids) > 1 and all("_" in i for i in ids):
        return f"job {arrays[0]}, tasks {ids[0]}..{ids[-1]}"
    return f"job{'s' if len(ids) > 1 else ''} {', '.join(ids)}"


def _ended_without_result(job: Any, sweep_dir: Path) -> str | None:
    """The reason, once the job ended in a state that writes no result (no need for submitit's wait of 15 s
    for a slow file system); None when it ended otherwise (its result, or submitit's error, says more)."""
    job.wait()
    if Path(job.paths.result_pickle).exists():
        return None
    try:
        head = (str(job.state).split() or ["UNKNOWN"])[0]
    except Exception:  # noqa: BLE001 - sacct unreachable: submitit's own wait decides
        return None
    return None if head not in _NO_RESULT else lost_reason(job, None, sweep_dir)


def lost_reason(job: Any, err: BaseException | None, sweep_dir: Path) -> str:
    """Why a job has no result, in words: its state in SLURM (or the local process's end) and its log file."""
    from submitit.core.utils import FailedJobError

    log = _relative(Path(job.paths.stderr), sweep_dir)
    kind = "SLURM job" if job.__class__.__name__.startswith("Slurm") else "job"
    if isinstance(err, FailedJobError):  # the job's Python raised outside tamp's own recording
        return f"{kind} {job.job_id} raised: {_last_error_line(str(err))}; log {log}"
    try:
        state = str(job.state)
    except Exception:  # noqa: BLE001 - sacct unreachable: the state is unknown, the missing result is not
        state = "UNKNOWN"
    head = state.split()[0] if state else "UNKNOWN"
    words = _STATES.get(head, f"state {state}")
    if head == "INTERRUPTED":
        words = _local_signal(job) or words
    return f"{kind} {job.job_id} ended without a result: {words}; log {log}"


def _local_signal(job: Any) -> str | None:
    """`killed by SIGKILL (out of memory, or kill -9)` for submitit's local executor, from its process."""
    process = getattr(job, "_process", None)
    code = getattr(process, "returncode", None)
    if not isinstance(code, int) or code >= 0:
        return None
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"killed by {name}" + (" (out of memory, or kill -9)" if name == "SIGKILL" else "")


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not set(line.strip()) <= {"-"}]
    trace = [line for line in lines if not line.startswith(("Job (task=", "You can check", "or at paths", "- /"))]
    return trace[-1] if trace else "an error"


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def _stop_waiting(jobs: list[Any], cluster: str, sweep_dir: Path, why: str) -> None:
    """Ctrl-C or SIGTERM while waiting: what happens to the jobs, said as it is; exit 130 / 143."""
    from tamp.cli.sweep_summary import SweepSummary

    SweepSummary.active = None  # no summary line now: the cells' outcomes are not known yet
    code = 128 + (signal.SIGTERM if "SIGTERM" in why else signal.SIGINT)
    running = [job for job in jobs if not Path(job.paths.result_pickle).exists()]
    if cluster != "slurm":
        for job in running:  # submitit's local jobs are this command's children: they stop with it
            job.cancel(check=False)
        print(f"tamp: interrupted; {len(running)} of the {len(jobs)} jobs on this machine were stopped (a cell that "
              f"had started records \"interrupted\" and keeps its checkpoint): the same command runs what is left",
              file=sys.stderr)
        raise SystemExit(code)
    arrays = sorted({str(job.job_id).split("_")[0] for job in running})
    ids = ", ".join(str(job.job_id) for job in running)
    if running:
        print(f"tamp: stopped waiting; {len(running)} of the {len(jobs)} submitted jobs have not finished and keep "
              f"running on the cluster: {ids}", file=sys.stderr)
        print(f"tamp: cancel them with `scancel {' '.join(arrays)}`; their cells write their results under "
              f"{sweep_dir}: collect them when they end with `python -m tamp.report {sweep_dir}`", file=sys.stderr)
    else:
        print(f"tamp: every job has ended; summarize them with `python -m tamp.report {sweep_dir}`", file=sys.stderr)
    raise SystemExit(code)
