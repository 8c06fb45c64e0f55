"""Every save of a pruned model: where it may go, and how it is written (dense weights, zeros kept, plus a
sparsity manifest).

Where (`check_save_target`, `check_run_save`; before any work, and again just before the write): tamp
deletes and overwrites only what it wrote. A target is refused, in one line naming it, when it is (or,
once `..` and symlinks are resolved, turns out to be) the current directory or a folder containing it,
the run folder or a folder containing it, one of tamp's own files in the run folder, the source model's
folder (or inside it, or containing it), a file, not writable, or an existing folder that is not a tamp
save of this same run configuration (`not_ours`). In a sweep, a target inside the sweep folder's cell
folders (`N_...`, Hydra's `hydra.sweep.subdir`) is refused before any cell runs: the cell that runs
there later would find a folder it did not make. `runner.save_dir=''` is refused too (it is neither a
folder nor unset: `null` is unset).

How (`save_pruned`): the model is written into a new temporary folder beside the target and renamed onto
it when complete, so a crash never leaves a folder that looks like a finished checkpoint. An existing
target is replaced only when it is a tamp save of the same run configuration holding nothing but what
that save wrote (its manifest lists its files and the config's digest); anything else is refused, never
deleted. Optionally the masks go beside the weights, bit-packed (`tamp.models.mask_file`). A save
killed half-way leaves its hidden `.NAME.<pid>.<hex>.partial` folder; the next save to NAME removes such
folders once their process is gone (only folders with exactly that name: tamp's own). Every file of the
save gets the umask's normal mode (safetensors writes 0600), and a full disk is one line naming the
folder (tamp.models.disk).

`tamp.save` (tamp.api.functions) and the CLI's save step (tamp.cli.runner) both write through
`save_pruned`, take their masks from `saved_masks` and name the model the weights came from with
`source_model`; the pre-run check (tamp.cli.preflight) and the run call `check_run_save`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tamp.core.config import config_digest
from tamp.core.io import write_json_atomic
from tamp.core.paths import RUN_DIR_OWN
from tamp.models.disk import naming_path, normal_modes

if TYPE_CHECKING:  # the CLI's pre-run check imports this module for its refusals: no torch at import
    import torch

    from tamp.cli.schema import RunConfig

MANIFEST = "sparsity_manifest.json"
#: where a refused save points the user when nothing more specific applies
NEW_FOLDER = "choose a new folder, e.g. runner.save_dir=ckpt/${method.name}_${sparsity.target}"


class SaveTargetRefused(ValueError):
    """The save target would delete or overwrite something tamp did not write; nothing was touched."""


def refusal(named: str, why: str, what: str = NEW_FOLDER) -> SaveTargetRefused:
    """The one line of every refused save target: `NAMED WHY; tamp never deletes or overwrites ...: WHAT`."""
    return SaveTargetRefused(f"{named} {why}; tamp never deletes or overwrites what it did not write: {what}")


# ------------------------------------------------------------------------------------------ where
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
    why = not_ours(real, digest)
    if why is not None:
        raise refuse(why, NEW_FOLDER + ", or move that folder away")
    return real


def check_run_save(settings: RunConfig, config: dict, run_dir: str | Path | None,
                   sweep_dir: str | Path | None = None) -> Path | None:
    """The run's save target checked (see the module docstring); None when the run saves nothing."""
    found = save_target(settings, run_dir)
    if found is None:
        return None
    key, target = found
    return check_save_target(key, target, digest=config_digest(config), run_dir=run_dir, sweep_dir=sweep_dir,
                             model_name=settings.model.name)


