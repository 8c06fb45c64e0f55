"""Rel.% tables as in the paper: a row per experiment, raw scores per task, Avg Rel.%.

A table holds the runs of one model scored with the same evaluation settings (tasks, limit, ...),
and its dense reference run scored the same way. A row holds the runs of one experiment (method and
its resolved settings, calibration set, sparsity): runs that differ only in `seed` are repeats, shown
as mean +- std over seeds; anything else that differs makes another row, labelled by what differs.
Rel.% of a column = pruned / dense x 100 (a column is one number of the paper's table: a paper suite
declares which task or group, metric and aggregation make it; tamp.eval.columns); a row's Avg Rel.% is
the mean over the columns whose dense score is usable (Tables 2, 3, 5 of the paper). Sub-task scores
go to the CSV only. Without a completed dense
run the table still shows the raw scores and says how to add one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from tamp.eval.rel import avg_rel, excluded_reason, rel_percent
from tamp.reporting.group import group_by, row_labels, table_titles
from tamp.reporting.keys import Items, RunKey, run_key, seed_of
from tamp.reporting.load import ReportError
from tamp.reporting.rank import rank_marks
from tamp.reporting.runs import (
    COMPLETED,
    Column,
    columns_of,
    details_of,
    is_completed,
    method_rank,
    pattern_of,
    score,
)
from tamp.reporting.stats import by_seed, seed_mean, stat
from tamp.tracking.run_names import (
    DENSE,
    is_dense,
    is_unpruned,
    measured_sparse,
    name_of_record,
    preset_items,
)

Pair = tuple[RunKey, dict[str, Any]]
NOT_EVALUATED = (
    "No task was scored: these runs were not evaluated (`eval.tasks` is empty, the default `eval=none`); "
    "add an eval suite, e.g. `eval=tiny` or `eval=zoo`, and a dense cell (`method=dense`) for Rel.%."
)


@dataclass
class Row:
    """One experiment: its runs, and the mean (and std over seeds) of the completed ones."""

    method: str  # the label: the method's name and, where needed, the settings that tell it apart
    target: float
    pattern: str
    dense: bool
    status: str
    runs: list[dict[str, Any]]
    scores: dict[str, float | None]
    scores_std: dict[str, float | None] = field(default_factory=dict)
    rel: dict[str, float | None] = field(default_factory=dict)
    rel_std: dict[str, float | None] = field(default_factory=dict)
    avg_rel: float | None = None
    avg_rel_std: float | None = None
    achieved: float | None = None
    error: str | None = None
    key: Items = field(default_factory=dict)
    #: the completed runs of each seed
    seeds: list[list[dict[str, Any]]] = field(default_factory=list)
    #: scores outside the table's columns (sub-tasks of a group column ...): the CSV's extra `score:` columns
    details: dict[str, float | None] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    @property
    def n(self) -> int:
        """Seeds with a completed run."""
        return len(self.seeds)

    @property
    def failed_runs(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if not is_completed(r)]


@dataclass
class Table:
    """One model x eval settings; marks[(row index, column label or AVG)] = best | second."""

    model: str
    columns: list[Column]
    rows: list[Row]
    marks: dict[tuple[int, str], str] = field(default_factory=dict)
    title: str = ""
    key: Items = field(default_factory=dict)
    #: columns left out of Avg Rel.%, with the reason (their dense score is 0 or missing)
    excluded: dict[str, str] = field(default_factory=dict)
    #: why the table has no Rel.% (no completed dense run), None when it has
    no_rel: str | None = None
    #: scores recorded besides the columns (sub-tasks, other variants): CSV only, never in Avg Rel.%
    details: list[Column] = field(default_factory=list)
    #: which variant of each component the rows ran: [(row label or "all rows", "component: what")]
    variants: list[tuple[str, str]] = field(default_factory=list)

    @property
    def repeats(self) -> bool:
        """Whether some row averages more than one seed (the tables then show n and +- std)."""
        return any(row.n > 1 for row in self.rows)


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
        "table": table.title,
        "method": row.method,
        "method_name": method.get("name"),
        "pruner": method.get("pruner"),
        "allocation": method.get("allocation"),
        "tokens": method.get("tokens"),
        "target_sparsity": row.target,
        "pattern": row.pattern,
        "achieved_sparsity": row.achieved,
        "status": row.status,
        "runs": len(row.runs),
        "n": row.n,
        "seeds": " ".join(
            str(seed) for seed in map(seed_of, (runs[0] for runs in row.seeds)) if seed is not None
        ),
        "error": row.error,
    }
    for c in table.columns:
        record[f"score:{c.label}"] = row.scores.get(c.label)
        record[f"score_std:{c.label}"] = row.scores_std.get(c.label)
    for c in table.columns:
        record[f"rel:{c.label}"] = _round(row.rel.get(c.label))
        record[f"rel_std:{c.label}"] = _round(row.rel_std.get(c.label))
    record["avg_rel"] = _round(row.avg_rel)
    record["avg_rel_std"] = _round(row.avg_rel_std)
    record["avg_rel_excludes"] = " ".join(table.excluded)
    for c in table.details:
        record[f"score:{c.label}"] = row.details.get(c.label)
    variants = _variants_of(row)
    record["variants"] = "; ".join(f"{k}: {v}" for k, v in variants.items()) if variants else None
    return record


def _variants_of(row: Row) -> dict[str, str]:
    """The row's recorded component variants (results.json `variants`), over its completed runs (all its
    runs when none completed): a text its seeds spell differently (the calibration draw's seed) is said
    for each of them, never the first seed's for all."""
    runs = [r for r in row.runs if is_completed(r)] or row.runs
    texts: dict[str, list[str]] = {}
    for run in runs:
        for key, text in (run.get("variants") or {}).items():
            seen = texts.setdefault(key, [])
            if str(text) not in seen:
                seen.append(str(text))
    return {key: merge_texts(seen) for key, seen in texts.items()}


_NUMBER = re.compile(r"-?\d+")


def merge_texts(texts: list[str]) -> str:
    """One text for the runs of one row, which differ only in their seeds: `random.Random(seed).sample for
    seed 1, 2` where the texts differ in one number; else each text, ` | ` between them."""
    if len(texts) == 1:
        return texts[0]
    shapes = {_NUMBER.sub("#", text) for text in texts}
    numbers = [_NUMBER.findall(text) for text in texts]
    slots = {i for i in range(len(numbers[0])) if len({n[i] for n in numbers}) > 1} if len(shapes) == 1 else set()
    if len(slots) != 1:
        return " | ".join(texts)
    (slot,) = slots
    parts = _NUMBER.split(texts[0])
    template = "".join(part + (("seed" if i == slot else numbers[0][i]) if i < len(numbers[0]) else "")
                       for i, part in enumerate(parts))
    return f"{template} for seed {', '.join(n[slot] for n in numbers)}"


def variant_notes(rows: list[Row]) -> list[tuple[str, str]]:
    """(row label, "component: variant; ...") for the footnote. A component every row that has it runs
    the same way (the calibration draw, usually) is said once, for "all rows it applies to"."""
    pruned = [(row.method, _variants_of(row)) for row in rows if not row.dense]
    pruned = [(label, notes) for label, notes in pruned if notes]
    texts: dict[str, set[str]] = {}
    for _, notes in pruned:
        for key, text in notes.items():
            texts.setdefault(key, set()).add(text)
    holders = {key: sum(key in notes for _, notes in pruned) for key in texts}
    shared = {key for key, seen in texts.items() if len(seen) == 1 and holders[key] > 1}
    out = [(label, "; ".join(f"{k}: {v}" for k, v in notes.items() if k not in shared)) for label, notes in pruned]
    out = list(dict.fromkeys((label, text) for label, text in out if text))  # a method at two sparsities: once
    return out + [("all rows it applies to", f"{k}: {next(iter(texts[k]))}") for k in sorted(shared)]


def _round(value: float | None) -> float | None:
    """Rel.% to 6 decimals, so 0.72 / 0.8 x 100 reads 90.0 rather than 89.99999999999999."""
    return None if value is None else round(value, 6)


def make_row(key: Items, runs: list[dict[str, Any]], columns: list[Column], details: list[Column] = ()) -> Row:
    """Mean and std over the seeds of the completed runs; a row with none completed shows its status."""
    done = [r for r in runs if is_completed(r)]
    failed = [r for r in runs if not is_completed(r)]
    status = (
        COMPLETED
        if done
        else next((r["status"] for r in failed if r["status"] == "failed"), failed[0]["status"])
    )
    seeds = by_seed(done, (lambda r: None) if is_dense(runs[0]) else seed_of)  # the dense model draws nothing
    name = name_of_record(runs[0])  # a saved checkpoint: its own method and measured sparsity
    row = Row(
        method=DENSE if is_dense(runs[0]) else name.label() if name.saved else str(runs[0]["method"]["name"]),
        target=0.0 if is_dense(runs[0]) else float(name.target or 0.0),
        pattern="unstructured" if is_dense(runs[0]) else name.pattern if name.saved else pattern_of(runs[0]),
        dense=is_dense(runs[0]),
        status=str(status),
        runs=runs,
        scores={},
        error=next((r.get("error") for r in failed if r.get("error")), None),
        key=key,
        seeds=seeds,
    )
    for c in columns:
        s = stat([seed_mean(group, lambda r, c=c: score(r, c)) for group in seeds])
        row.scores[c.label] = s.mean if s else None
        row.scores_std[c.label] = s.std if s else None
    for c in details:
        s = stat([seed_mean(group, lambda r, c=c: score(r, c)) for group in seeds])
        row.details[c.label] = s.mean if s else None
    achieved = stat([seed_mean(group, lambda r: r["sparsity"].get("achieved")) for group in seeds])
    row.achieved = achieved.mean if achieved else None
    return row


def usable_columns(dense: Row, columns: list[Column]) -> tuple[list[Column], dict[str, str]]:
    """Columns with a dense score to divide by, and the others with why they are left out of Rel.%."""
    usable, excluded = [], {}
    for c in columns:
        reason = excluded_reason(dense.scores.get(c.label))
        if reason is None:
            usable.append(c)
        else:
            excluded[c.label] = reason
    return usable, excluded


def fill_rel(row: Row, dense: Row, usable: list[Column]) -> None:
    """Per-task Rel.% of each seed against the dense mean; the row's mean and std over its seeds."""
    per_seed: list[dict[str, float | None]] = []
    for group in row.seeds:
        values: dict[str, float | None] = {}
        for c in usable:
            values[c.label] = rel_percent(seed_mean(group, lambda r, c=c: score(r, c)), dense.scores[c.label])
        per_seed.append(values)
    for c in usable:
        s = stat([values[c.label] for values in per_seed])
        row.rel[c.label] = s.mean if s else None
        row.rel_std[c.label] = s.std if s else None
    row.avg_rel = avg_rel({c.label: row.rel.get(c.label) for c in usable})
    avgs = stat([avg_rel(values) for values in per_seed])
    row.avg_rel_std = avgs.std if avgs and row.avg_rel is not None else None


def _sort_key(row: Row) -> tuple[Any, ...]:
    return (not row.dense, row.pattern != "unstructured", row.pattern, row.target, method_rank(row.method))


def table_columns(runs: list[dict[str, Any]]) -> list[Column]:
    """The columns of the completed runs (dense first, then in run order), each label once."""
    ordered = sorted((r for r in runs if is_completed(r)), key=lambda r: not is_dense(r))
    columns: dict[str, Column] = {}
    for run in ordered:
        for column in columns_of(run):
            columns.setdefault(column.label, column)
    return list(columns.values())


def table_details(runs: list[dict[str, Any]], columns: list[Column]) -> list[Column]:
    """The completed runs' other scores (sub-tasks of group columns ...), each label once, none a column's."""
    labels = {c.label for c in columns}
    details: dict[str, Column] = {}
    for run in sorted((r for r in runs if is_completed(r)), key=lambda r: not is_dense(r)):
        for column in details_of(run, columns_of(run)):
            if column.label not in labels:
                details.setdefault(column.label, column)
    return list(details.values())


def no_rel_reason(model: str, rows: list[Row]) -> str:
    """Why a table has no Rel.%, and how to get it."""
    dense = next((row for row in rows if row.dense), None)
    add = (
        "put the dense cell in the sweep (`method=dense`, e.g. `-m method=dense,wanda ...`; it is scored once "
        "per sweep and reused), or run `python -m tamp.run method=dense` with the same model and eval "
        "overrides and pass its directory: `python -m tamp.report DIR --dense DENSE_DIR`"
    )
    if dense is not None:
        failed = f" ({dense.error})" if dense.error else ""
        return f"Rel.% needs a completed dense run; the dense run of this table {dense.status}{failed}: rerun it, or {add}."
    return (
        f"Rel.% needs a completed dense run of {model} scored with the same eval settings, and none was "
        f"found: {add}."
    )


def make_table(table_key: Items, pairs: list[Pair]) -> Table:
    """One model x eval settings: rows of equal experiment items, Rel.% against the dense row."""
    model = str(table_key.get("model.name") or pairs[0][1]["model"]["name"])
    columns = table_columns([run for _, run in pairs])
    details = table_details([run for _, run in pairs], columns)
    groups = group_by(
        pairs,
        key_of=lambda pair: pair[0].row,
        may_join=lambda members: not any(is_completed(r) or is_dense(r) for _, r in members),
    )
    rows = [make_row(key, [run for _, run in members], columns, details) for key, members in groups]
    pruned = [row for row in rows if not row.dense]
    for row, label in zip(
        pruned, row_labels([row.method for row in pruned], [row.key for row in pruned],
                           [preset_items(row.method) for row in pruned]), strict=True
    ):
        row.method = label
    rows.sort(key=_sort_key)
    table = Table(model=model, columns=columns, rows=rows, key=table_key, details=details,
                  variants=variant_notes(rows))
    dense = next((row for row in rows if row.dense and row.completed), None)
    if not columns:
        table.no_rel = NOT_EVALUATED
    elif dense is None:
        table.no_rel = no_rel_reason(model, rows)
    else:
        usable, table.excluded = usable_columns(dense, columns)
        for row in rows:
            fill_rel(row, dense, usable)
    table.marks = rank_marks(rows, columns)
    return table


def source_model(result: dict[str, Any]) -> str | None:
    """The model a saved pruned checkpoint was pruned from, as its sparsity manifest names it (tamp saves
    record `source_model`); None for any other run or a manifest without it."""
    sparsity = result.get("sparsity") or {}
    if not (is_unpruned(result.get("method") or {}) and measured_sparse(sparsity.get("achieved"))):
        return None
    manifest = sparsity.get("manifest") if isinstance(sparsity.get("manifest"), dict) else {}
    source = manifest.get("source_model")
    name = source.get("name") if isinstance(source, dict) else None
    return name if isinstance(name, str) and name else None


def paired_key(key: RunKey, result: dict[str, Any]) -> RunKey:
    """A saved checkpoint evaluated as is goes in the table of the model it was pruned from (same eval
    settings), so its Rel.% is against that model's dense run; every other run keeps its key."""
    source = source_model(result)
    if source is None:
        return key
    return replace(key, table={**key.table, "model.name": source})


def build_report(results: list[dict[str, Any]]) -> Report:
    """Results dicts (from results.json or W&B) -> one table per model and eval settings."""
    if not results:
        raise ReportError("no runs to report")
    pairs = [(paired_key(run_key(result), result), result) for result in results]
    groups = group_by(pairs, key_of=lambda pair: pair[0].table, may_join=lambda members: True)
    tables = [make_table(key, members) for key, members in groups]
    titles = table_titles([t.model for t in tables], [t.key for t in tables])
    for table, title in zip(tables, titles, strict=True):
        table.title = title
    return Report(tables=tables)
