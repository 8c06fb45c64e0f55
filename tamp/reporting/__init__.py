"""Pieces of `python -m tamp.report`: load results, build Rel.% tables, render markdown/CSV, plot."""

from __future__ import annotations

from typing import Any

from tamp.reporting.load import ReportError, load_results

__all__ = ["Column", "Report", "ReportError", "Row", "Table", "build_report", "load_results"]
_TABLE = ("Column", "Report", "Row", "Table", "build_report")  # tamp.reporting.table: pandas, loaded when used


def __getattr__(name: str) -> Any:
    """The table names on first use: `tamp.report --help` and the light submodules do not pay for pandas."""
    if name in _TABLE:
        from tamp.reporting import table

        return getattr(table, name)
    raise AttributeError(f"module 'tamp.reporting' has no attribute {name!r}")
