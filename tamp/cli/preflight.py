"""The pre-run check: a `tamp.run` command line and every cell it describes, checked before Hydra starts
anything and before any model loads; a bad input is one line and exit 2.

Two parts, top to bottom. **One cell** (`check_run_config`): everything a composed config says and names:
keys, values, the devices, and the files as far as their headers tell without loading them (the model
folder's config.json and safetensors, the drawn calibration records' media, the eval tasks' datasets,
tamp.eval.availability). It is the one validation path of a run: the command check below calls it for
every cell, and `tamp.cli.run_command.run` calls it again (for callers that compose their own config).
What is left for later needs the model: which linears `runner.targets` matches, N:M divisibility, the
calibration media against the processor and the model's context.

**The command** (`preflight`, `check_command`): Hydra reports a bad override or an unknown group option
after composition with several lines and a hint about HYDRA_FULL_ERROR, and values are otherwise
checked only once a cell runs. Here the command's overrides are composed with Hydra's own compose API,
for a multirun once per cell of the basic sweeper's grid (`hydra.sweeper.params` of an experiment
included), and every cell is checked as above: a sweep with one bad cell fails in the first seconds,
before anything is written. It also guards what exists before Hydra writes its own files into the run
folder: a folder tamp did not make, a run of another config, a folder another process is running in, a
save target that is not tamp's to replace (tamp.models.saving), two cells saving into one folder. The
same command into a completed run folder of the same config is `NothingToDo`: one line, exit 0.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from tamp.cli import CONF_DIR
from tamp.cli.schema import RunConfig, register_schema, validate
from tamp.cli.study import check_study_applied
from tamp.core.io import first_line
from tamp.methods.components import override_message

# ------------------------------------------------------------------------------------------ one cell
SEED_RANGE = (0, 2**32 - 1)  # what numpy's and torch's seeding accept on every platform


def unknown_keys(cfg: DictConfig) -> list[str]:
    """Keys of `cfg` that the schema does not have (e.g. added with `+key=value`), as full names."""
    found: list[str] = []

    def walk(node: Any, schema: type, prefix: str) -> None:
        fields = {f.name: f for f in dataclasses.fields(schema)}
        for key in node.keys() if isinstance(node, DictConfig) else ():
            if key == "hydra":
                continue
            full = f"{prefix}{key}"
            if key not in fields:
                found.append(full)
                continue
            sub = _node_type(node[key]) or _dataclass_of(fields[key])
            if sub is not None:
                walk(node[key], sub, f"{full}.")

    walk(cfg, RunConfig, "")
    return found


def _node_type(node: Any) -> type | None:
    """The settings dataclass a node was composed as (a component's own, e.g. DAS's), if any."""
    kind = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    return kind if kind is not None and dataclasses.is_dataclass(kind) else None


def _dataclass_of(field: dataclasses.Field) -> type | None:
    factory = field.default_factory
    if factory is dataclasses.MISSING:
        return None
    value = factory()
    return type(value) if dataclasses.is_dataclass(value) else None


def valid_keys(path: str) -> list[str]:
    """The schema's keys under a dotted path ('' for the top): what an unknown key could have been."""
    schema: type | None = RunConfig
    for part in [p for p in path.split(".") if p]:
        field = {f.name: f for f in dataclasses.fields(schema)}.get(part) if schema else None
        schema = _dataclass_of(field) if field else None
    return sorted(f.name for f in dataclasses.fields(schema)) if schema else []


def _check_unknown(cfg: DictConfig) -> None:
    extra = unknown_keys(cfg)
    if extra:
        parent = extra[0].rpartition(".")[0]
        node = OmegaConf.select(cfg, parent) if parent else None
        kind = _node_type(node)
        valid = sorted(f.name for f in dataclasses.fields(kind)) if kind else valid_keys(parent)
        raise ValueError(f"unknown config key '{extra[0]}'; valid{' under ' + parent if parent else ''}: "
                         f"{', '.join(valid)}")


