"""Paper-style markdown (best in bold, second underlined) and the plain-number CSV."""

from __future__ import annotations

from pathlib import Path

from tamp.reporting.rank import AVG, BEST, SECOND
from tamp.reporting.table import Report, Row, Table

MISSING = "–"


def sparsity_label(row: Row) -> str:
    text = f"{row.target * 100:g}%"
    return text if row.pattern == "unstructured" else f"{text} {row.pattern}"


def fmt_score(value: float) -> str:
    """Percent-like scores as the paper prints them (69.2), fractions with three decimals (0.833)."""
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


def cell(row: Row, value: float | None, mark: str | None, fmt=fmt_score) -> str:
    """A failed (or still running) run shows its status in every cell; a missing score shows a dash."""
    if not row.completed:
        return row.status
    if value is None:
        return MISSING
    text = fmt(value)
    return {BEST: f"**{text}**", SECOND: f"<u>{text}</u>"}.get(mark or "", text)


def table_markdown(table: Table) -> str:
    labels = [c.label for c in table.columns]
    lines = [
        "| Method | Sparsity | " + " | ".join(labels) + " | Avg Rel.% |",
        "|---|---|" + "---:|" * (len(labels) + 1),
    ]
    for i, row in enumerate(table.rows):
        cells = [cell(row, row.scores.get(label), table.marks.get((i, label))) for label in labels]
        cells.append(cell(row, row.avg_rel, table.marks.get((i, AVG)), fmt=lambda v: f"{v:.1f}"))
        lines.append(f"| {row.method} | {sparsity_label(row)} | " + " | ".join(cells) + " |")
    notes = [
        f"- {row.method} at {sparsity_label(row)}: {row.status}"
        + (f": {row.error}" if row.error else "")
        + f" ({', '.join(str(r['run_dir']) for r in row.runs)})"
        for row in table.rows
        if not row.completed
    ]
    return "\n".join(lines + ([""] + notes if notes else []))


def report_markdown(report: Report) -> str:
    """All tables, one section per model and task suite."""
    parts = [
        f"## {table.model}\n\nRel.% = pruned / dense x 100 per task; best **bold**, second <u>underlined</u> "
        f"among pruned rows of the same sparsity.\n\n{table_markdown(table)}"
        for table in report.tables
    ]
    return "\n\n".join(parts) + "\n"


def write_csv(report: Report, path: Path) -> None:
    report.frame.to_csv(path, index=False)
