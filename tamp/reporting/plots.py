"""The report's figures (paper Figures 5-8), drawn on Agg canvases without pyplot's global state."""

from __future__ import annotations

import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tamp.core.io import write_bytes_atomic
from tamp.reporting.load import ReportError
from tamp.reporting.runs import number
from tamp.reporting.table import Report, Row, Table
from tamp.tracking.run_record import block_index, projection_kind

KIND_ORDER = ("q", "k", "v", "o", "gate", "up", "down")


def _figure(width: float = 8.0) -> Figure:
    fig = Figure(figsize=(width, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (written by the caller beside the target and renamed, never through a link)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _finish(fig: Figure, ax: Any, path: Path | None, has_data: bool, target: float | None = None) -> None:
    """Legend (and the target as a dotted line), or a note that there was nothing to draw; saved to `path` if given."""
    if target is not None and has_data:
        ax.axhline(target * 100, color="gray", linestyle=":", label="target")
    if has_data:  # outside the axes: bars and lines stay readable however many methods there are
        fig.legend(loc="outside right upper", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    if path is not None:
        write_bytes_atomic(path, png_bytes(fig))


def series_name(report: Report, table: Table, row: Row) -> str:
    """Method (and pattern if N:M); prefixed by the table's title when the report holds several tables."""
    name = row.method if row.pattern == "unstructured" else f"{row.method} {row.pattern}"
    name += "" if row.completed else f" ({row.status})"
    if len(report.tables) == 1:
        return name
    short = table.model.rstrip("/").split("/")[-1]
    return f"{short}{(table.title or table.model)[len(table.model) :]}: {name}"


def seeds_note(ns: list[int]) -> str:
    """` (mean ± std, n=3)` for a series that averages seeds, nothing otherwise."""
    if max(ns, default=1) < 2:
        return ""
    low, high = min(ns), max(ns)
    return f" (mean ± std, n={low if low == high else f'{low}-{high}'})"


def runs_note(row: Row) -> str:
    """` (mean of 3 runs)` when the per-linear figures average several runs of a row."""
    count = sum(1 for r in row.runs if r.get("sparsity_per_linear"))
    return f" (mean of {count} runs)" if count > 1 else ""


def plot_rel(report: Report, path: Path | None = None) -> Figure:
    """Figure 5/6: Avg Rel.% against target sparsity, one line per method (error bars: std over seeds)."""
    fig = _figure()
    ax = fig.add_subplot()
    series: dict[str, list[tuple[float, float, float, int]]] = defaultdict(list)
    for table in report.tables:
        for row in table.rows:
            if not row.dense and row.avg_rel is not None:
                point = (row.target * 100, row.avg_rel, row.avg_rel_std or 0.0, row.n)
                series[series_name(report, table, row)].append(point)
    for name, points in series.items():
        xs, ys, errs, ns = zip(*sorted(points), strict=True)
        label = name + seeds_note(list(ns))
        if any(errs):
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label)
        else:
            ax.plot(xs, ys, marker="o", label=label)
    ax.axhline(100.0, color="gray", linestyle="--", label="dense")
    ax.set(xlabel="target sparsity (%)", ylabel="Avg Rel. (%)", title="Average relative performance")
    _finish(fig, ax, path, has_data=True)
    return fig


def per_linear(row: Row) -> dict[str, dict[str, Any]]:
    """Per-linear sparsity averaged over the row's runs that recorded it (a run may fail in eval after pruning)."""
    recorded = [r["sparsity_per_linear"] for r in row.runs if r.get("sparsity_per_linear")]
    merged: dict[str, dict[str, Any]] = {}
    for name in recorded[0] if recorded else {}:
        achieved = [number(t.get(name, {}).get("achieved")) for t in recorded]
        present = [a for a in achieved if a is not None]
        merged[name] = {**recorded[0][name], "achieved": sum(present) / len(present) if present else None}
    return merged


def kind_of(name: str, entry: dict[str, Any]) -> str:
    return str(entry.get("kind") or projection_kind(name)).removesuffix("_proj")


def block_of(name: str, entry: dict[str, Any]) -> int | None:
    """The recorded block (tamp.tracking.run_record fills it in for files that lack it), else the name's."""
    return int(entry["block"]) if entry.get("block") is not None else block_index(name)


def choose_sparsity(report: Report, requested: float | None) -> float | None:
    """The requested target if some run at it recorded per-linear sparsity, else the highest such target."""
    present = sorted(
        {row.target for t in report.tables for row in t.rows if not row.dense and per_linear(row)}
    )
    if requested is None:
        return present[-1] if present else None
    match = [t for t in present if math.isclose(t, requested, abs_tol=1e-9)]
    if not match:
        raise ReportError(f"no run at sparsity {requested} recorded per-linear sparsity; present: {present}")
    return match[0]


def rows_at(report: Report, target: float | None) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """(series name, per-linear sparsity averaged over the row's runs) of the pruned rows at the target."""
    return [
        (series_name(report, table, row) + runs_note(row), per_linear(row))
        for table in report.tables
        for row in table.rows
        if target is not None and not row.dense and row.target == target and per_linear(row)
    ]


def plot_projection(report: Report, target: float | None, path: Path | None = None) -> Figure:
    """Figure 7: mean achieved sparsity per projection kind (q, k, v, o, gate, up, down), bars per method."""
    data = rows_at(report, target)
    means: list[tuple[str, dict[str, float]]] = []
    for name, linears in data:
        kinds: dict[str, list[float]] = defaultdict(list)
        for lin, entry in linears.items():
            if number(entry.get("achieved")) is not None:
                kinds[kind_of(lin, entry)].append(float(entry["achieved"]))
        means.append((name, {k: sum(v) / len(v) for k, v in kinds.items()}))
    found = {k for _, m in means for k in m}
    kinds_sorted = [k for k in KIND_ORDER if k in found] + sorted(found - set(KIND_ORDER))
    fig = _figure(9.0)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(means))
    for i, (name, m) in enumerate(means):
        xs = [j + (i - (len(means) - 1) / 2) * width for j in range(len(kinds_sorted))]
        ax.bar(xs, [m.get(k, math.nan) * 100 for k in kinds_sorted], width=width, label=name)
    ax.set_xticks(range(len(kinds_sorted)), kinds_sorted)
    title = f"at {target * 100:g}% target" if target is not None else ""
    ax.set(xlabel="projection", ylabel="mean achieved sparsity (%)", title=f"Sparsity per projection {title}")
    _finish(fig, ax, path, bool(means), target)
    return fig


def plot_blocks(report: Report, target: float | None, path: Path | None = None) -> Figure:
    """Figure 8: achieved sparsity of each block (weighted by the linears' sizes), one line per method."""
    fig = _figure(9.0)
    ax = fig.add_subplot()
    data = rows_at(report, target)
    for name, linears in data:
        pruned: dict[int, float] = defaultdict(float)
        total: dict[int, float] = defaultdict(float)
        for lin, entry in linears.items():
            block = block_of(lin, entry)
            if block is not None and number(entry.get("achieved")) is not None:
                numel = float(entry.get("numel") or 1)
                pruned[block] += float(entry["achieved"]) * numel
                total[block] += numel
        blocks = sorted(total)
        ax.plot(blocks, [pruned[b] / total[b] * 100 for b in blocks], marker="o", label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    title = f"at {target * 100:g}% target" if target is not None else ""
    ax.set(xlabel="block", ylabel="achieved sparsity (%)", title=f"Sparsity per block {title}")
    _finish(fig, ax, path, bool(data), target)
    return fig


def plot_files(report: Report, sparsity: float | None = None) -> dict[str, bytes]:
    """The three PNGs by file name, always all three (a figure without data says so): a sweep's outputs stay
    predictable. Bytes, not files: tamp.reporting.outputs writes them, only where the report's own files are."""
    target = choose_sparsity(report, sparsity)
    return {"sparsity_vs_rel.png": png_bytes(plot_rel(report)),
            "sparsity_per_projection.png": png_bytes(plot_projection(report, target)),
            "sparsity_per_block.png": png_bytes(plot_blocks(report, target))}