# ------------------------------------------------------------------------------------------ what
def saved_masks(kept: Mapping[str, torch.Tensor] | None, linears: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The masks a save writes: the pruning's own (`keep_masks`) when it kept them, else the exact zeros of
    the pruned `linears` (name -> module; a checkpoint evaluated again has only its zeros)."""
    if kept is not None:
        return dict(kept)
    return {name: linear.weight.detach() == 0 for name, linear in linears.items()}


def _written(directory: Path) -> list[str]:
    """Every file under `directory`, as sorted relative POSIX paths."""
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if not p.is_dir())


def not_ours(directory: str | Path, digest: str | None) -> str | None:
    """Why `directory` may not be replaced by a save of the run `digest` names; None when it may.

    It may when it is empty, or a tamp save (its manifest) of the same run configuration (`digest`;
    None accepts any tamp save) holding only the files that save listed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return "is a file" if directory.exists() else None
    if not any(directory.iterdir()):
        return None
    manifest = read_manifest(directory)
    if manifest is None or not isinstance(manifest.get("files"), list):
        return f"holds files and no {MANIFEST} listing them: it is not a folder tamp saved"
    run = manifest.get("run") if isinstance(manifest.get("run"), dict) else {}
    if digest is not None and run.get("config_digest") != digest:
        return "is a tamp save of another run configuration"
    listed = set(manifest["files"]) | {MANIFEST}
    listed |= {parent.as_posix() for name in listed for parent in Path(name).parents if parent != Path(".")}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if rel not in listed:
            return f"holds {rel}, which tamp did not write there"
    return None


def save_pruned(
    model: Any,
    processor: Any,
    directory: str | Path,
    per_linear: dict[str, dict],
    masks: dict[str, torch.Tensor] | None = None,
    info: dict[str, Any] | None = None,
    digest: str | None = None,
) -> Path:
    """save_pretrained of model and processor plus sparsity_manifest.json (and masks), atomically.

    `info` (method, target, pattern) goes into the manifest next to the overall sparsity, so a
    later evaluation of the directory can say what it is. `digest` (tamp.core.config.config_digest)
    ties the save to its run configuration: only a save with the same digest is ever replaced.
    """
    final = Path(os.path.realpath(directory))  # a symlink's target is written, `..` is resolved
    _refuse_unless_ours(final, directory, digest)
    with naming_path("the saved model into", final):
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(final)
        tmp = _new_sibling(final, "partial")
        try:
            _write_save(model, processor, tmp, per_linear, masks, info, digest)
            _refuse_unless_ours(final, directory, digest)  # again: the run took hours, the folder may have changed
            _replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _write_save(model: Any, processor: Any, tmp: Path, per_linear: dict[str, dict],
                masks: dict[str, torch.Tensor] | None, info: dict[str, Any] | None, digest: str | None) -> None:
    """Everything of a save into its new folder `tmp`, the manifest last."""
    model.save_pretrained(tmp)
    if processor is not None:
        processor.save_pretrained(tmp)
    total = sum(v["numel"] for v in per_linear.values()) or 1
    pruned = sum(v["achieved"] * v["numel"] for v in per_linear.values())
    manifest = {"overall_sparsity": pruned / total, **(info or {}), "linears": per_linear}
    if masks is not None:
        from tamp.models.mask_file import MASKS_FILE, save_masks

        save_masks(masks, tmp / MASKS_FILE)
        manifest["masks"] = MASKS_FILE
    manifest["run"] = {"config_digest": digest}
    manifest["files"] = _written(tmp)
    normal_modes(tmp)  # safetensors writes 0600: the save is as readable as the rest of the run folder
    write_json_atomic(tmp / MANIFEST, manifest)  # last: a folder without it is not a finished save


def _leftover_pattern(final: Path) -> re.Pattern[str]:
    return re.compile(r"\." + re.escape(final.name) + r"\.(\d+)\.[0-9a-f]{8}\.(partial|old)")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove_leftovers(final: Path) -> None:
    """Remove the hidden folders an earlier save to `final` left when it was killed (its process is gone).

    Only real folders named exactly as `_new_sibling` names them are touched, never a link or a file.
    """
    pattern = _leftover_pattern(final)
    if not final.parent.is_dir():
        return
    for path in final.parent.iterdir():
        found = pattern.fullmatch(path.name)
        if not found or path.is_symlink() or not path.is_dir() or _alive(int(found.group(1))):
            continue
        if found.group(2) == "old" and not final.exists():  # killed between its renames: the only whole save
            continue
        shutil.rmtree(path, ignore_errors=True)


def _refuse_unless_ours(final: Path, given: str | Path, digest: str | None) -> None:
    why = not_ours(final, digest)
    if why is not None:
        where = f"{given}" if Path(given) == final else f"{given} ({final})"
        raise refusal(f"save folder {where}", why, "choose a new folder (runner.save_dir=...) or move that one away")


def _new_sibling(final: Path, kind: str) -> Path:
    """A new empty folder beside `final` (`.NAME.<pid>.<random>.KIND`), made with the user's umask."""
    while True:
        path = final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.{kind}")
        try:
            path.mkdir()
            return path
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue


def _replace(tmp: Path, final: Path) -> None:
    """Rename `tmp` onto `final`; an existing `final` (checked ours) is moved aside first, then removed."""
    if not final.exists():
        os.replace(tmp, final)
        return
    old = _new_sibling(final, "old")
    os.replace(final, old)  # onto the empty folder just made
    os.replace(tmp, final)
    shutil.rmtree(old)


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    """The sparsity manifest of a saved directory, or None when it has none (or it is unreadable)."""
    path = Path(directory) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def saved_manifest(model_name: str | None) -> dict[str, Any] | None:
    """The sparsity manifest of a saved checkpoint directory (tamp's own saves), None otherwise."""
    if not model_name or not Path(model_name).expanduser().is_dir():
        return None
    return read_manifest(Path(model_name).expanduser())


def source_model(name: str) -> dict[str, str]:
    """The model the saved weights were pruned from (the manifest's `source_model`): the run's `model.name`,
    or, when that is itself a tamp save, the model it names, so a report pairs the checkpoint with the
    dense run of the model it came from."""
    manifest = saved_manifest(name)
    source = manifest.get("source_model") if manifest else None
    if isinstance(source, dict) and isinstance(source.get("name"), str):
        return {"name": source["name"]}
    return {"name": name}
