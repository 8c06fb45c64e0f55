"""A run's save: where `runner.save_model` / `save_dir` / `save_masks` may write, and the save step itself.

Where (`check_run_save`, before any work): tamp deletes and overwrites only what it wrote. A save target
is refused, in one line naming it, when it is (or, once `..` and symlinks are resolved, turns out to be)
the current directory or a folder containing it, the run folder or a folder containing it, one of
tamp's own folders inside the run folder, the source model's folder (or inside it, or containing it), a
file, not writable, or an existing folder that is not a tamp save of this same run configuration
(`tamp.models.saving.not_ours`). The pre-run check (tamp.cli.preflight) and the run itself check it; the
save checks ownership once more just before it renames its finished folder onto the target.
In a sweep, a target inside the sweep folder's cell folders (`N_...`, Hydra's `hydra.sweep.subdir`) is
refused before any cell runs: the cell that runs there later would find a folder it did not make.
`runner.save_dir=''` is refused too (it is neither a folder nor unset: `null` is unset).

The step (`save_run_model`, once a cell is pruned): the writing is tamp.models.saving's, as for
`tamp.save`. The masks come from the pruning summary when the run pruned; a run that pruned nothing (a
saved checkpoint evaluated again) saves the zeros it has, so its masks and manifest still describe it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tamp.models.saving import NEW_FOLDER, SaveTargetRefused, refusal

if TYPE_CHECKING:
    from tamp.cli.schema import RunConfig
    from tamp.tracking.run_record import LinearEntry

__all__ = ["SaveTargetRefused", "check_run_save", "check_save_target", "save_run_model", "save_target",
           "source_model"]

log = logging.getLogger("tamp")
#: a sweep's cell folder: Hydra's job number first (conf/run.yaml: `${hydra.job.num}_${run_name:}`)
_CELL_FOLDER = re.compile(r"\d+(_|$)")


def save_target(settings: RunConfig, run_dir: str | Path | None) -> tuple[str, Path] | None:
    """(the key that names it, the folder) the run saves into; None when it saves nothing."""
    r = settings.runner
    if r.save_dir is not None and not str(r.save_dir).strip():
        raise SaveTargetRefused(f"runner.save_dir={r.save_dir!r} is empty; valid: a folder path (e.g. "
                                "runner.save_dir=ckpt/${method.name}_${sparsity.target}), or null (unset), where "
                                "runner.save_model=true saves into RUN_DIR/model")
    if not (r.save_model or r.save_dir or r.save_masks):
        return None
    if r.save_dir is not None:
        return "runner.save_dir", Path(str(r.save_dir))
    return ("runner.save_model", Path(run_dir) / "model") if run_dir is not None else None


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def _within(inner: Path, outer: Path) -> bool:
    """`inner` is `outer` or lies inside it (both resolved)."""
    return inner == outer or outer in inner.parents


def _source_dir(model_name: str | None) -> Path | None:
    from tamp.models.named import scheme_of

    if not model_name or scheme_of(model_name) is not None:  # tiny:..., zoo: generated, not a user folder
        return None
    return _real(model_name) if Path(model_name).exists() else None


def check_save_target(
    key: str,
    target: str | Path,
    *,
    digest: str | None,
    run_dir: str | Path | None = None,
    sweep_dir: str | Path | None = None,
    model_name: str | None = None,
) -> Path:
    """The resolved folder the run may save into, or SaveTargetRefused (one line naming it and what to do)."""
    given = str(target)
    real = _real(target) if given.strip() else _real(".")
    shown = given if str(real) == given else f"{given} (resolves to {real})"
    named = f"{key}={shown}" if key != "runner.save_model" else f"runner.save_model=true saves to {shown}, which"

    def refuse(why: str, what: str = NEW_FOLDER) -> SaveTargetRefused:
        return refusal(named, why, what)

    from tamp.cli.rundir import RUN_DIR_OWN

    cwd = _real(os.getcwd())
    if _within(cwd, real):
        raise refuse("is the current directory" if real == cwd else f"contains the current directory ({cwd})")
    for name, folder in (("run folder", run_dir), ("sweep folder", sweep_dir)):
        if folder is None:
            continue
        own = _real(folder)
        if _within(own, real):
            raise refuse(f"is the {name}" if real == own else f"contains the {name} ({own})")
        if name == "run folder" and own in real.parents and real.relative_to(own).parts[0] in RUN_DIR_OWN:
            raise refuse(f"is tamp's own {real.relative_to(own).parts[0]} in the run folder")
        if name == "sweep folder" and own in real.parents and _CELL_FOLDER.match(real.relative_to(own).parts[0]):
            raise refuse(f"lies in the sweep's cell folder {own / real.relative_to(own).parts[0]}, where a cell "
                         "runs (hydra.sweep.subdir); save outside the sweep folder")
    source = _source_dir(model_name)
    if source is not None and (_within(source, real) or _within(real, source)):
        where = "is" if real == source else ("is inside" if source in real.parents else "contains")
        raise refuse(f"{where} the source model's folder (model.name={model_name})",
                     "the source checkpoint is never written; " + NEW_FOLDER)
    if real.exists() and not real.is_dir():
        raise refuse("is a file")
    if real.is_dir() and not os.access(real, os.W_OK | os.X_OK):
        raise refuse("is not writable")
    probe = real.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise refuse(f"cannot be made: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise refuse(f"cannot be made: {probe} is not writable")
    from tamp.models.saving import not_ours

    why = not_ours(real, digest)
    if why is not None:
        raise refuse(why, NEW_FOLDER + ", or move that folder away")
    return real


def check_run_save(settings: RunConfig, config: dict, run_dir: str | Path | None,
                   sweep_dir: str | Path | None = None) -> Path | None:
    """The run's save target checked (see the module docstring); None when the run saves nothing."""
    from tamp.cli.rundir import config_digest

    found = save_target(settings, run_dir)
    if found is None:
        return None
    key, target = found
    return check_save_target(key, target, digest=config_digest(config), run_dir=run_dir, sweep_dir=sweep_dir,
                             model_name=settings.model.name)


