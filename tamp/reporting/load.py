"""Find and read the runner's results.json files; every problem is a one-line ReportError naming the file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

RESULTS_NAME = "results.json"
REQUIRED = (("model", "name"), ("method", "name"), ("sparsity", "target"))


class ReportError(Exception):
    """A user-facing problem with the inputs; main() prints it as one line and exits non-zero."""


def _natural_key(path: Path) -> list[Any]:
    """Hydra multirun dirs are 0, 1, ..., 10: sort them as numbers, not strings."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_results(dirs: list[str | Path]) -> list[Path]:
    """All results.json under the given directories (or the files themselves), each once, in natural order."""
    found: dict[Path, None] = {}
    for entry in map(Path, dirs):
        if entry.is_file():
            found[entry.resolve()] = None
        elif entry.is_dir():
            for path in sorted(entry.rglob(RESULTS_NAME), key=_natural_key):
                found[path.resolve()] = None
        else:
            raise ReportError(f"{entry}: no such file or directory")
    if not found:
        raise ReportError(f"no {RESULTS_NAME} found under {', '.join(map(str, dirs))}")
    return list(found)


def check_results(data: Any, where: str) -> dict[str, Any]:
    """The fields the tables need must be there; the rest is optional and defaulted."""
    if not isinstance(data, dict):
        raise ReportError(f"{where}: expected a JSON object, got {type(data).__name__}")
    for outer, inner in REQUIRED:
        part = data.get(outer)
        if not isinstance(part, dict) or part.get(inner) is None:
            raise ReportError(f"{where}: missing field '{outer}.{inner}'")
    data.setdefault("status", "completed")
    data["run_dir"] = data.get("run_dir") or where
    data["sparsity"].setdefault("pattern", "unstructured")
    for key in ("scores", "primary_metric", "sparsity_per_linear"):
        if not isinstance(data.get(key), dict):
            data[key] = {}
    return data


def read_results(path: Path) -> dict[str, Any]:
    """One results.json, checked."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: malformed JSON ({err})") from None
    except OSError as err:
        raise ReportError(f"{path}: cannot read ({err.strerror})") from None
    if isinstance(data, dict) and not data.get("run_dir"):
        data["run_dir"] = str(path.parent)
    return check_results(data, str(path))


def load_results(dirs: list[str | Path]) -> list[dict[str, Any]]:
    """Every run of the given directories, in natural path order."""
    return [read_results(path) for path in find_results(dirs)]