def _check_runner(settings: RunConfig, local: bool, skipped: list[str]) -> None:
    r = settings.runner
    if isinstance(r.devices, str) and r.devices != "auto" and not r.devices.isdigit():
        raise ValueError(f"runner.devices='{r.devices}' is not valid; valid: a count >= 1, a list of device ids, or auto")
    import torch  # the devices present: only a run's own check asks, not composing or --help

    cuda = torch.cuda.is_available() or not local  # local=False: a config for another machine
    if not local and not torch.cuda.is_available() and (r.accelerator in ("cuda", "gpu") or r.device.startswith("cuda")):
        skipped.append(f"runner.accelerator={r.accelerator} (no CUDA device here)")
    if r.accelerator in ("cuda", "gpu") and not cuda:
        raise ValueError(f"runner.accelerator={r.accelerator} but no CUDA device is present; use runner=cpu")
    if (local and r.accelerator in ("cuda", "gpu") and isinstance(r.devices, int)
            and r.devices > torch.cuda.device_count()):
        raise ValueError(f"runner.devices={r.devices} but only {torch.cuda.device_count()} CUDA devices are present")
    if r.device not in ("auto", "cpu") and not r.device.startswith("cuda"):
        raise ValueError(f"runner.device='{r.device}' is not valid; valid: auto, cpu, cuda, cuda:N")
    if r.device.startswith("cuda") and not cuda:
        raise ValueError(f"runner.device={r.device} but no CUDA device is present; valid here: auto, cpu")
    from tamp.eval.placement import check_eval_device

    check_eval_device(r.eval_device)
    if r.eval_device.startswith("cuda") and not cuda:
        raise ValueError(f"runner.eval_device={r.eval_device} but no CUDA device is present; valid here: auto, cpu")
    _check_sparse_kernels(settings, cuda)
    for key in ("targets", "ignore"):
        for pattern in getattr(r, key):
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"runner.{key} entry '{pattern}' is not a valid regex: {err}") from None


def _check_sparse_kernels(settings: RunConfig, cuda: bool) -> None:
    """runner.sparse_kernels=semi_structured needs what the kernels need: a 2:4 pattern, a CUDA evaluation,
    a 16-bit model. Checked before the pruning, not found out at the evaluation after it."""
    r = settings.runner
    if r.sparse_kernels == "none":
        return
    from tamp.core.config import parse_pattern

    key = f"runner.sparse_kernels={r.sparse_kernels}"
    if parse_pattern(settings.sparsity.pattern) != (2, 4):
        raise ValueError(f"{key} runs 2:4 weights only, but sparsity.pattern={settings.sparsity.pattern}; "
                         "valid: sparsity.pattern=2:4, or runner.sparse_kernels=none")
    on_cpu = r.eval_device == "cpu" or (r.eval_device == "auto" and (r.accelerator == "cpu" or r.device == "cpu"))
    if on_cpu or not cuda:
        where = (f"the evaluation runs on the CPU (runner.eval_device={r.eval_device}, runner.accelerator="
                 f"{r.accelerator})" if on_cpu else "no CUDA device is present")
        raise ValueError(f"{key} needs a CUDA GPU with compute capability >= 8.0 for the evaluation, but {where}; "
                         "valid: a GPU runner (runner=gpu, runner=ddp_gpu), or runner.sparse_kernels=none")
    if str(settings.model.dtype) == "float32":
        raise ValueError(f"{key} needs 16-bit weights, but model.dtype=float32; valid: model.dtype=bfloat16 or "
                         "float16, or runner.sparse_kernels=none")


def _check_scalars(settings: RunConfig) -> None:
    low, high = SEED_RANGE
    if not low <= settings.seed <= high:
        raise ValueError(f"seed={settings.seed} is out of range; valid: an integer in [{low}, {high}]")
    if settings.eval.max_new_tokens is not None and settings.eval.max_new_tokens < 1:
        raise ValueError(f"eval.max_new_tokens={settings.eval.max_new_tokens} is out of range; "
                         "valid: >= 1, or null for each task's own")
    if settings.eval.batch_size < 1:
        raise ValueError(f"eval.batch_size={settings.eval.batch_size} is out of range; valid: >= 1")


def _check_model(settings: RunConfig, local: bool, skipped: list[str]) -> None:
    from tamp.models.loading import WeightsNotAvailableError, resolve_dtype
    from tamp.models.named import check_named_model

    resolve_dtype(settings.model.dtype)
    try:
        check_named_model(settings.model.name)
    except (FileNotFoundError, WeightsNotAvailableError) as err:
        if local:
            raise
        where = "not in this machine's Hugging Face cache" if isinstance(err, WeightsNotAvailableError) else "not found here"
        skipped.append(f"model.name={settings.model.name} ({where})")
    if settings.model.family is not None:
        from tamp.models.loading import check_family
        from tamp.models.named import scheme_of
        from tamp.models.registry import adapter_class

        cls = adapter_class(settings.model.family)  # one line naming the valid families
        if scheme_of(settings.model.name) is None:
            check_family(settings.model.name, settings.model.family)  # when the folder is here
        check_audio_in_video(settings.model.use_audio_in_video, cls)


def check_audio_in_video(wanted: bool, adapter: Any) -> None:
    """`model.use_audio_in_video` only for a family that interleaves a video's sound (Qwen2.5-Omni)."""
    if wanted and not hasattr(adapter, "use_audio_in_video"):
        raise ValueError(
            f"model.use_audio_in_video=true but the {adapter.family} family has no audio-in-video mode; "
            "valid: true for qwen2_5_omni only, false otherwise"
        )


