"""The paper's table columns of each lmms-eval task: where one task is more than its first metric.

lmms-eval reports several metrics for some tasks and the paper reads more than one of them: MME is
two columns (MME-cognition, MME-perception) in Tables 1, 2 and 4 and in Fig. 5's average over 7.
`PAPER_COLUMNS` lists those tasks; every other task is one column, its primary metric. The evaluation
summary (results.json's `primary_metric`), the report's tables and W&B's Rel.% all read columns
from here, so Avg Rel.% is the mean over the paper's columns, as the paper computes it. Files written
before MME had two columns (primary_metric naming perception only) read as two columns too: their
`scores` already hold both metrics. This module imports nothing from tamp (every layer may use it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: task -> the paper's columns of it, in the paper's order: (column name, lmms-eval metric name)
PAPER_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "mme": (("MME-cognition", "mme_cognition_score"), ("MME-perception", "mme_perception_score")),
}
#: how results.json names a task's metric(s): one "metric,filter" key or a list of them
MetricSpec = str | list[str] | None


@dataclass(frozen=True)
class Column:
    """One table column: a task and the metric key of lmms-eval's results dict that the tables use."""

    task: str
    metric: str
    label: str


def _metric_name(key: str) -> str:
    return key.split(",")[0]


def _find(scores: Mapping[str, Any], metric: str, filter_name: str) -> str | None:
    """The key of `metric` in a task's scores: with the wanted filter if present, else any filter."""
    if f"{metric},{filter_name}" in scores:
        return f"{metric},{filter_name}"
    return next((k for k in scores if _metric_name(k) == metric), None)


def paper_metrics(task: str, scores: Mapping[str, Any], filter_name: str = "none") -> list[str] | None:
    """The metric keys of the paper's columns of `task`, or None (not a multi-column task, or one is missing)."""
    found = [_find(scores, metric, filter_name) for _, metric in PAPER_COLUMNS.get(task, ())]
    return found if found and all(found) else None  # type: ignore[return-value]


def default_metric(task_scores: Mapping[str, Any]) -> str | None:
    """Without a recorded metric: the first numeric one that is not a standard error."""
    for key, value in task_scores.items():
        if "stderr" not in key and _number(value) is not None:
            return key
    return None


def task_columns(task: str, spec: MetricSpec, scores: Mapping[str, Any]) -> list[Column]:
    """The columns of one task from its recorded metric(s); the paper's columns where it has several.

    A recorded spec that names only paper metrics of the task (an older file's first metric) widens
    to all of the paper's columns when the scores hold them; any other spec is kept as recorded.
    """
    metrics = [spec] if isinstance(spec, str) else list(spec or [])
    paper = paper_metrics(task, scores, metrics[0].split(",", 1)[1] if metrics and "," in metrics[0] else "none")
    if paper and set(map(_metric_name, metrics)) <= {m for _, m in PAPER_COLUMNS[task]}:
        names = dict((m, name) for name, m in PAPER_COLUMNS[task])
        return [Column(task, key, names[_metric_name(key)]) for key in paper]
    if not metrics:
        metrics = [m for m in [default_metric(scores)] if m]
    return [Column(task, m, task if len(metrics) == 1 else f"{task}:{_metric_name(m)}") for m in metrics]


def record_columns(primary_metric: Mapping[str, Any], scores: Mapping[str, Any]) -> list[Column]:
    """Every column of a run: its tasks in the order recorded (primary_metric first, then other scored tasks)."""
    tasks = list(primary_metric) + [t for t in scores if t not in primary_metric]
    return [c for t in tasks for c in task_columns(t, primary_metric.get(t), scores.get(t) or {})]


def column_scores(primary_metric: Mapping[str, Any], scores: Mapping[str, Any]) -> dict[str, float]:
    """{column label: finite score} of a run (a column without a number is left out)."""
    out = {}
    for c in record_columns(primary_metric, scores):
        value = _number((scores.get(c.task) or {}).get(c.metric))
        if value is not None:
            out[c.label] = value
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
