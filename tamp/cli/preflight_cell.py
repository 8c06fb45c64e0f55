"""The pre-run check of one cell: everything its config says and names, before any model is loaded.

The pre-run check is two files: tamp.cli.preflight checks a command line (composes every cell, the
folders and save targets it would write, the launcher) and calls `check_run_config` here for each cell;
this file checks one composed cell (keys, values, and the devices and files it names).
`check_run_config` is the one validation path of a run: the CLI's preflight calls it for every cell
of a command before Hydra starts anything, and `tamp.cli.run_command.run` calls it again (for callers
that compose their own config). Files are checked as far as their headers tell, without loading them:
the model folder's config.json and safetensors, the drawn calibration records' media, the eval
tasks' datasets (tamp.eval.availability). What is left for later needs the model: which linears
`runner.targets` matches, N:M divisibility, the calibration media against the processor and the
model's context.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tamp.cli.schema import RunConfig, validate
from tamp.core.io import first_line

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
    for key in ("targets", "ignore"):
        for pattern in getattr(r, key):
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"runner.{key} entry '{pattern}' is not a valid regex: {err}") from None


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