def save_run_model(
    settings: RunConfig,
    model: Any,
    processor: Any,
    adapter: Any,
    run_dir: Path,
    per_linear: dict[str, LinearEntry] | None,
    summary: Any,
    config: dict[str, Any],
) -> None:
    """runner.save_model / save_dir / save_masks: the weights, the manifest and optionally the packed masks.

    `per_linear` is the run's measured table (results.json's); measured here when the run has none.
    `config` is the run's resolved config: the save is tied to its digest, and the target is checked
    again (`check_run_save`) before anything is written.
    """
    from tamp.cli.rundir import config_digest

    directory = check_run_save(settings, config, run_dir)
    if directory is None:
        return
    r = settings.runner
    from tamp.models.saving import save_pruned, saved_masks
    from tamp.tracking.measure import measure_sparsity
    from tamp.tracking.run_record import linears_to_json

    masks = None
    if r.save_masks:
        linears = {name: linear for block in adapter.target_linears(r.targets, r.ignore) for name, linear in block.items()}
        masks = saved_masks(summary.masks if summary is not None else None, linears)
    table = linears_to_json(per_linear or measure_sparsity(adapter, r.targets, r.ignore))
    info = {"method": settings.method.name, "target": settings.sparsity.target, "pattern": settings.sparsity.pattern,
            "source_model": source_model(settings.model.name)}
    where = save_pruned(model, processor, directory, table, masks, info, digest=config_digest(config))
    log.info("model saved to %s", where)


def source_model(name: str) -> dict[str, str]:
    """The model the saved weights were pruned from (the manifest's `source_model`): the run's `model.name`,
    or, when that is itself a tamp save, the model it names, so a report pairs the checkpoint with the
    dense run of the model it came from."""
    from tamp.tracking.run_names import saved_manifest

    manifest = saved_manifest(name)
    source = manifest.get("source_model") if manifest else None
    if isinstance(source, dict) and isinstance(source.get("name"), str):
        return {"name": source["name"]}
    return {"name": name}
