"""results.json: written atomically, "running" until the run completes, "failed" with the error otherwise.

A reader (the report, a person) can trust `status == "completed"`: nothing half-written ever has it.
What the file holds is `tamp.tracking.run_record.RunRecord`; this module owns its life on disk.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from tamp.tracking.run_record import RESULTS_FILE, RUNNING, RunRecord

_VERSIONED = ("tamp", "torch", "torchvision", "transformers", "lightning", "hydra-core", "lmms-eval", "wandb")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class ResultsFile:
    """The run's results.json through its life: running -> completed | failed."""

    def __init__(self, run_dir: str | Path, base: RunRecord | Mapping[str, Any]) -> None:
        """`base` says what runs (a record, or its JSON form); status and error start as running, none."""
        self.path = Path(run_dir) / RESULTS_FILE
        record = base if isinstance(base, RunRecord) else RunRecord.from_json(dict(base))
        self.record = replace(record, status=RUNNING, error=None, run_dir=str(run_dir),
                              versions=record.versions or package_versions())

    @property
    def data(self) -> dict[str, Any]:
        """The record as results.json holds it."""
        return self.record.to_json()

    def start(self) -> None:
        self.record.write(self.path)

    def complete(self, **results: Any) -> dict[str, Any]:
        """Record the run's measurements (RunRecord field names) as completed."""
        self.record = self.record.completed(**results)
        self.record.write(self.path)
        return self.record.to_json()

    def fail(self, error: BaseException | str) -> dict[str, Any]:
        """"failed" with the error's first line; "interrupted" (resumable) for Ctrl-C, SIGTERM, a lost worker."""
        self.record = self.record.failed(error)
        self.record.write(self.path)
        return self.record.to_json()