def _check_calibration(settings: RunConfig) -> None:
    """The calibration file's structure and the draw (seconds at most): before the model loads."""
    calib = settings.calib
    if settings.method.pruner == "none":
        return  # the dense reference uses no calibration data
    from tamp.models.named import scheme_of

    scheme = scheme_of(settings.model.name)
    if calib.source == "tiny":
        if scheme != "tiny":
            raise ValueError("calib.source=tiny needs a tiny model (model.name=tiny:<family>); "
                             "valid otherwise: llava_json, hf")
        return
    if scheme == "zoo":
        return  # the zoo's calibration split is written by the zoo build, on first use of the model
    from tamp.data.calib import as_calib_config, check_media, draw_records

    fields = OmegaConf.to_container(OmegaConf.structured(calib), resolve=True)
    cfg = as_calib_config(fields)
    if cfg.source != "llava_json":
        return  # an HF dataset is opened with the model's processor; its errors come then
    records = draw_records(cfg)  # the process's one parse of the file: the run reuses this draw
    check_media(records, cfg)
    if calib.num_samples is None:  # every selected record: their number is known now
        _check_sample_counts(settings, len(records), f"every record of calib.path={calib.path}")


def _check_sample_counts(settings: RunConfig, available: int | None, source: str) -> None:
    """Settings that count calibration samples (ECoFLaP's `num_samples`, the processes) against the set's size.

    A count above it is not an error later: ECoFLaP scores the samples there are and the record keeps the
    number asked for; a process without a sample fails only after the model has loaded.
    """
    if available is None or settings.method.pruner == "none":
        return  # left to the run (tamp.methods.composed checks the whole set before scoring); dense draws nothing
    from tamp.methods.components import check_sample_counts, samples_phrase

    check_sample_counts(settings.method, available, source)
    devices = settings.runner.devices
    processes = devices if isinstance(devices, int) else len(devices) if isinstance(devices, list) else None
    if processes is not None and processes > available:
        raise ValueError(f"runner.devices={devices} but {samples_phrase(available, source)} and each process "
                         f"needs one; valid: runner.devices <= {available}, or more samples")


def _check_given_name(settings: RunConfig, overrides: Sequence[str] | None) -> None:
    """`method.name=X` set on the command line may not name a preset of another makeup (tamp.methods.components)."""
    if overrides is None:  # inside Hydra's run: the overrides it was started with
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    from tamp.methods.components import check_makeup, override_key

    if any(override_key(line) == "method.name" for line in overrides):
        check_makeup(settings.method, name_given=True)


def _check_names(cfg: DictConfig) -> None:
    """Names a row is labelled by: the composed config may not leave them empty."""
    name = OmegaConf.select(cfg, "method.name", default=None)
    if isinstance(name, str) and not name.strip():
        raise ValueError("method.name is empty; valid: the name the results and report rows carry "
                         "(each preset sets one: method=wanda), or leave it as the preset has it")


def _check_eval(settings: RunConfig) -> None:
    """Task folders exist, every task is known to lmms-eval and its documents can be loaded here."""
    for folder in settings.eval.include_paths:
        path = Path(folder).expanduser()
        if not path.is_dir():
            what = "is a file, not a folder" if path.exists() else "does not exist"
            raise FileNotFoundError(f"eval.include_paths entry {folder} {what}; valid: folders of lmms-eval task YAMLs")
    if settings.eval.tasks:
        env = tuple(sorted((str(k), str(v)) for k, v in settings.eval.env.items()))
        _check_tasks(tuple(settings.eval.tasks), tuple(settings.eval.include_paths), _environment_key(), env)


def _environment_key() -> tuple[str, ...]:
    """What task availability depends on besides the names: offline switches and cache folders."""
    keys = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE",
            "LMMS_EVAL_DATASETS_CACHE", "XDG_CACHE_HOME")
    return tuple(os.environ.get(k, "") for k in keys)


def _check_tasks(
    tasks: tuple[str, ...], include_paths: tuple[str, ...], environment: tuple[str, ...],
    eval_env: tuple[tuple[str, str], ...] = (),
) -> None:
    """`_task_problem`'s finding raised: a refusal is remembered too (lru_cache keeps no exception), so a
    sweep checked for another machine, whose datasets are not here, reads lmms-eval's index once, not per cell."""
    problem = _task_problem(tasks, include_paths, environment, eval_env)
    if problem is not None:
        raise problem


