"""The table columns of a run: which lmms-eval task or group, metric and aggregation make each number.

A paper's table has one number per benchmark, while lmms-eval 0.7.3 reports some benchmarks as
groups: `blink` as its own aggregate plus 14 sub-tasks, `mvbench` as 20 sub-tasks and no aggregate,
`mathvista_testmini` as three prompt variants. A paper suite (conf/eval/*_suite.yaml) therefore
declares its columns (`eval.columns`, `ColumnSpec`): the paper's name, the task or group, the metric
and how the number is made (`value`: the task's own score, or the group's own aggregate where
lmms-eval computes one; `mean`: the unweighted mean over the group's sub-tasks, the benchmark's own
definition where lmms-eval has no aggregate, e.g. MVBench). Avg Rel.% is the mean over these
columns, as the paper computes it; sub-task scores stay in results.json (`scores`) and the CSV.

Without a declaration (an ad-hoc `eval.tasks`), every requested task is one column: a group's own
aggregate where it has one, else one column per sub-task; MME is the paper's two columns
(MME-cognition, MME-perception; `PAPER_COLUMNS`). A declared suite with an extra task gets that
task's ad-hoc column(s) after the paper's.

The runner records the resolved columns in results.json (`columns`); the report, W&B and the run's
summary line read them from there. Files written before that (no `columns`) read as they always
did: every task of `primary_metric` is a column (MME as two). This module imports nothing from tamp.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: task -> the paper's columns of it, in the paper's order: (column name, lmms-eval metric name)
PAPER_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "mme": (("MME-cognition", "mme_cognition_score"), ("MME-perception", "mme_perception_score")),
}
#: how a column's number is made from lmms-eval's results
VALUE, MEAN = "value", "mean"
AGGREGATES = (VALUE, MEAN)
#: how results.json names a task's metric(s): one "metric,filter" key or a list of them
MetricSpec = str | list[str] | None
Scores = Mapping[str, Mapping[str, Any]]
Groups = Mapping[str, Sequence[str]]


@dataclass
class ColumnSpec:
    """One column a suite declares: the paper's name, the lmms-eval task or group, metric and aggregation.

    `metric` is lmms-eval's metric name (`relaxed_overall`), `metric,filter` to pin the filter, or
    empty for the task's first metric (a task the user brings, e.g. Table 3's TUT2017).
    `aggregate`: `value` (the task's score, or the group's own aggregate) or `mean` (the unweighted
    mean over the group's sub-tasks, each scored with `metric`).
    """

    name: str = ""
    task: str = ""
    metric: str = ""
    aggregate: str = VALUE

    def check(self, where: str = "eval.columns") -> None:
        for key in ("name", "task"):
            if not getattr(self, key):
                raise ValueError(f"{where}.{key} is empty; valid: a column needs a name and a task (or group)")
        if self.aggregate == MEAN and not self.metric:
            raise ValueError(f"{where}.metric is empty; valid: a `mean` column names the sub-tasks' metric")
        if self.aggregate not in AGGREGATES:
            raise ValueError(
                f"{where}.aggregate='{self.aggregate}' is unknown; valid: {', '.join(AGGREGATES)}"
            )


@dataclass(frozen=True)
class Column:
    """One table column: its label, the task (or group) and metric key, and how its number is made."""

    task: str
    metric: str
    label: str
    aggregate: str = VALUE
    #: the sub-tasks a `mean` column averages
    tasks: tuple[str, ...] = field(default=())

    def value(self, scores: Scores) -> float | None:
        """The column's number from a run's scores; None when a score it needs is missing."""
        if self.aggregate == MEAN:
            values = [_number((scores.get(task) or {}).get(self.metric)) for task in self.tasks]
            present = [v for v in values if v is not None]
            return math.fsum(present) / len(present) if present and len(present) == len(values) else None
        return _number((scores.get(self.task) or {}).get(self.metric))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.label, "task": self.task, "metric": self.metric}
        if self.aggregate != VALUE:
            out |= {"aggregate": self.aggregate, "tasks": list(self.tasks)}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Column:
        return cls(
            task=str(data["task"]),
            metric=str(data["metric"]),
            label=str(data.get("name") or data["task"]),
            aggregate=str(data.get("aggregate") or VALUE),
            tasks=tuple(str(t) for t in data.get("tasks") or ()),
        )


def _metric_name(key: str) -> str:
    return key.split(",")[0]


def _find(scores: Mapping[str, Any], metric: str, filter_name: str) -> str | None:
    """The key of `metric` in a task's scores: with the wanted filter if present, else any filter."""
    if f"{metric},{filter_name}" in scores:
        return f"{metric},{filter_name}"
    return next((k for k in scores if _metric_name(k) == metric), None)


def _key(scores: Mapping[str, Any], metric: str) -> str | None:
    """A declared metric ('name' or 'name,filter') as the key a task's scores hold, if they hold it."""
    if "," in metric:
        return metric if metric in scores else None
    return _find(scores, metric, "none")


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


def legacy_columns(primary_metric: Mapping[str, Any], scores: Scores) -> list[Column]:
    """Every scored task's column(s) (primary_metric first, then other scored tasks): files without `columns`."""
    tasks = list(primary_metric) + [t for t in scores if t not in primary_metric]
    return [c for t in tasks for c in task_columns(t, primary_metric.get(t), scores.get(t) or {})]


# ------------------------------------------------------------------------------ resolving a run's columns
def descendants(name: str, groups: Groups) -> list[str]:
    """Every task and group under `name` (lmms-eval's group_subtasks), depth first, `name` excluded."""
    out: list[str] = []
    for sub in groups.get(name, ()):
        out += [sub, *descendants(sub, groups)]
    return out


def _declared(spec: ColumnSpec, scores: Scores, primary_metric: Mapping[str, Any], groups: Groups) -> Column:
    """A declared column as the run's results spell it (the metric's filter, the group's sub-tasks)."""
    if not spec.metric:  # the task's own first metric
        own = primary_metric.get(spec.task)
        own = own if isinstance(own, str) else (own or [None])[0] if isinstance(own, list) else None
        return Column(spec.task, own or default_metric(scores.get(spec.task) or {}) or "", spec.name)
    if spec.aggregate == MEAN:
        subtasks = tuple(t for t in descendants(spec.task, groups) if t not in groups)
        found = next((k for t in subtasks if (k := _key(scores.get(t) or {}, spec.metric))), None)
        return Column(spec.task, found or _with_filter(spec.metric), spec.name, MEAN, subtasks)
    found = _key(scores.get(spec.task) or {}, spec.metric)
    return Column(spec.task, found or _with_filter(spec.metric), spec.name)


def _with_filter(metric: str) -> str:
    return metric if "," in metric else f"{metric},none"


def _adhoc(name: str, scores: Scores, primary_metric: Mapping[str, Any], groups: Groups) -> list[Column]:
    """One requested name without a declared column: the task (or the group's own aggregate), else its sub-tasks."""
    if name in scores and (primary_metric.get(name) or default_metric(scores[name])):
        return task_columns(name, primary_metric.get(name), scores[name])
    return [c for sub in groups.get(name, ()) for c in _adhoc(sub, scores, primary_metric, groups)]


def run_columns(
    requested: Sequence[str],
    declared: Iterable[ColumnSpec | Mapping[str, Any]],
    scores: Scores,
    primary_metric: Mapping[str, Any],
    groups: Groups,
) -> list[Column]:
    """The columns of a run from what it asked lmms-eval for and what lmms-eval returned.

    Declared columns come first, in their order, each where lmms-eval evaluated its task or group;
    then every requested name that no declared column covers (itself, a group above it or one below
    it) gets its ad-hoc columns; then any scored task outside all of these (a tag's tasks).
    """
    specs = [s if isinstance(s, ColumnSpec) else ColumnSpec(**dict(s)) for s in declared]
    columns = [_declared(s, scores, primary_metric, groups) for s in specs if s.task in scores or s.task in groups]
    covered = {c.task for c in columns}
    taken = covered | {d for task in covered for d in descendants(task, groups)}
    adhoc = [name for name in requested if name not in taken]
    adhoc += [task for task in scores if task not in taken and task not in adhoc]  # e.g. a tag's tasks
    for name in adhoc:
        if name in taken:
            continue
        if not any(d in covered for d in descendants(name, groups)):  # else a declared column stands for it
            columns += [c for c in _adhoc(name, scores, primary_metric, groups) if c.label not in _labels(columns)]
        taken |= {name, *descendants(name, groups)}
    return columns


def _labels(columns: Iterable[Column]) -> set[str]:
    return {c.label for c in columns}


# ------------------------------------------------------------------------------ reading a record
def record_columns(
    primary_metric: Mapping[str, Any], scores: Scores, columns: Sequence[Mapping[str, Any]] | None = None
) -> list[Column]:
    """A run's table columns: those recorded in results.json, else (an older file) every scored task's."""
    if columns:
        return [Column.from_json(c) for c in columns]
    return legacy_columns(primary_metric, scores)


def detail_columns(
    primary_metric: Mapping[str, Any], scores: Scores, columns: Sequence[Column]
) -> list[Column]:
    """Scores that are not table columns (sub-tasks, other prompt variants): for the CSV, never in Avg Rel.%."""
    shown = {(c.task, c.metric) for c in columns}
    return [c for c in legacy_columns(primary_metric, scores) if (c.task, c.metric) not in shown]


def column_scores(
    primary_metric: Mapping[str, Any], scores: Scores, columns: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, float]:
    """{column label: finite score} of a run (a column without a number is left out)."""
    out = {}
    for c in record_columns(primary_metric, scores, columns):
        value = c.value(scores)
        if value is not None:
            out[c.label] = value
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
