"""Read offline W&B runs (`wandb/offline-run-*/run-<id>.wandb`) without uploading them.

A run folder is a log of protobuf records; W&B's own datastore reader gives them back. The run
record holds the name and group, config and summary records hold updates applied in order, so
the last value of each key wins, as in W&B itself. The result looks enough like a public-API run
for `results_from_wandb_run`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tamp.reporting.load import ReportError

RUN_GLOB = "offline-run-*"
#: the job type of the run `tamp.report --wandb-log` writes (tamp.reporting.wandb_summary)
REPORT_JOB_TYPE = "report"


@dataclass
class OfflineRun:
    """The parts of a W&B run tamp reads: ids, name, group, config, final summary and state."""

    id: str
    path: list[str]
    name: str = ""
    group: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    state: str = "running"
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    #: the log held its run record (name, group, config); False for a log cut short or still being written
    complete: bool = False
    #: the offline-run-YYYYMMDD_HHMMSS-<id> folder (its name orders a cell's attempts)
    folder: str = ""


def _apply(target: dict[str, Any], items: Any, unwrap_value: bool = False) -> None:
    """Apply W&B update items (key or nested_key, value_json) to a dict."""
    for item in items:
        keys = list(item.nested_key) or [item.key]
        value = json.loads(item.value_json)
        if unwrap_value and isinstance(value, dict) and set(value) == {"value"}:
            value = value["value"]  # config values are stored as {"value": ...}
        node = target
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value


def read_offline_run(folder: str | Path) -> OfflineRun:
    """One offline-run-* folder; a missing or unreadable log is a one-line ReportError."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal.datastore import DataStore

    folder = Path(folder)
    logs = sorted(folder.glob("run-*.wandb"))
    if not logs:
        raise ReportError(f"{folder}: no run-*.wandb log in this W&B run folder")
    store = DataStore()
    try:
        store.open_for_scan(str(logs[0]))
    except Exception as err:  # noqa: BLE001 - W&B raises plain exceptions for bad headers
        raise ReportError(f"{logs[0]}: not a W&B run log ({err})") from None
    run = OfflineRun(id=folder.name.rsplit("-", 1)[-1], path=[str(folder)], folder=str(folder))
    try:
        while (data := store.scan_data()) is not None:
            record = pb.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                r = record.run
                run.id, run.name, run.group = r.run_id or run.id, r.display_name or run.name, r.run_group or run.group
                run.job_type, run.complete = r.job_type or run.job_type, True
                run.tags = list(r.tags) or run.tags
                run.path = [p for p in (r.entity, r.project, r.run_id) if p] or run.path
                _apply(run.config, r.config.update, unwrap_value=True)
            elif kind == "config":
                _apply(run.config, record.config.update, unwrap_value=True)
            elif kind == "summary":
                _apply(run.summary, record.summary.update)
            elif kind == "history":  # the summary follows the history; keep the latest row's values
                _apply(run.summary, record.history.item)
            elif kind == "exit":
                run.state = "finished" if record.exit.exit_code == 0 else "failed"
    except Exception as err:  # noqa: BLE001 - a record cut short: keep what was read, say where
        raise ReportError(f"{logs[0]}: unreadable W&B run log ({err})") from None
    finally:
        store.close()
    run.config.pop("_wandb", None)
    if not run.complete:  # never an empty name: the folder says which run this is
        run.name = run.name or folder.name
    return run


def find_offline_runs(dirs: list[str | Path]) -> list[Path]:
    """Every offline-run-* folder under the given directories (or the folders themselves)."""
    found: list[Path] = []
    for entry in map(Path, dirs):
        if entry.name.startswith("offline-run-") and entry.is_dir():
            found.append(entry)
        elif entry.is_dir():
            found.extend(sorted(p for p in entry.rglob(RUN_GLOB) if p.is_dir()))
        else:
            raise ReportError(f"{entry}: no such directory")
    if not found:
        raise ReportError(f"no offline W&B run ({RUN_GLOB}) under {', '.join(map(str, dirs))}")
    return found


def cell_of(run: OfflineRun, result: dict[str, Any]) -> str | None:
    """The cell a run belongs to: the run directory holding its `wandb/` folder, else the one it recorded."""
    folder = Path(run.folder)
    if folder.parent.name == "wandb":
        return str(folder.parent.parent.resolve())
    where = str(result.get("run_dir") or "")
    return where if where and not where.startswith("wandb:") else None


def load_offline_wandb(dirs: list[str | Path], group: str | None = None) -> list[dict[str, Any]]:
    """The results of every offline W&B run under `dirs` (optionally one group), as tamp.report reads them."""
    from tamp.reporting.wandb_source import latest_attempts, results_from_wandb_run

    runs = [read_offline_run(folder) for folder in find_offline_runs(dirs)]
    incomplete = [r.path[0] for r in runs if not r.complete]
    if incomplete:
        raise ReportError(f"{incomplete[0]}: W&B run log without its run record (cut short or still being written)")
    runs = [r for r in runs if r.job_type != REPORT_JOB_TYPE]  # `--wandb-log` runs are reports, not cells
    runs = [r for r in runs if group is None or r.group == group]
    if not runs:
        raise ReportError(f"no offline W&B run of group '{group}' under {', '.join(map(str, dirs))}")
    results = [results_from_wandb_run(run) for run in runs]
    # offline-run-YYYYMMDD_HHMMSS-<id>: the folder name orders a cell's attempts (a resume logs another run)
    started = [Path(run.folder).name for run in runs]
    kept = {id(r) for r in latest_attempts(results, started, [cell_of(run, r) for run, r in zip(runs, results, strict=True)])}
    out = []
    for run, data in zip(runs, results, strict=True):
        if id(data) not in kept:
            continue
        data["run_dir"] = str(run.path[0]) if len(run.path) == 1 else data["run_dir"]
        out.append(data)
    return out
