"""The pre-run check: a `tamp.run` command line checked before Hydra starts anything, one line and exit 2
for bad input.

It is two files: this one checks the command (every cell composed, the folders and save targets it
would write, the launcher); tamp.cli.preflight_cell checks one composed cell (`check_run_config`: keys,
values, and the devices and files it names), here for every cell and again by the run itself.

Hydra reports a bad override or an unknown group option after composition with several lines and
a hint about HYDRA_FULL_ERROR, and values are otherwise checked only once a cell runs. Here the
command's overrides are composed with Hydra's own compose API, for a multirun once per cell of the
basic sweeper's grid (`hydra.sweeper.params` of an experiment included), and every cell goes
through `tamp.cli.preflight_cell.check_run_config`: a sweep with one bad cell fails in the first seconds,
before any model loads and before anything is written.

It also guards what exists before Hydra writes its own files into the run folder: a folder tamp
did not make, a run of another config, a folder another process is running in, a save target that
is not tamp's to replace (`tamp.cli.save_run`), two cells saving into one folder. The same
command into a completed run folder of the same config is `NothingToDo`: one line, exit 0.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from tamp.cli import CONF_DIR
from tamp.cli.preflight_cell import check_run_config, valid_keys
from tamp.cli.rundir import check_not_foreign, check_run_dir, completed_message, completed_run
from tamp.cli.runlock import holder, in_use_message
from tamp.cli.save_run import check_run_save
from tamp.cli.schema import register_schema
from tamp.cli.study import check_study_applied
from tamp.core.io import first_line
from tamp.methods.components import override_message
from tamp.pipeline.checkpoint_files import check_checkpoint

CONFIG_NAME = "run"
#: Hydra flags that do not run a job (help, config printing, completion): left to Hydra as they are
_PASS_THROUGH = ("help", "hydra_help", "cfg", "shell_completion", "info", "experimental_rerun",
                 "config_path", "config_dir", "config_name")


#: launchers that run the cells on this machine; any other (SLURM, ...) runs them elsewhere
LOCAL_LAUNCHERS = ("BasicLauncher", "JoblibLauncher", "submitit_launcher.LocalLauncher")


class PreflightError(ValueError):
    """A bad command line, already phrased as the one line the user sees."""


class NothingToDo(Exception):  # noqa: N818 - not an error: the run is already done
    """The command's run folder holds a completed run of the same config; the message says so in one line."""


@dataclass
class Checked:
    """What the pre-run check did: the cells it checked and, for another machine, what it left to the jobs."""

    cells: int
    remote: str | None = None  # the launcher that runs the cells elsewhere (`slurm`), None: this machine
    skipped: list[str] = field(default_factory=list)

    def note(self) -> str | None:
        """The line a submission from a login node prints: checked for another machine, and what was not."""
        if self.remote is None:
            return None
        left = "; ".join(self.skipped) if self.skipped else "nothing"
        return (f"tamp: checked {self.cells} cell{'s' if self.cells != 1 else ''} for the machines of "
                f"hydra/launcher={self.remote} (keys, types, ranges, files seen here); left to each job on its "
                f"node: {left}")


def check_command(argv: Sequence[str], local: bool | None = True) -> int:
    """Compose and check every cell `argv` describes; the number of cells checked (0: left to Hydra).

    `local=False` checks a command meant for another machine (a GPU node with the weights and data);
    `local=None` decides from the launcher (tamp.run does: a SLURM submission from a login node).
    """
    return preflight(argv, local).cells


def remote_launcher(base: DictConfig) -> str | None:
    """The launcher's option name when it runs the cells on other machines (slurm), else None.

    TAMP_PREFLIGHT=remote treats any launcher as remote (a launcher of your own that submits elsewhere).
    """
    target = str(OmegaConf.select(base, "hydra.launcher._target_", default="") or "")
    name = str(OmegaConf.select(base, "hydra.runtime.choices", default={}).get("hydra/launcher") or target)
    if os.environ.get("TAMP_PREFLIGHT", "").lower() == "remote":
        return name or "remote"
    return None if not target or target.endswith(LOCAL_LAUNCHERS) else name


