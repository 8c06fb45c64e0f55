"""What may run in a run directory: never a second experiment over the first, never a resume of nothing.

A run directory's results.json holds the resolved config of the run that made it. Running into the
same directory again (`hydra.run.dir=DIR`, or `resume=DIR`) is allowed only with the same config,
up to the settings that do not change masks or scores (devices, progress bars, logging, paths);
`resume=DIR` further needs DIR to exist and to hold a checkpoint of an unfinished run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tamp.pipeline.checkpoint import PROGRESS
from tamp.run_record import COMPLETED, FAILED, RESULTS_FILE, RunRecord, RunRecordError

#: dotted prefixes of settings that may differ between the run and its resumption
VOLATILE = ("resume", "runner.progress", "runner.devices", "runner.accelerator", "runner.strategy",
            "runner.device", "runner.offload", "runner.save_model", "logger", "paths")


class RunDirRefused(ValueError):
    """The run directory belongs to another run (or holds nothing to resume): it is left untouched."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened config less the volatile settings: what defines the experiment."""
    return {k: v for k, v in flatten(config).items()
            if not any(k == p or k.startswith(p + ".") for p in VOLATILE)}


def first_difference(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """The first differing key, a value changed on both sides before a key only one side has.

    Components own their settings, so another pruner or allocation brings other keys (SparseGPT's
    blocksize); the change a person made (`method.name`) says more than the keys it brought along.
    """
    a, b = identity(old), identity(new)
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
        if not (run_dir / "checkpoint" / PROGRESS).is_file():
            if recorded is not None and recorded.status == COMPLETED:
                raise RunDirRefused(f"resume={run_dir} is a completed run, there is nothing to resume; "
                                 "valid: the directory of an interrupted run")
            raise RunDirRefused(f"resume={run_dir} holds no checkpoint (checkpoint/{PROGRESS}); valid: the directory "
                             "of an interrupted run")
    if recorded is None or recorded.config is None:
        return
    disposable = recorded.status == FAILED and not (run_dir / "checkpoint" / PROGRESS).is_file()
    if not disposable:  # a failed start may be replaced
        now = OmegaConf.to_container(cfg, resolve=True)
        diff = first_difference(recorded.config, now)  # type: ignore[arg-type]
        if diff is not None:
            key, there, here = diff
            raise RunDirRefused(f"{run_dir} holds a run of another configuration ({key}: {there!r} there, "
                             f"{here!r} now); resume with the same config, or use a new run directory")


def _read(path: Path) -> RunRecord | None:
    """The run directory's record; None when there is none (or it cannot be read)."""
    try:
        return RunRecord.read(path)
    except RunRecordError:
        return None
