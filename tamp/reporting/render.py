"""Paper-style markdown (best in bold, second underlined) and the plain-number CSV.

A table with repeated seeds gets an `n` column and `mean ± std` cells; a task left out of Avg Rel.%
gets a footnote, and so does which variant of each component the rows ran (results.json `variants`); a table without a dense run says so and how to add one; failed runs get notes.
"""

from __future__ import annotations

from collections.abc import Callable

from tamp.reporting.keys import seed_of
from tamp.reporting.rank import AVG, BEST, SECOND
from tamp.reporting.table import Report, Row, Table

MISSING = "–"
PM = " ± "


def sparsity_label(row: Row) -> str:
    text = f"{row.target * 100:g}%"
    return text if row.pattern == "unstructured" else f"{text} {row.pattern}"


def fmt_score(value: float) -> str:
    """Percent-like scores as the paper prints them (69.2), fractions with three decimals (0.833)."""
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


def fmt_rel(value: float) -> str:
    return f"{value:.1f}"


def cell(
    row: Row,
    value: float | None,
    mark: str | None,
    fmt: Callable[[float], str] = fmt_score,
    std: float | None = None,
) -> str:
    """A failed (or still running) run shows its status in every cell; a missing score shows a dash."""
    if not row.completed:
        return row.status
    if value is None:
        return MISSING
    text = fmt(value) + (PM + fmt(std) if std is not None else "")
    return {BEST: f"**{text}**", SECOND: f"<u>{text}</u>"}.get(mark or "", text)


def _runs_of(row: Row) -> str:
    return ", ".join(str(r["run_dir"]) for r in row.failed_runs)


def failure_notes(table: Table) -> list[str]:
    """One line per row with a failed (or unfinished) run: its status, error and run directories."""
    notes = []
    for row in table.rows:
        if not row.failed_runs:
            continue
        head = f"- {row.method} at {sparsity_label(row)}: "
        if row.completed:
            head += f"{len(row.failed_runs)} of {len(row.runs)} runs did not complete"
        else:
            head += row.status
        notes.append(head + (f": {row.error}" if row.error else "") + f" ({_runs_of(row)})")
    return notes


def row_seeds(row: Row) -> list[str]:
    """The seeds a row averages, as its runs recorded them (`1`, or `seed=1,calib.seed=7`)."""
    return [str(seed) for seed in (seed_of(runs[0]) for runs in row.seeds) if seed is not None]


def seeds_note(table: Table) -> str:
    """What n counts and which seeds each row averages (one list when every row has the same)."""
    head = ("Runs that differ only in a seed (`seed`, which also draws the calibration samples; `calib.seed` "
            "or a method's own `seed` where set apart) are one row: mean ± sample std over its n seeds")
    lists = {(row.method, sparsity_label(row)): row_seeds(row) for row in table.rows if row.n > 1}
    if len({tuple(seeds) for seeds in lists.values()}) == 1:
        return f"{head}; seeds {', '.join(next(iter(lists.values())))}."
    return head + "; seeds: " + "; ".join(f"{method} {sparsity}: {', '.join(seeds)}"
                                         for (method, sparsity), seeds in lists.items()) + "."


def table_markdown(table: Table) -> str:
    labels = [c.label for c in table.columns]
    avg_head = "Avg Rel.%" + ("*" if table.excluded else "")
    n_head = ["n"] if table.repeats else []
    lines = [
        "| " + " | ".join(["Method", "Sparsity", *n_head, *labels, avg_head]) + " |",
        "|---|---|" + "---:|" * (len(n_head) + len(labels) + 1),
    ]
    for i, row in enumerate(table.rows):
        cells = [row.method, sparsity_label(row)] + ([str(row.n)] if table.repeats else [])
        for label in labels:
            cells.append(
                cell(row, row.scores.get(label), table.marks.get((i, label)), std=row.scores_std.get(label))
            )
        cells.append(cell(row, row.avg_rel, table.marks.get((i, AVG)), fmt=fmt_rel, std=row.avg_rel_std))
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    if table.excluded:
        left_out = ", ".join(f"{label} ({why})" for label, why in table.excluded.items())
        notes.append(f"\\* Avg Rel.% leaves out {left_out}: Rel.% is undefined without a dense score.")
    if table.no_rel:
        notes.append(table.no_rel)
    if table.repeats:
        notes.append(seeds_note(table))
    if table.variants:
        listed = "\n".join(f"- {label}: {text}" for label, text in table.variants)
        notes.append(f"Variants as run (results.json `variants`):\n{listed}")
    failures = failure_notes(table)
    return "\n\n".join(["\n".join(lines), *notes] + (["\n".join(failures)] if failures else []))


def documents_note(table: Table) -> str:
    """Which documents the table's scores come from: all of each task, or the first `eval.limit`."""
    limit = table.key.get("eval.limit")
    if limit in (None, "null"):
        return "Scored on every document of each task" if "eval.limit" in table.key else (
            "Documents scored per task: not recorded")
    return f"Scored on the first {limit} documents of each task only (`eval.limit={limit}`)"


def table_header(table: Table) -> str:
    """What the cells are, which documents they score, and the marks."""
    return (f"Score columns: raw scores (each task's primary metric, a column per score the paper prints); "
            f"Avg Rel.% = mean over the columns of pruned / dense x 100. {documents_note(table)}. Best **bold**, "
            "second <u>underlined</u> among pruned rows of the same sparsity.")


def report_markdown(report: Report) -> str:
    """All tables, one section per model and eval settings."""
    parts = [
        f"## {table.title or table.model}\n\n{table_header(table)}\n\n{table_markdown(table)}"
        for table in report.tables
    ]
    return "\n\n".join(parts) + "\n"


def report_csv(report: Report) -> str:
    """report.csv's text (tamp.reporting.outputs writes it: never through a link, never over a person's file)."""
    return report.frame.to_csv(index=False)