def preflight(argv: Sequence[str], local: bool | None = True) -> Checked:
    """`check_command` with what it decided: for another machine or this one, and what it left to the jobs."""
    args = get_args_parser().parse_args(list(argv))
    if any(getattr(args, flag, None) for flag in _PASS_THROUGH):
        return Checked(0)
    overrides = list(args.overrides)
    parsed = _parse(overrides)
    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    if sweeps and not args.multirun:
        raise PreflightError(f"'{sweeps[0]}' is a sweep; add -m (--multirun) to run one cell per value, "
                             "or quote the value ('a,b') to pass it as a string")
    register_schema()
    skipped: list[str] = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        base = _compose([o for o in overrides if o not in sweeps], hydra=True)
        try:
            check_study_applied(base.get("experiment"), base.hydra.runtime.choices)
        except ValueError as err:
            raise PreflightError(str(err)) from None
        target = _check_output_dir(base, args.multirun)
        remote = remote_launcher(base) if args.multirun else None
        if args.multirun:  # before the cells: a submission that cannot be made is told in the first second
            check_slurm_tools(base)
        if local is None:
            local = remote is None
        elif not local:
            remote = remote or "another machine"
        cells = _cells(base, overrides) if args.multirun else [overrides]
        saves: dict[Path, str] = {}
        for cell in _counted(cells, None if local else remote):
            cfg = _compose(cell, hydra=False) if args.multirun else _without_hydra(base)  # a single run: composed once
            where = f" (cell {' '.join(cell)})" if args.multirun and len(cells) > 1 else ""
            try:
                settings = check_run_config(cfg, local, skipped, overrides=cell)
                if remote:
                    check_launcher(base, settings)
                run_dir = settings.resume or (None if args.multirun else target)
                if not local:  # the folders are on the other machine
                    continue
                if settings.resume:
                    _check_run_folder(Path(settings.resume), "resume")
                    check_run_dir(settings.resume, cfg, resume=True)
                    check_checkpoint(Path(settings.resume) / "checkpoint")
                elif run_dir is not None:  # hydra.run.dir=DIR of an earlier run
                    _check_run_folder(run_dir, "hydra.run.dir")
                    check_run_dir(run_dir, cfg, resume=False)
                    if completed_run(run_dir, cfg) is not None:
                        raise NothingToDo(completed_message(run_dir))
                    check_checkpoint(run_dir / "checkpoint")  # the same command continues from it
                config = OmegaConf.to_container(cfg, resolve=True)
                save = check_run_save(settings, config, run_dir, target if args.multirun else None)  # type: ignore[arg-type]
            except (ValueError, OSError) as err:
                raise PreflightError(f"{first_line(err)}{where}") from None
            if save is not None and save in saves:
                raise PreflightError(f"runner.save_dir={settings.runner.save_dir} is the same folder ({save}) for "
                                     f"cells {saves[save]} and {' '.join(cell)}; valid: one folder per cell, e.g. "
                                     "runner.save_dir=ckpt/${method.name}_${sparsity.target}")
            if save is not None:
                saves[save] = " ".join(cell)
    return Checked(len(cells), None if local else remote, list(dict.fromkeys(skipped)))


def check_slurm_tools(base: DictConfig) -> None:
    """A SLURM launcher on a machine without SLURM's commands: one line, before any cell is checked."""
    if not _runs_elsewhere(base):
        return
    from tamp.cli.submitted import missing_tools_message

    name = str(OmegaConf.select(base, "hydra.runtime.choices", default={}).get("hydra/launcher") or "slurm")
    message = missing_tools_message(name)
    if message is not None:
        raise PreflightError(message)


def _counted(cells: list[list[str]], remote: str | None) -> Iterator[list[str]]:
    """The cells, with progress for a check for another machine (a sweep of the paper's grid takes a while:
    the first cell reads lmms-eval's task index). tamp.core.progress's bar on a terminal, lines elsewhere."""
    if remote is None or len(cells) < 2:
        yield from cells
        return
    from tamp.core.progress import LogProgress, is_terminal, progress_bar

    desc = "tamp: pre-run check"
    if is_terminal():
        bar = progress_bar(len(cells), desc, unit="cell", leave=True)
    else:
        print(f"{desc} of {len(cells)} cells for hydra/launcher={remote}", file=sys.stderr, flush=True)
        bar = LogProgress(len(cells), desc, "cell", every_s=5.0, logger=_stderr_log())
    with bar:
        for cell in cells:
            yield cell
            bar.update(1)


