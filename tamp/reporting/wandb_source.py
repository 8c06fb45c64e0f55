"""Read the same results from W&B: each run's summary (and config) holds the fields of results.json."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tamp.core.io import first_line
from tamp.reporting.load import ReportError, check_results
from tamp.tracking.run_record import COMPLETED
from tamp.tracking.run_record import FIELDS as RECORD_FIELDS

#: the results.json fields a W&B run's summary may hold (the config is the run's own config)
FIELDS = tuple(f for f in RECORD_FIELDS if f != "config")
STATES = {
    "finished": "completed",
    "running": "running",
    "crashed": "failed",
    "failed": "failed",
    "killed": "failed",
}


def _plain(value: Any) -> Any:
    """W&B's summary objects -> plain dicts and lists."""
    if isinstance(value, Mapping) or (hasattr(value, "keys") and hasattr(value, "__getitem__")):
        return {str(k): _plain(value[k]) for k in value.keys()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """'scores/mme/acc,none' style keys (wandb.log's separator) nested under the known fields."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        head, _, rest = key.partition("/")
        if rest and head in FIELDS:
            node = out.setdefault(head, {})
            *parents, leaf = rest.split("/")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        else:
            out[key] = value
    return out


def _name_of(value: Any) -> Any:
    """The resolved Hydra config nests an axis as {name: ..., knobs...}; results.json holds just the name."""
    return value.get("name") if isinstance(value, dict) else value


def results_from_wandb_run(run: Any) -> dict[str, Any]:
    """A W&B public-API run (or anything with summary/config/state/path) -> a checked results dict.

    Summary fields win over config fields; a run that never wrote a status takes it from its W&B state.
    """
    summary = _unflatten(_plain(getattr(run, "summary_metrics", None) or getattr(run, "summary", None) or {}))
    config = _plain(getattr(run, "config", None) or {})
    nested = summary.get("results") if isinstance(summary.get("results"), dict) else {}
    data: dict[str, Any] = {}
    for key in FIELDS:
        for source in (nested, summary, config):
            if source.get(key) is not None:
                data[key] = source[key]
                break
    if isinstance(data.get("method"), dict):
        data["method"] = {k: _name_of(v) for k, v in data["method"].items()}
    data["config"] = config.get("config", config)
    state = str(getattr(run, "state", "") or "").lower()
    data.setdefault("status", STATES.get(state, state or COMPLETED))
    path = getattr(run, "path", None)
    where = f"wandb:{'/'.join(map(str, path))}" if path else f"wandb:{getattr(run, 'id', '?')}"
    data.setdefault("run_dir", where)
    return check_results(data, where)


def latest_attempts(
    results: list[dict[str, Any]], started: list[Any], cells: list[str | None] | None = None
) -> list[dict[str, Any]]:
    """One result per cell: a resumed cell logs a W&B run per attempt, and only its last one counts.

    results.json keeps only the latest attempt of a run directory (an interrupted run resumed there ends
    `completed`); the W&B runs of that directory are read the same way, the latest start winning, so a
    resumed cell is not footnoted as failed. `cells` names each run's cell (default: the run directory
    it recorded); runs without one are all kept.
    """
    keys = cells if cells is not None else [_cell_dir(r) for r in results]
    best: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key is not None and (key not in best or started[index] >= started[best[key]]):
            best[key] = index
    return [r for i, (r, key) in enumerate(zip(results, keys, strict=True)) if key is None or best[key] == i]


def _cell_dir(result: dict[str, Any]) -> str | None:
    """The run directory the result recorded (None for runs that recorded none: W&B's own path stands in)."""
    where = str(result.get("run_dir") or "")
    return where if where and not where.startswith("wandb:") else None


def fetch_wandb(path: str, group: str | None = None) -> list[dict[str, Any]]:
    """All runs of ENTITY/PROJECT (optionally one group) through W&B's own public API client."""
    try:
        import wandb

        runs = list(wandb.Api().runs(path, filters={"group": group} if group else None))
        results = latest_attempts([results_from_wandb_run(run) for run in runs],
                                  [str(getattr(run, "created_at", "") or "") for run in runs])
    except ReportError:
        raise
    except Exception as err:  # network, auth, unknown project: one line, not a traceback
        raise ReportError(f"W&B {path}{f' group {group}' if group else ''}: {first_line(err)}") from None
    if not results:
        raise ReportError(f"W&B {path}{f' group {group}' if group else ''}: no runs found")
    return results
