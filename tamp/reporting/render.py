"""Paper-style markdown (best in bold, second underlined) and the plain-number CSV.

A table with repeated seeds gets an `n` column and `mean ± std` cells; a task left out of Avg Rel.%
gets a footnote, and so does which variant of each component the rows ran (results.json `variants`); a table without a dense run says so and how to add one; failed runs get notes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
        notes.append("Runs that differ only in `seed` are one row: mean ± sample std over its n seeds.")
    if table.variants:
        listed = "\n".join(f"- {label}: {text}" for label, text in table.variants)
        notes.append(f"Variants as run (results.json `variants`):\n{listed}")
    failures = failure_notes(table)
    return "\n\n".join(["\n".join(lines), *notes] + (["\n".join(failures)] if failures else []))


def report_markdown(report: Report) -> str:
    """All tables, one section per model and eval settings."""
    parts = [
        f"## {table.title or table.model}\n\nRel.% = pruned / dense x 100 per column; best **bold**, second "
        f"<u>underlined</u> among pruned rows of the same sparsity.\n\n{table_markdown(table)}"
        for table in report.tables
    ]
    return "\n\n".join(parts) + "\n"


def write_csv(report: Report, path: Path) -> None:
    report.frame.to_csv(path, index=False)
