"""What may run in a run directory: never a second experiment over the first, never a resume of nothing.

A run directory's results.json holds the resolved config of the run that made it. Running into the
same directory again (`hydra.run.dir=DIR`, or `resume=DIR`) is allowed only with the same config,
up to the settings that do not change masks or scores (devices, progress bars, logging, paths);
`resume=DIR` further needs DIR to exist and to hold a checkpoint of an unfinished run. A folder
tamp did not make (not empty, no results.json of a tamp run) is never written into, and a
completed run of the same config is left as it is (`completed_run`): there is nothing to do.
tamp makes no links, so a symbolic link in a run folder or its .hydra (where tamp and Hydra write
their files; Hydra's own writes would follow it) is refused in one line before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tamp.cli.runlock import LOCK_FILE, lock_refused_message, not_a_lock
from tamp.core.config import RUN_VOLATILE, config_identity, flatten, is_under
from tamp.core.paths import RUN_DIR_OWN
from tamp.pipeline.checkpoint_files import PROGRESS, has_checkpoint
from tamp.tracking.run_record import COMPLETED, FAILED, RESULTS_FILE, RunRecord, RunRecordError


class RunDirRefused(ValueError):
    """The run directory belongs to another run (or holds nothing to resume): it is left untouched."""


def first_difference(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """The first differing key, a value changed on both sides before a key only one side has.

    Components own their settings, so another pruner or allocation brings other keys (SparseGPT's
    blocksize); the change a person made (`method.name`) says more than the keys it brought along.
    """
    a, b = config_identity(old), config_identity(new)
    keys = sorted(set(a) | set(b), key=lambda k: (k not in a or k not in b, k))
    for key in keys:
        if a.get(key) != b.get(key):
            return key, a.get(key), b.get(key)
    return None


def check_run_dir(run_dir: str | Path, cfg: DictConfig, resume: bool) -> None:
    """Refuse (one line) a resume of nothing and a run whose config differs from the one in run_dir."""
    run_dir = Path(run_dir)
    recorded = _read(run_dir / RESULTS_FILE)
    if resume:
        if not run_dir.is_dir():
            raise RunDirRefused(f"resume={run_dir} does not exist; valid: the directory of an interrupted "
                                    "run (it holds checkpoint/progress.json)")
        if not has_checkpoint(run_dir / "checkpoint"):  # pruned blocks, or an interrupted scoring pass
            if recorded is not None and recorded.status == COMPLETED:
                raise RunDirRefused(f"resume={run_dir} is a completed run, there is nothing to resume; "
                                 "valid: the directory of an interrupted run")
            raise RunDirRefused(f"resume={run_dir} holds no checkpoint (checkpoint/{PROGRESS}); valid: the directory "
                             "of an interrupted run")
    if recorded is None or recorded.config is None:
        return
    if not resume and recorded.status == COMPLETED:  # save_model, save_masks, save_dir added: one answer for all
        why = added_save(run_dir, recorded.config, OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
        if why is not None:
            raise RunDirRefused(why)
    disposable = recorded.status == FAILED and not has_checkpoint(run_dir / "checkpoint")
    if not disposable:  # a failed start may be replaced
        now = OmegaConf.to_container(cfg, resolve=True)
        diff = first_difference(recorded.config, now)  # type: ignore[arg-type]
        if diff is not None:
            key, there, here = diff
            raise RunDirRefused(f"{run_dir} holds a run of another configuration ({key}: {there!r} there, "
                             f"{here!r} now); resume with the same config, or use a new run directory")


def resume_in_place(argv: list[str]) -> list[str]:
    """`argv` with `hydra.run.dir=DIR` added to a single run's `resume=DIR` that names no run folder of its own.

    Hydra makes its run folder (.hydra, run.log) before tamp runs; without this a resume left a new,
    stray folder under paths.output_dir holding the resume's log, while the run went on in DIR. The
    value is copied as it was typed, so Hydra reads it the same way (quotes, interpolations).
    """
    args = argv[1:]
    if any(a in ("-m", "--multirun") for a in args) or any(a.lstrip("+").startswith("hydra.run.dir=") for a in args):
        return list(argv)
    values = [a.split("=", 1)[1] for a in args if a.lstrip("+").startswith("resume=")]
    if not values or values[-1].strip().lower() in ("", "null", "none", "''", '""'):
        return list(argv)
    return [*argv, f"hydra.run.dir={values[-1]}"]


#: top-level keys every tamp run config has (results.json's `config`, Hydra's .hydra/config.yaml)
_TAMP_KEYS = ("model", "method", "sparsity", "runner")
#: what Hydra and tamp write into a run folder before results.json exists
_STARTED = {".hydra", "run.log", LOCK_FILE}
#: every name tamp or Hydra writes directly in a run folder (a link at one of them is named as such)
_RUN_NAMES = {*RUN_DIR_OWN, "model"}


def _is_tamp_config(config: Any) -> bool:
    return isinstance(config, dict) and all(key in config for key in _TAMP_KEYS)


def _hydra_config_is_tamp(run_dir: Path) -> bool:
    import yaml

    try:
        return _is_tamp_config(yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text()))
    except (OSError, yaml.YAMLError):
        return False


def foreign_entries(run_dir: str | Path) -> list[str] | None:
    """The entries of `run_dir` when it is a folder tamp did not make; None when tamp may run in it.

    tamp may run in a folder that does not exist, is empty, holds a tamp run's results.json, or holds
    only what a tamp run writes before its results.json (Hydra's .hydra of a tamp config, run.log, the lock).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None if not run_dir.exists() else [run_dir.name]
    entries = sorted(p.name for p in run_dir.iterdir())
    if not entries:
        return None
    record = _read(run_dir / RESULTS_FILE)
    if record is not None and _is_tamp_config(record.config):
        return None
    if set(entries) <= _STARTED and (".hydra" not in entries or _hydra_config_is_tamp(run_dir)):
        if ".hydra" in entries or entries == [LOCK_FILE]:
            return None
    return entries


def linked_entry(run_dir: str | Path) -> tuple[str, str] | None:
    """The first symbolic link directly in `run_dir` or in its .hydra and its target (`run.log`, `/home/u/notes`).

    tamp writes its run files by renaming a new file over the name, which replaces a link; Hydra writes
    .hydra/*.yaml and appends to run.log with a plain open(), which would follow one. A run folder tamp
    made holds no link, so one there was put by someone else and the folder is refused before Hydra runs.
    """
    run_dir = Path(run_dir)
    for folder in (run_dir, run_dir / ".hydra"):
        if folder.is_symlink() and folder != run_dir:
            return str(folder.relative_to(run_dir)), os.readlink(folder)
        try:
            names = sorted(os.listdir(folder)) if folder.is_dir() else []
        except OSError:
            names = []
        for name in names:
            path = folder / name
            if path.is_symlink():
                return str(path.relative_to(run_dir)), os.readlink(path)
    return None


def check_not_foreign(run_dir: str | Path, key: str = "hydra.run.dir") -> None:
    """RunDirRefused (one line) when `run_dir` exists and is a folder tamp did not make, or holds a link."""
    entries = foreign_entries(run_dir)
    link = linked_entry(run_dir) if Path(run_dir).is_dir() else None
    if link is not None and (entries is None or Path(link[0]).parts[0] in _RUN_NAMES):
        raise RunDirRefused(f"{key}={run_dir} holds a symbolic link where tamp writes ({link[0]} -> {link[1]}); "
                            "tamp never writes through a link: remove the link, or use a new folder")
    if entries is None:
        lock = Path(run_dir) / LOCK_FILE
        why = not_a_lock(lock)
        if why is not None:
            raise RunDirRefused(lock_refused_message(lock, why))
        return
    if not Path(run_dir).is_dir():
        raise RunDirRefused(f"{key}={run_dir} is a file; valid: a new folder, an empty one or a tamp run folder")
    mine = [name for name in entries if name not in _STARTED] or entries  # not what Hydra just wrote
    shown = ", ".join(mine[:4]) + (", ..." if len(mine) > 4 else "")
    raise RunDirRefused(f"{key}={run_dir} is not empty and is not a tamp run folder (it holds {shown}); "
                        f"tamp never writes into another program's folder: use a new or empty folder")


def completed_run(run_dir: str | Path, cfg: DictConfig) -> RunRecord | None:
    """The record of a completed run of this same config in `run_dir` (nothing to do), else None."""
    recorded = _read(Path(run_dir) / RESULTS_FILE)
    if recorded is None or recorded.status != COMPLETED or recorded.config is None:
        return None
    now = OmegaConf.to_container(cfg, resolve=True)
    return recorded if first_difference(recorded.config, now) is None else None  # type: ignore[arg-type]


def completed_message(run_dir: str | Path) -> str:
    return (f"{run_dir} holds a completed run of this configuration; nothing to do, nothing changed "
            f"(results in {Path(run_dir) / RESULTS_FILE}; a new hydra.run.dir runs it again)")


def _read(path: Path) -> RunRecord | None:
    """The run directory's record; None when there is none (or it cannot be read)."""
    try:
        return RunRecord.read(path)
    except RunRecordError:
        return None


#: the settings that say whether and where a run saves
SAVE_KEYS = ("runner.save_model", "runner.save_dir", "runner.save_masks")


def _saves(flat: dict) -> tuple[bool, object, bool]:
    """(saves at all, where, with masks) of a flattened run config."""
    model, folder, masks = (flat.get(key) for key in SAVE_KEYS)
    return bool(model or folder or masks), folder, bool(masks)


def added_save(run_dir: str | Path, there: dict, now: dict) -> str | None:
    """The one line for asking a completed run for a save it did not make; None when that is not the case.

    `there` is the completed run's resolved config (results.json), `now` the new one. When they differ in
    the save settings alone and `now` saves something `there` did not (a model, the masks, another
    folder), the answer is the same for runner.save_model, save_dir and save_masks: tamp keeps no
    pruned weights once a run is done, so the save needs the pruning again, in a new run folder.
    (runner.save_model is a volatile setting, save_dir and save_masks are not: without this the first
    said "nothing to do" and the others "another configuration".)
    """
    a, b = flatten(there), flatten(now)
    rest_a = {k: v for k, v in a.items() if not is_under(k, RUN_VOLATILE) and k not in SAVE_KEYS}
    rest_b = {k: v for k, v in b.items() if not is_under(k, RUN_VOLATILE) and k not in SAVE_KEYS}
    if rest_a != rest_b:
        return None
    (saved, folder, masks), (wants, wanted, wants_masks) = _saves(a), _saves(b)
    if not wants or (saved and folder == wanted and (masks or not wants_masks)):
        return None
    key = next((k for k in SAVE_KEYS if a.get(k) != b.get(k)), SAVE_KEYS[0])
    return (f"{run_dir} holds a completed run of this configuration that did not save what is asked now "
            f"({key}: {a.get(key)!r} there, {b.get(key)!r} now); tamp keeps no pruned weights once a run is done, "
            "so the save needs the pruning again: run the same command with a new hydra.run.dir")
