"""A run's `runner.save_model` / `save_dir` / `save_masks`: what the runner saves once a cell is pruned.

The masks come from the pruning report when the run pruned; a run that pruned nothing (a saved
checkpoint evaluated again) saves the zeros it has, so its masks and manifest still describe it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tamp.cli.schema import RunConfig
    from tamp.run_record import LinearEntry

log = logging.getLogger("tamp")


def save_run_model(
    settings: RunConfig,
    model: Any,
    processor: Any,
    adapter: Any,
    run_dir: Path,
    per_linear: dict[str, LinearEntry] | None,
    report: Any,
) -> None:
    """runner.save_model / save_dir / save_masks: the weights, the manifest and optionally the packed masks.

    `per_linear` is the run's measured table (results.json's); measured here when the run has none.
    """
    r = settings.runner
    if not (r.save_model or r.save_dir or r.save_masks):
        return
    from tamp.models.measure import measure_sparsity
    from tamp.models.saving import save_pruned
    from tamp.run_record import linears_to_json

    masks = None
    if r.save_masks:
        masks = report.masks if report is not None and report.masks is not None else {
            name: linear.weight == 0 for block in adapter.target_linears(r.targets, r.ignore)
            for name, linear in block.items()
        }
    table = linears_to_json(per_linear or measure_sparsity(adapter, r.targets, r.ignore))
    info = {"method": settings.method.name, "target": settings.sparsity.target, "pattern": settings.sparsity.pattern}
    directory = Path(r.save_dir) if r.save_dir else run_dir / "model"
    where = save_pruned(model, processor, directory, table, masks, info)
    log.info("model saved to %s", where)
