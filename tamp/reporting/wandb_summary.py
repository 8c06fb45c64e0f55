"""`tamp.report --wandb-log PROJECT`: the report as one W&B run beside the sweep's cells.

A cell logs its Rel.% only when the sweep's dense scores exist by then (the dense cell ran first);
this summary run always has them: the Rel.% table as a W&B Table, each row's Avg Rel.% as a
summary value, and the report's plots as images, in the same group as the cells.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from tamp.reporting.table import Report
from tamp.reporting.wandb_offline import REPORT_JOB_TYPE
from tamp.tracking.wandb_keys import group_name


def report_group(results: list[dict[str, Any]], dirs: list[str], group: str | None) -> str | None:
    """--group; else the runs' common experiment (the cells' default group); else the first DIR as a sweep."""
    if group:
        return group
    experiments = {r.get("experiment") for r in results}
    if len(experiments) == 1 and None not in experiments:
        return str(experiments.pop())
    return group_name(None, dirs[0]) if dirs else None


def log_summary_run(report: Report, out: Path, target: str, group: str | None) -> str:
    """Log the report to W&B ([ENTITY/]PROJECT `target`); returns where the run is (a URL or a folder)."""
    import wandb

    from tamp.tracking.wandb_logger import console_settings, resolve_mode

    entity, _, project = target.rpartition("/")
    run = wandb.init(
        project=project,
        entity=entity or None,
        group=group,
        name="report",
        job_type=REPORT_JOB_TYPE,
        dir=str(out),
        mode=resolve_mode(os.environ.get("WANDB_MODE", "online")),
        reinit="finish_previous",
        settings=console_settings(),
    )
    frame = report.frame.astype(object).where(report.frame.notna(), None)
    logged: dict[str, Any] = {"rel_table": wandb.Table(dataframe=frame)}
    for png in sorted(out.glob("*.png")):
        logged[f"plots/{png.stem}"] = wandb.Image(str(png))
    run.log(logged)
    for record in frame.to_dict("records"):
        value = record.get("avg_rel")
        if isinstance(value, float) and math.isfinite(value):
            run.summary[f"avg_rel/{record['model']}/{record['method']}/{record['target_sparsity']:g}"] = value
    where = run.url if not run.offline else str(Path(run.dir).parent)
    run.finish()
    return where