@functools.lru_cache(maxsize=32)
def _task_problem(
    tasks: tuple[str, ...], include_paths: tuple[str, ...], environment: tuple[str, ...],
    eval_env: tuple[tuple[str, str], ...] = (),
) -> Exception | None:
    """Once per process and task list (imports lmms-eval, about 5 s; the runner needs it anyway).

    The datasets are here (tamp.eval.availability), and the tasks' own code will not reach for the
    network or exit after the pruning: NLTK data, video folders, FFmpeg (tamp.eval.hazards, with the
    environment the tasks will see, `eval.env` included).
    """
    from tamp.eval.availability import check_task_datasets
    from tamp.eval.evaluate import resolve_tasks
    from tamp.eval.hazards import check_task_hazards

    try:
        manager, names = resolve_tasks(list(tasks), list(include_paths))
        check_task_datasets(manager, names)
        check_task_hazards(manager, names, {**os.environ, **dict(eval_env)})
    except Exception as err:  # noqa: BLE001 - raised again by _check_tasks, for every cell that asks
        return err.with_traceback(None)
    return None


def check_run_config(
    cfg: DictConfig, local: bool = True, skipped: list[str] | None = None, calibration: bool = True,
    overrides: Sequence[str] | None = None,
) -> RunConfig:
    """The typed run config, or a one-line ValueError / OSError naming the bad key or file.

    `local=False` checks a config meant for another machine (a cluster node, submitted from a login
    node): keys, types and ranges as always, and the model and calibration files where this machine
    sees them (a shared file system); what only the node has (CUDA devices, a file or cached model
    not found here) is left to the job, which checks it again on its node, and appended to `skipped`.
    `calibration=False` skips the calibration file (the other ranks of a run: rank 0 parses it once).
    `overrides` are the cell's command-line overrides (None: Hydra's, inside a run; a name set there is
    checked against the presets).
    """
    skipped = skipped if skipped is not None else []
    _check_unknown(cfg)
    _check_names(cfg)
    settings = validate(cfg)
    _check_given_name(settings, overrides)
    _check_scalars(settings)
    calib = settings.calib
    _check_sample_counts(settings, calib.num_samples, f"calib.num_samples={calib.num_samples}")
    _check_runner(settings, local, skipped)
    from tamp.methods.composed import build_method  # the engine (torch): only once the config itself is valid

    build_method(settings.prune_config())  # the method its kind names: ranges of its settings and components
    _check_model(settings, local, skipped)
    try:
        if calibration:
            _check_calibration(settings)
    except FileNotFoundError as err:
        if local:
            raise
        missing = not Path(settings.calib.path).expanduser().exists()
        skipped.append(f"calib.path={settings.calib.path} (not found here)" if missing else f"calib ({first_line(err)})")
    from tamp.eval.hazards import TaskHazardError

    try:
        _check_eval(settings)
    except (FileNotFoundError, TaskHazardError) as err:  # the node's task folders, dataset caches, NLTK, FFmpeg
        if local:
            raise
        skipped.append(f"eval ({first_line(err).split('; valid:')[0]})")
    return settings


# ------------------------------------------------------------------------------------------ the command
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
                save = _check_folders(settings, cfg, run_dir, target if args.multirun else None)
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


def _check_folders(settings: RunConfig, cfg: DictConfig, run_dir: Path | str | None,
                   sweep_dir: Path | None) -> Path | None:
    """A folder the cell resumes or runs in again (tamp's, not in use, of this config, its checkpoint whole)
    and where it saves; returns the save target (None: it saves nothing)."""
    from tamp.cli.rundir import check_run_dir, completed_message, completed_run
    from tamp.models.saving import check_run_save
    from tamp.pipeline.checkpoint_files import check_checkpoint

    if settings.resume:
        _check_run_folder(Path(settings.resume), "resume")
        check_run_dir(settings.resume, cfg, resume=True)
        check_checkpoint(Path(settings.resume) / "checkpoint")
    elif run_dir is not None:  # hydra.run.dir=DIR of an earlier run
        run_dir = Path(run_dir)
        _check_run_folder(run_dir, "hydra.run.dir")
        check_run_dir(run_dir, cfg, resume=False)
        if completed_run(run_dir, cfg) is not None:
            raise NothingToDo(completed_message(run_dir))
        check_checkpoint(run_dir / "checkpoint")  # the same command continues from it
    config = OmegaConf.to_container(cfg, resolve=True)
    return check_run_save(settings, config, run_dir, sweep_dir)  # type: ignore[arg-type]


def _check_run_folder(run_dir: Path, key: str) -> None:
    """A folder tamp did not make, or one another process is running in: refused before Hydra writes there."""
    from tamp.cli.rundir import check_not_foreign
    from tamp.cli.runlock import holder, in_use_message

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
