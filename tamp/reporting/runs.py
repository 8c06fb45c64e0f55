"""Small readers of one results dict: which tasks it has, its scores, how its method is labelled."""

from __future__ import annotations

import math
from typing import Any

from tamp.eval.columns import Column, detail_columns, record_columns
from tamp.tracking.run_names import is_dense
from tamp.tracking.run_record import pattern_label

COMPLETED = "completed"
# the paper's row order (Tables 2, 3, 5); other methods follow alphabetically
METHOD_ORDER = ("magnitude", "sparsegpt", "wanda", "owl", "ecoflap", "tamp")


def is_completed(result: dict[str, Any]) -> bool:
    return result.get("status") == COMPLETED


def run_tasks(result: dict[str, Any]) -> list[str]:
    """Tasks in the order the runner wrote them: primary_metric first, then any other scored task."""
    tasks = list(result["primary_metric"])
    return tasks + [task for task in result["scores"] if task not in tasks]


def number(value: Any) -> float | None:
    """A finite float, or None for anything else (lmms-eval dicts may hold aliases or N/A strings)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def columns_of(run: dict[str, Any]) -> list[Column]:
    """A run's table columns: those results.json records (a paper suite's declared columns; one per
    requested task otherwise; tamp.eval.columns), else, for older files, every task's primary metric
    (MME: cognition and perception)."""
    return record_columns(run["primary_metric"], run["scores"], run.get("columns"))


def details_of(run: dict[str, Any], columns: list[Column]) -> list[Column]:
    """A run's other scores (sub-tasks of a group column, tasks outside the table): the CSV's `score:` extras."""
    return detail_columns(run["primary_metric"], run["scores"], columns)


def score(result: dict[str, Any], column: Column) -> float | None:
    return column.value(result["scores"])


def method_rank(label: str) -> tuple[int, str]:
    base = label.split(" ")[0].lower()
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), label.lower())


def pattern_of(result: dict[str, Any]) -> str:
    """The pattern as tables label it (`mixed 2:4`, `2:4 uniform`: tamp.tracking.run_record.pattern_label)."""
    sparsity = result["sparsity"]
    if is_dense(result):
        return str(sparsity.get("pattern") or "unstructured")
    return pattern_label(sparsity.get("pattern"), sparsity.get("nm"), (result.get("method") or {}).get("allocation"))
