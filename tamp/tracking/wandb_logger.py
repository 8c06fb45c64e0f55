"""One W&B run per sweep cell through W&B's own client; offline unless configured otherwise."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        from wandb.apis import InternalApi

        return bool(InternalApi().api_key)
    except Exception:  # noqa: BLE001 - any failure to find a key means "no key"
        return False


def resolve_mode(mode: str) -> str:
    """online without credentials falls back to offline (with a warning) instead of prompting."""
    if mode == "online" and not _has_credentials():
        log.warning("logger.wandb.mode=online but no W&B credentials (WANDB_API_KEY or `wandb login`): offline")
        return "offline"
    return mode


class WandbRun:
    """A thin owner of one wandb run: always finished, with exit code 1 when the cell failed."""

    def __init__(self, cfg: Any, name: str, config: dict[str, Any], run_dir: str | Path, tags: list[str]) -> None:
        import wandb

        self._wandb = wandb
        self.run = None
        if not cfg.enabled:
            return
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            name=name,
            tags=[*cfg.tags, *tags],
            config=config,
            dir=str(run_dir),
            mode=resolve_mode(cfg.mode),
            reinit="finish_previous",
        )

    def log_results(self, results: dict[str, Any]) -> None:
        if self.run is None:
            return
        summary: dict[str, Any] = {"status": results.get("status")}
        for task, scores in (results.get("scores") or {}).items():
            for metric, value in scores.items():
                if isinstance(value, (int, float)):
                    summary[f"scores/{task}/{metric}"] = value
        sparsity = results.get("sparsity") or {}
        summary.update({f"sparsity/{k}": v for k, v in sparsity.items() if isinstance(v, (int, float))})
        summary.update({f"timings/{k}": v for k, v in (results.get("timings") or {}).items()})
        self.run.log(summary)
        for key in ("model", "method", "sparsity", "primary_metric", "scores", "allocation_scores"):
            if key in results:
                self.run.summary[key] = results[key]
        rows = [
            [name, v.get("block"), v.get("kind"), v.get("planned"), v.get("achieved"), v.get("numel")]
            for name, v in (results.get("sparsity_per_linear") or {}).items()
        ]
        if rows:
            columns = ["linear", "block", "kind", "planned", "achieved", "numel"]
            self.run.log({"sparsity_per_linear": self._wandb.Table(columns=columns, data=rows)})

    def finish(self, failed: bool) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None
