"""results.json: written atomically, "running" until the run completes, "failed" with the error otherwise.

A reader (the report, a person) can trust `status == "completed"`: nothing half-written ever has it.
"""

from __future__ import annotations

import json
import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
_VERSIONED = ("tamp", "torch", "torchvision", "transformers", "lightning", "hydra-core", "lmms-eval", "wandb")


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write to a temporary name in the same directory and rename: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)
    return path


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def projection_kind(name: str) -> str:
    """'...layers.3.self_attn.q_proj' -> 'q_proj' (the figure 7 grouping)."""
    return name.rsplit(".", 1)[-1]


def block_index(name: str) -> int | None:
    found = re.search(r"layers\.(\d+)\.", name)
    return int(found.group(1)) if found else None


class ResultsFile:
    """The run's results.json through its life: running -> completed | failed."""

    def __init__(self, run_dir: str | Path, base: dict[str, Any]) -> None:
        self.path = Path(run_dir) / RESULTS_FILE
        self.data: dict[str, Any] = {"status": "running", "error": None, "run_dir": str(run_dir), **base}
        self.data.setdefault("versions", package_versions())

    def start(self) -> None:
        write_json_atomic(self.path, self.data)

    def complete(self, metrics: dict[str, Any]) -> dict[str, Any]:
        self.data.update(metrics)
        self.data["status"] = "completed"
        write_json_atomic(self.path, self.data)
        return self.data

    def fail(self, error: BaseException | str) -> dict[str, Any]:
        """"failed" with the error's first line; "interrupted" (resumable) for Ctrl-C, SIGTERM, a lost worker."""
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        self.data["status"] = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        self.data["error"] = f"{type(error).__name__}: {message}" if isinstance(error, BaseException) else message
        write_json_atomic(self.path, self.data)
        return self.data
