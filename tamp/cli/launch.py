"""The processes of one run's Fabric world: what Lightning's ddp launcher re-executes, and who speaks.

Lightning's `ddp` strategy (`runner=ddp_gpu`, `runner.strategy=ddp`) starts ranks 1..N-1 by running
the launching command again (`sys.argv`, plus `hydra.run.dir=<HydraConfig's run.dir>`). Inside a
Hydra multirun that command is the whole sweep: every child would run every cell once more, in a
sweep folder of its own, and print a second summary line. `child_command` turns the re-executed
command into the current cell's own: its overrides, as a single run in the cell's directory.
After the cell, the launching process gets its environment back (Lightning leaves LOCAL_RANK and
WORLD_SIZE set, which would make the next cell believe its processes were started by a cluster) and
leaves the process group, so the next cell launches a world of its own.

Only global rank 0 writes results.json, records a failure and prints the summary line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: environment variables Lightning's script launcher sets in the launching process
_LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
#: where a child finds the sweep's shared cache (the dense cell's scores), the launching cell's
CACHE_ENV = "TAMP_SWEEP_CACHE_DIR"
#: set for the ranks Lightning's script launcher starts (they run one cell of the launching command)
CHILD_ENV = "TAMP_DDP_CHILD"
#: Hydra overrides that belong to the sweep, not to one cell run on its own
_SWEEP_ONLY = ("hydra.mode", "hydra.sweep", "hydra.sweeper", "hydra/sweeper", "hydra.launcher",
               "hydra/launcher", "hydra.run.dir", "hydra.output_subdir", "hydra.job.name")


def launch_rank() -> int:
    """This process's global rank as its launcher set it (0 in the process that started the run).

    Lightning's script launcher sets LOCAL_RANK and NODE_RANK in its children, SLURM sets
    SLURM_PROCID in every task, torchrun sets RANK.
    """
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    local = os.environ.get("LOCAL_RANK", "0")
    return int(local) if local.isdigit() else 0


_WORLD: dict[str, bool] = {}


def joined_world() -> None:
    """Called when this process runs inside the Fabric world (its collectives reach the other ranks)."""
    _WORLD["joined"] = True


def in_world() -> bool:
    """Whether this process joined its run's world (a failure after that is every rank's to see)."""
    return _WORLD.get("joined", False)


def is_script_child() -> bool:
    """A rank > 0 that Lightning's script launcher started for one cell (see `cell_world`)."""
    return os.environ.get(CHILD_ENV) == "1" and launch_rank() != 0


def starts_scripts(fabric: Any) -> bool:
    """Whether `fabric.launch` will re-execute the command line to start the other ranks."""
    from lightning.fabric.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    launcher = getattr(fabric.strategy, "launcher", None)
    return isinstance(launcher, _SubprocessScriptLauncher) and not launcher.cluster_environment.creates_processes_externally


def child_command(hydra_cfg: Any, argv: list[str] | None = None) -> list[str]:
    """The cell's own command-line arguments (after the program): its overrides, run as a single run.

    Flags that choose the config (`--config-dir`, `--config-name`, `--config-path`) are kept from `argv`.
    """
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    flags = []
    for flag, value in (("--config-path", args.config_path), ("--config-name", args.config_name),
                        ("--config-dir", args.config_dir)):
        if value is not None:
            flags += [flag, str(value)]
    keep = [o for o in hydra_cfg.overrides.hydra if not _key(o).startswith(_SWEEP_ONLY)]
    return [*flags, *keep, *hydra_cfg.overrides.task]


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


@contextmanager
def cell_world(fabric: Any, cache_dir: str | None) -> Iterator[None]:
    """Around `fabric.launch` in the launching process of a run whose ranks are re-executed scripts."""
    if not starts_scripts(fabric):
        yield
        return
    saved_env = {name: os.environ.get(name) for name in (*_LAUNCH_ENV, CACHE_ENV, CHILD_ENV)}
    saved_argv = list(sys.argv)
    _point_children_at_this_cell(cache_dir)
    try:
        yield
    finally:
        sys.argv[:] = saved_argv
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _point_children_at_this_cell(cache_dir: str | None) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    os.environ[CHILD_ENV] = "1"
    if cache_dir:
        os.environ[CACHE_ENV] = str(cache_dir)
    if not HydraConfig.initialized():
        return  # called from Python: Lightning re-executes sys.argv as it is
    hc = HydraConfig.get()
    sys.argv[1:] = child_command(hc)
    with read_write(hc), open_dict(hc):  # Lightning appends hydra.run.dir=<this> to the child's command
        hc.run.dir = hc.runtime.output_dir


# ---------------------------------------------------------------------------------------- requeue
#: the requeue signal submitit received in this process (its name), if any
_REQUEUE: dict[str, str] = {}


def watch_requeue_signal() -> None:
    """Inside a submitit job, note its requeue signal (USR2 by default) before submitit handles it.

    submitit checkpoints and requeues the job on that signal (`hydra/launcher=slurm_requeue`) by
    exiting from inside whatever the run is doing; `requeue_signalled()` lets the run record itself as
    interrupted (it continues from its checkpoint in the requeued job) rather than failed.
    """
    import signal

    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    signum = getattr(signal, f"SIG{name}", None)
    if signum is None:
        return
    previous = signal.getsignal(signum)
    if getattr(previous, "_tamp_watch", False):
        return

    def handler(received: int, frame: Any) -> None:
        _REQUEUE["signal"] = signal.Signals(received).name
        if callable(previous):
            previous(received, frame)

    handler._tamp_watch = True  # type: ignore[attr-defined]
    signal.signal(signum, handler)


def requeue_signalled() -> str | None:
    """The requeue signal's name if this process received it (the job is being requeued)."""
    return _REQUEUE.get("signal")
