"""Pieces of `python -m tamp.report`: load results, build Rel.% tables, render markdown/CSV, plot."""

from tamp.reporting.load import ReportError, load_results
from tamp.reporting.table import Column, Report, Row, Table, build_report

__all__ = ["Column", "Report", "ReportError", "Row", "Table", "build_report", "load_results"]
