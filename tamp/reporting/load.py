"""Find and read the runner's results.json files; every problem is a one-line ReportError naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tamp.core.io import natural_key
from tamp.tracking.run_record import RESULTS_FILE as RESULTS_NAME
from tamp.tracking.run_record import RunRecord, RunRecordError


class ReportError(Exception):
    """A user-facing problem with the inputs; main() prints it as one line and exits non-zero."""


def find_results(dirs: list[str | Path]) -> list[Path]:
    """All results.json under the given directories (or the files themselves), each once, in natural order."""
    found: dict[Path, None] = {}
    for entry in map(Path, dirs):
        if entry.is_file():
            found[entry.resolve()] = None
        elif entry.is_dir():
            for path in sorted(entry.rglob(RESULTS_NAME), key=natural_key):
                found[path.resolve()] = None
        else:
            raise ReportError(f"{entry}: no such file or directory")
    if not found:
        raise ReportError(f"no {RESULTS_NAME} found under {', '.join(map(str, dirs))}")
    return list(found)


def check_record(record: RunRecord, where: str) -> dict[str, Any]:
    """The fields the tables need must be there; the rest reads as empty. The record as the tables read it."""
    missing = record.missing()
    if missing is not None:
        raise ReportError(f"{where}: missing field '{missing}'")
    record.run_dir = record.run_dir or where
    return record.to_json()


def check_results(data: Any, where: str) -> dict[str, Any]:
    """A results.json object (from a file, W&B or a test) read as a record and checked."""
    try:
        return check_record(RunRecord.from_json(data, where), where)
    except RunRecordError as err:
        raise ReportError(str(err)) from None


def read_results(path: Path) -> dict[str, Any]:
    """One results.json, checked."""
    try:
        return check_record(RunRecord.read(path), str(path))
    except RunRecordError as err:
        raise ReportError(str(err)) from None


def load_results(dirs: list[str | Path]) -> list[dict[str, Any]]:
    """Every run of the given directories, in natural path order."""
    return [read_results(path) for path in find_results(dirs)]