class _StderrNow(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is when a line is logged (guard_streams or a caller may have
    replaced it since the handler was made), never to a stream that has since been closed."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _stderr_log() -> logging.Logger:
    """A logger that prints on stderr before Hydra configures logging (the pre-run check runs before Hydra)."""
    logger = logging.getLogger("tamp.preflight")
    if not logger.handlers:
        handler = _StderrNow()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def _check_run_folder(run_dir: Path, key: str) -> None:
    """A folder tamp did not make, or one another process is running in: refused before Hydra writes there."""
    check_not_foreign(run_dir, key)
    who = holder(run_dir)
    if who is not None:
        raise PreflightError(in_use_message(run_dir, who))


def _runs_elsewhere(base: DictConfig) -> bool:
    return str(OmegaConf.select(base, "hydra.launcher._target_", default="")).endswith("SlurmLauncher")


def check_launcher(base: DictConfig, settings) -> None:
    """A SLURM launcher must start one task per device of a multi-GPU world (Lightning checks it on the
    node, after the job waited in the queue): tasks_per_node == runner.devices, an integer."""
    if not _runs_elsewhere(base):
        return
    r = settings.runner
    if r.accelerator not in ("cuda", "gpu") or r.devices == 1:
        return
    try:
        tasks = int(OmegaConf.select(base, "hydra.launcher.tasks_per_node", throw_on_resolution_failure=True))
    except Exception:  # noqa: BLE001 - e.g. tasks_per_node: ${runner.devices} with devices=auto
        tasks = None
    if not isinstance(r.devices, int) or tasks != r.devices:
        raise PreflightError(
            f"runner.devices={r.devices} under SLURM needs one task per device, but the launcher asks for "
            f"tasks_per_node={tasks}; use hydra/launcher=slurm_ddp with an integer runner.devices "
            "(e.g. runner.devices=8), or runner.devices=1"
        )


def _parse(overrides: list[str]):
    parser = OverridesParser.create()
    for line in overrides:  # one at a time, so the error names the override
        try:
            parser.parse_overrides([line])
        except HydraException as err:
            raise PreflightError(f"cannot parse the override '{line}': {first_line(err)}; quote values "
                                 "with special characters, e.g. key='(a|b)'") from None
    return parser.parse_overrides(overrides)


def _cells(base: DictConfig, overrides: list[str]) -> list[list[str]]:
    """The basic sweeper's cells: the experiment's sweeper params, then the command line's overrides."""
    sweeper = OmegaConf.select(base, "hydra.sweeper", default=None)
    if sweeper is None or not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return [[o for o in overrides if not _parse([o])[0].is_sweep_override()]]  # another sweeper's grid
    params = sweeper.get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items()] + overrides
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(lines), None)
    return [list(cell) for batch in batches for cell in batch]


def _compose(overrides: list[str], hydra: bool) -> DictConfig:
    try:
        return compose(config_name=CONFIG_NAME, overrides=overrides, return_hydra_config=hydra)
    except (HydraException, OmegaConfBaseException) as err:  # a missing group option included
        raise PreflightError(_composition_error(err, overrides)) from None


def _without_hydra(cfg: DictConfig) -> DictConfig:
    """What compose(return_hydra_config=False) gives for the same overrides: a copy without the `hydra` node."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _composition_error(err: Exception, overrides: list[str]) -> str:
    """The key, the override and the valid keys of the node it names (the chosen component's own settings),
    or the valid options of a group (tamp.methods.components.override_message)."""
    return override_message(err, overrides, valid_keys) or first_line(err)


def _check_output_dir(base: DictConfig, multirun: bool) -> Path | None:
    """The run or sweep directory can be made: no file in its path, its first existing folder writable.

    Returns the directory when it resolves here (None when only Hydra's runtime can resolve it).
    """
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    resolved: Path | None
    try:
        resolved = target = Path(str(OmegaConf.select(base, key, throw_on_resolution_failure=True)))
    except Exception:  # noqa: BLE001 - an interpolation only Hydra's runtime resolves: check paths.output_dir
        resolved, target = None, Path(str(OmegaConf.select(base, "paths.output_dir", default="outputs")))
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise PreflightError(f"output directory {target} cannot be made: {probe} is a file; "
                             f"valid: a writable folder ({key}=... or paths.output_dir=...)")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise PreflightError(f"output directory {target} cannot be made: {probe} is not writable "
                             f"({err.strerror}); valid: a writable folder ({key}=... or paths.output_dir=...)") from None
    return resolved


def enabled() -> bool:
    """TAMP_PREFLIGHT=0 skips the check (it composes every cell once more, about a second); =remote checks
    for another machine whatever the launcher."""
    return os.environ.get("TAMP_PREFLIGHT", "1") not in ("0", "false", "no")
