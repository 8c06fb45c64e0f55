"""One W&B run per sweep cell through W&B's own client; offline unless configured otherwise.

W&B's console output (a banner, then run history and summary tables: 28-32 lines a cell) is off
unless asked for with WANDB_SILENT=false or WANDB_QUIET=false (any WANDB_SILENT / WANDB_QUIET in the
environment is left to W&B itself); one log line says where the run is and how to upload it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from tamp.tracking.run_record import RunRecord
from tamp.tracking.wandb_keys import Results, summary_metrics

log = logging.getLogger(__name__)

#: results.json fields a W&B run does not keep under summary["results"]: the config is the W&B run's config
NOT_IN_SUMMARY = ("config", "versions")


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        from wandb.apis import InternalApi

        return bool(InternalApi().api_key)
    except Exception:  # noqa: BLE001 - any failure to find a key means "no key"
        return False


def console_settings() -> Any:
    """wandb.Settings that silence W&B's console output, or None when the environment decides."""
    if any(os.environ.get(var, "") != "" for var in ("WANDB_SILENT", "WANDB_QUIET")):
        return None
    import wandb

    return wandb.Settings(silent=True)


def resolve_mode(mode: str) -> str:
    """online without credentials falls back to offline (with a warning) instead of prompting."""
    if mode == "online" and not _has_credentials():
        log.warning("logger.wandb.mode=online but no W&B credentials (WANDB_API_KEY or `wandb login`): offline")
        return "offline"
    return mode


class WandbRun:
    """A thin owner of one wandb run: always finished, with exit code 1 when the cell failed."""

    def __init__(
        self,
        cfg: Any,
        name: str,
        config: dict[str, Any],
        run_dir: str | Path,
        tags: list[str],
        group: str | None = None,
    ) -> None:
        """`group` overrides cfg.group (the runner passes the experiment or the sweep). With logging off
        (`logger=none`) wandb is not imported: a machine without it runs the cell."""
        self.run = None
        self._where = ""
        self._configured = list(cfg.tags)
        if not cfg.enabled:
            return
        import wandb

        self._wandb = wandb
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=group or cfg.group,
            name=name,
            tags=[*cfg.tags, *tags],
            config=config,
            dir=str(run_dir),
            mode=resolve_mode(cfg.mode),
            reinit="finish_previous",
            settings=console_settings(),
        )
        self._where = self._describe()

    def _describe(self) -> str:
        """`W&B run <url>` online; the offline run's folder and the command that uploads it; "" disabled."""
        run = self.run
        if run is None or getattr(run, "disabled", False):
            return ""
        if not run.offline:
            return f"W&B run {run.url}"
        folder = Path(run.dir).parent
        return f"W&B offline run {folder} (upload: wandb sync {folder})"

    def log_results(self, record: RunRecord, dense: Results | None = None) -> None:
        """Flat comma-free keys (with Rel.% when the dense results are given) plus the raw results.

        The raw fields go under one summary key, `results`, which `tamp.report` reads back.
        """
        if self.run is None:
            return
        self.run.log(summary_metrics(record, dense))
        raw = record.to_json()
        self.run.summary["results"] = {k: v for k, v in raw.items() if k not in NOT_IN_SUMMARY}
        linears = record.sparsity_per_linear
        patterns = any(v.pattern for v in linears.values())  # N:M runs: each linear's planned and achieved N:M
        rows = [
            [name, v.block, v.kind, v.planned, v.achieved, v.numel, *([v.pattern, v.achieved_pattern] if patterns else [])]
            for name, v in linears.items()
        ]
        if rows:
            columns = ["linear", "block", "kind", "planned", "achieved", "numel",
                       *(["pattern", "achieved_pattern"] if patterns else [])]
            self.run.log({"sparsity_per_linear": self._wandb.Table(columns=columns, data=rows)})

    def rename(self, name: str) -> None:
        """A new display name (a sparse checkpoint is known as such only once its weights are measured)."""
        if self.run is not None and self.run.name != name:
            self.run.name = name

    def retag(self, tags: list[str]) -> None:
        """The run's own tags replaced (a sparse checkpoint is tagged by what it is once measured); the
        configured `logger.wandb.tags` are kept."""
        if self.run is not None:
            self.run.tags = tuple(dict.fromkeys([*self._configured, *tags]))

    def finish(self, failed: bool) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None
            if self._where:
                log.info(self._where)
