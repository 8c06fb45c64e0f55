"""Rel.% tables as in the paper: a row per (method, sparsity, pattern), raw scores per task, Avg Rel.%.

Rel.% of a task = pruned / dense x 100 on the task's primary metric, against the dense run of the same
model and task suite; a row's Avg Rel.% is the mean over the tasks (Tables 2, 3, 5 of the paper).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

import pandas as pd

from tamp.reporting.load import ReportError
from tamp.reporting.rank import rank_marks
from tamp.reporting.runs import (
    COMPLETED,
    DENSE,
    Column,
    columns_of,
    is_completed,
    is_dense,
    method_labels,
    method_rank,
    pattern_of,
    run_tasks,
    score,
)


@dataclass
class Row:
    """One table row; several runs with the same key (repeats) are averaged over the completed ones."""

    method: str
    target: float
    pattern: str
    dense: bool
    status: str
    runs: list[dict[str, Any]]
    scores: dict[str, float | None]
    rel: dict[str, float | None] = field(default_factory=dict)
    avg_rel: float | None = None
    achieved: float | None = None
    error: str | None = None

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED


@dataclass
class Table:
    """The rows of one model on one task suite; marks[(row index, column label or AVG)] = best | second."""

    model: str
    columns: list[Column]
    rows: list[Row]
    marks: dict[tuple[int, str], str] = field(default_factory=dict)


@dataclass
class Report:
    tables: list[Table]

    @property
    def frame(self) -> pd.DataFrame:
        """Every row of every table as plain numbers (NaN where there is none): the CSV."""
        return pd.DataFrame([_record(table, row) for table in self.tables for row in table.rows])


def _record(table: Table, row: Row) -> dict[str, Any]:
    method = row.runs[0]["method"]
    record: dict[str, Any] = {
        "model": table.model,
        "method": row.method,
        "pruner": method.get("pruner"),
        "allocation": method.get("allocation"),
        "tokens": method.get("tokens"),
        "target_sparsity": row.target,
        "pattern": row.pattern,
        "achieved_sparsity": row.achieved,
        "status": row.status,
        "runs": len(row.runs),
        "error": row.error,
    }
    record |= {f"score:{c.label}": row.scores.get(c.label) for c in table.columns}
    record |= {f"rel:{c.label}": _round(row.rel.get(c.label)) for c in table.columns}
    record["avg_rel"] = _round(row.avg_rel)
    return record


def _round(value: float | None) -> float | None:
    """Rel.% to 6 decimals, so 0.72 / 0.8 x 100 reads 90.0 rather than 89.99999999999999."""
    return None if value is None else round(value, 6)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return mean(present) if present else None


def make_row(key: tuple[str, float, str], runs: list[dict[str, Any]], columns: list[Column]) -> Row:
    """Average the completed runs of a key; a key with none completed is shown with its status."""
    done = [r for r in runs if is_completed(r)]
    failed = [r for r in runs if not is_completed(r)]
    status = (
        COMPLETED
        if done
        else next((r["status"] for r in failed if r["status"] == "failed"), failed[0]["status"])
    )
    return Row(
        method=key[0],
        target=key[1],
        pattern=key[2],
        dense=key[0] == DENSE,
        status=str(status),
        runs=runs,
        scores={c.label: _mean([score(r, c) for r in done]) for c in columns},
        achieved=_mean([r["sparsity"].get("achieved") for r in done]),
        error=next((r.get("error") for r in failed if r.get("error")), None),
    )


def fill_rel(row: Row, dense: Row, columns: list[Column]) -> None:
    """Per-task Rel.% and their mean; a column whose dense score is 0 or absent has no Rel.% for anyone."""
    usable = [c.label for c in columns if dense.scores.get(c.label)]
    for label in usable:
        value = row.scores.get(label)
        row.rel[label] = None if value is None else value / dense.scores[label] * 100.0  # type: ignore[operator]
    rels = [row.rel.get(label) for label in usable]
    row.avg_rel = mean(rels) if rels and all(r is not None for r in rels) else None  # type: ignore[arg-type]


def _sort_key(row: Row) -> tuple[Any, ...]:
    return (not row.dense, row.pattern != "unstructured", row.pattern, row.target, method_rank(row.method))


def make_table(model: str, dense: dict[str, Any], runs: list[tuple[str, dict[str, Any]]]) -> Table:
    """One model x suite: group runs by (label, target, pattern), compute Rel.% against the dense row."""
    columns = columns_of(dense)
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = defaultdict(list)
    for label, run in runs:
        key = (
            (DENSE, 0.0, "unstructured")
            if is_dense(run)
            else (label, float(run["sparsity"]["target"]), pattern_of(run))
        )
        groups[key].append(run)
    rows = sorted((make_row(key, group, columns) for key, group in groups.items()), key=_sort_key)
    for row in rows:
        fill_rel(row, rows[0], columns)
    return Table(model=model, columns=columns, rows=rows, marks=rank_marks(rows, columns))


def _suite_for(
    run: dict[str, Any], suites: dict[tuple[str, ...], dict[str, Any]], model: str
) -> tuple[str, ...]:
    """The smallest dense suite holding all of the run's tasks (a failed run without scores fits any)."""
    tasks = set(run_tasks(run))
    fitting = [suite for suite in suites if tasks <= set(suite)]
    if not fitting:
        raise ReportError(
            f"no dense reference run of model '{model}' covers tasks {sorted(tasks)} of {run['run_dir']}"
        )
    return min(fitting, key=len)


def model_tables(model: str, runs: list[tuple[str, dict[str, Any]]]) -> list[Table]:
    """Tables of one model, one per task suite of its completed dense runs."""
    suites: dict[tuple[str, ...], dict[str, Any]] = {}
    for _, run in runs:
        if is_dense(run) and is_completed(run):
            suites.setdefault(tuple(run_tasks(run)), run)
    if not suites:
        failed = any(is_dense(run) for _, run in runs)
        hint = "its dense run did not complete" if failed else "add the directory of a method=dense run"
        raise ReportError(f"no dense reference run for model '{model}' ({hint})")
    members: dict[tuple[str, ...], list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for label, run in runs:
        members[_suite_for(run, suites, model)].append((label, run))
    return [make_table(model, suites[suite], members[suite]) for suite in suites]


def build_report(results: list[dict[str, Any]]) -> Report:
    """Results dicts (from results.json or W&B) -> one Rel.% table per model and task suite."""
    if not results:
        raise ReportError("no runs to report")
    by_model: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for label, result in zip(method_labels(results), results, strict=True):
        by_model[str(result["model"]["name"])].append((label, result))
    return Report(tables=[table for model, runs in by_model.items() for table in model_tables(model, runs)])
