"""A run's `runner.save_model` / `save_dir` / `save_masks`: what the runner saves once a cell is pruned.

The masks come from the pruning summary (tamp.prune_summary) when the run pruned; a run that pruned nothing (a saved
checkpoint evaluated again) saves the zeros it has, so its masks and manifest still describe it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tamp.cli.schema import RunConfig
    from tamp.tracking.run_record import LinearEntry

log = logging.getLogger("tamp")


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
    again (tamp.cli.save_target) before anything is written.
    """
    from tamp.cli.rundir import config_digest
    from tamp.cli.save_target import check_run_save

    directory = check_run_save(settings, config, run_dir)
    if directory is None:
        return
    r = settings.runner
    from tamp.models.saving import save_pruned
    from tamp.tracking.measure import measure_sparsity
    from tamp.tracking.run_record import linears_to_json

    masks = None
    if r.save_masks:
        masks = summary.masks if summary is not None and summary.masks is not None else {
            name: linear.weight == 0 for block in adapter.target_linears(r.targets, r.ignore)
            for name, linear in block.items()
        }
    table = linears_to_json(per_linear or measure_sparsity(adapter, r.targets, r.ignore))
    info = {"method": settings.method.name, "target": settings.sparsity.target, "pattern": settings.sparsity.pattern,
            "source_model": source_model(settings.model.name)}
    where = save_pruned(model, processor, directory, table, masks, info, digest=config_digest(config))
    log.info("model saved to %s", where)


def source_model(name: str) -> dict[str, str]:
    """The model the saved weights were pruned from (the manifest's `source_model`): the run's `model.name`,
    or, when that is itself a tamp save, the model it names, so a report pairs the checkpoint with the
    dense run of the model it came from."""
    from tamp.run_names import saved_manifest

    manifest = saved_manifest(name)
    source = manifest.get("source_model") if manifest else None
    if isinstance(source, dict) and isinstance(source.get("name"), str):
        return {"name": source["name"]}
    return {"name": name}
