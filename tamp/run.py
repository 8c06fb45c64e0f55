"""`python -m tamp.run`: compose the config with Hydra, prune, write results into the run directory.

The Hydra entry point is a thin shell around `run(cfg)`, which tests call directly with a composed
config.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("tamp")


def build_prune_config(cfg: DictConfig) -> dict[str, Any]:
    """The `tamp.prune` config from the composed Hydra config (method, sparsity, runner, seed)."""
    method = OmegaConf.to_container(cfg.method, resolve=True)
    runner = OmegaConf.to_container(cfg.runner, resolve=True)
    return {
        "method": method,
        "sparsity": OmegaConf.to_container(cfg.sparsity, resolve=True),
        "seed": int(cfg.seed),
        **runner,
    }


def load(cfg: DictConfig):
    """(model, adapter, samples) for the configured model and calibration set."""
    from tamp.models.loading import load_model
    from tamp.models.tiny import build_tiny

    name = str(cfg.model.name)
    if name.startswith("tiny:"):
        bundle = build_tiny(name.split(":", 1)[1], seed=int(cfg.seed))
        model, adapter, examples = bundle.model, bundle.adapter, bundle.examples()
    else:
        model, _processor, adapter = load_model(name, cfg.model.get("family"), cfg.model.get("dtype", "bfloat16"))
        examples = []
    if cfg.calib.name != "tiny":
        raise ValueError(f"calib.name='{cfg.calib.name}' is unknown; valid: tiny")
    if not examples:
        raise ValueError("calib=tiny needs a tiny model (model.name=tiny:<family>)")
    n = int(cfg.calib.num_samples)
    samples = [adapter.encode(e.messages, e.images, e.videos, e.audios) for e in examples]
    samples = [samples[i % len(samples)] for i in range(n)]
    return model, adapter, samples


def run(cfg: DictConfig, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Prune the configured model and return the metrics; writes results.json and report.md."""
    import tamp

    model, adapter, samples = load(cfg)
    report = tamp.prune(model, samples, build_prune_config(cfg), adapter=adapter)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    metrics = {
        "status": "completed",
        "model": {"name": str(cfg.model.name), "family": adapter.family},
        "method": {
            "name": report.method,
            "pruner": report.pruner,
            "allocation": report.allocation,
            "tokens": report.tokens,
        },
        "sparsity": {"target": report.target, "pattern": report.pattern, "achieved": report.achieved},
        "sparsity_per_linear": report.per_linear(),
        "timings": report.timings,
        "peak_rss_mb": peak_rss_mb,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(report.summary() + "\n")
        _write_json_atomic(out / "results.json", metrics)
    print(report.summary().split("\n\n")[0])
    print(f"peak RSS {peak_rss_mb:.0f} MiB" + (f"; results in {out_dir}" if out_dir else ""))
    return metrics


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


@hydra.main(config_path="../conf", config_name="run", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    try:
        run(cfg, HydraConfig.get().runtime.output_dir)
    except (ValueError, RuntimeError, OSError) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"tamp: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
