"""One sweep cell on a Lightning Fabric world: load, calibrate, prune, save, evaluate, record.

Every process loads the model and prunes it with statistics summed across processes, so every
process ends with the same masks; rank 0 writes results.json, the W&B run and the saved model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tamp.data.sources import calibration_samples
from tamp.models.named import load_named_model
from tamp.pipeline.checkpoint import PruneCheckpoint
from tamp.schema import RunConfig, validate
from tamp.tracking.results import ResultsFile, block_index, projection_kind, write_json_atomic

log = logging.getLogger("tamp")


def make_fabric(settings: RunConfig):
    """The Fabric world the runner config asks for (devices were checked by tamp.checks)."""
    from lightning.fabric import Fabric

    r = settings.runner
    return Fabric(accelerator=r.accelerator, devices=r.devices, strategy=r.strategy, precision=r.precision)


def linear_table(report) -> dict[str, dict[str, Any]]:
    table = {}
    for x in report.linears:
        table[x.name] = {
            "planned": x.planned,
            "achieved": x.achieved,
            "numel": x.numel,
            "block": block_index(x.name),
            "kind": projection_kind(x.name),
        }
    return table


def _dense_cache_key(settings: RunConfig) -> str:
    key = {"model": settings.model.name, "eval": OmegaConf.to_container(OmegaConf.structured(settings.eval))}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _is_dense(settings: RunConfig) -> bool:
    return settings.method.pruner == "none"


def _dense_cache(settings: RunConfig, cache_dir: Path) -> Path:
    return cache_dir / f"dense_{_dense_cache_key(settings)}.json"


def dense_reference(settings: RunConfig, cache_dir: str | Path | None, metrics: dict) -> dict | None:
    """The Rel.% reference known now: this cell's own scores if it is dense, else the sweep's dense scores."""
    if _is_dense(settings):  # unless it is a saved pruned checkpoint evaluated as is
        return metrics if (metrics.get("sparsity") or {}).get("achieved", 0.0) < 0.01 else None
    cached = _dense_cache(settings, Path(cache_dir)) if cache_dir else None
    return json.loads(cached.read_text()) if cached is not None and cached.exists() else None


def evaluate_model(settings: RunConfig, model, processor, adapter, fabric, cache_dir: Path | None) -> dict:
    """lmms-eval scores (rank 0 gets them); a dense model's scores are reused within a sweep."""
    e = settings.eval
    if not e.tasks:
        return {}
    cached = _dense_cache(settings, cache_dir) if (_is_dense(settings) and cache_dir) else None
    if cached is not None and cached.exists():
        log.info("dense scores reused from %s", cached)
        return json.loads(cached.read_text())
    from tamp.eval.evaluate import evaluate

    os.environ.update({k: str(v) for k, v in e.env.items()})  # e.g. TAMP_ZOO_DIR, the zoo build's data
    out = evaluate(
        model,
        processor,
        adapter,
        tasks=list(e.tasks),
        include_paths=list(e.include_paths),
        limit=e.limit,
        batch_size=e.batch_size,
        gen_kwargs={"max_new_tokens": e.max_new_tokens},
        rank=fabric.global_rank,
        world_size=fabric.world_size,
    )
    if cached is not None and fabric.global_rank == 0:
        write_json_atomic(cached, out)
    return out


def run_cell(fabric, cfg: DictConfig, run_dir: str | Path, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """The whole cell inside the Fabric world; returns the results dict (rank 0's is authoritative)."""
    import tamp
    from tamp.pipeline.distributed import fabric_reducer, shard
    from tamp.tracking.wandb_keys import group_name, run_name
    from tamp.tracking.wandb_logger import WandbRun

    settings = validate(cfg)
    is_main = fabric.global_rank == 0
    run_dir = Path(run_dir)
    base = {
        "experiment": settings.experiment,
        "model": {"name": settings.model.name, "family": settings.model.family},
        "method": {
            "name": settings.method.name,
            "pruner": settings.method.pruner,
            "allocation": settings.method.allocation.name,
            "tokens": settings.method.tokens.name,
        },
        "sparsity": {"target": settings.sparsity.target, "pattern": settings.sparsity.pattern},
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    results = ResultsFile(run_dir, base)
    tracker = None
    if is_main:
        results.start()
        tags = [settings.method.name, f"sparsity={settings.sparsity.target}", settings.model.name]
        s_ = settings.sparsity
        name = run_name(settings.model.name, settings.method.name, s_.target, s_.pattern, dense=_is_dense(settings))
        group = group_name(settings.logger.wandb.group, Path(cache_dir).parent if cache_dir else None)
        tracker = WandbRun(settings.logger.wandb, name, base["config"], run_dir, tags, group)
    failed = True
    try:
        start = time.perf_counter()
        if settings.eval.tasks:  # an unknown task fails now, not after an hour of pruning
            from tamp.eval.evaluate import resolve_tasks

            resolve_tasks(list(settings.eval.tasks), list(settings.eval.include_paths))
        loaded = load_named_model(settings.model_settings())
        model, processor, adapter = loaded.model, loaded.processor, loaded.adapter
        results.data["model"]["family"] = adapter.family
        prune_cfg = settings.prune_config()
        if prune_cfg.device == "auto":
            prune_cfg.device = str(fabric.device)
        prune_cfg.checkpoint_dir = str(run_dir / "checkpoint")
        prune_cfg.keep_masks = settings.runner.save_masks
        report = None
        metrics: dict[str, Any] = {"timings": {}}
        if settings.method.pruner != "none":
            calib = calibration_samples(settings.calib_settings(), adapter, loaded.examples)
            samples = shard(calib, fabric.global_rank, fabric.world_size)
            report = tamp.prune(
                model, samples, prune_cfg, adapter=adapter, reducer=fabric_reducer(fabric), checkpoint_writer=is_main
            )
            metrics["sparsity"] = {**base["sparsity"], "achieved": report.achieved, "planned": report.planned}
            metrics["sparsity_per_linear"] = linear_table(report)
            metrics["allocation_scores"] = report.allocation_scores
            metrics["timings"].update(report.timings)
            if is_main:
                (run_dir / "prune_report.md").write_text(report.summary() + "\n")
        else:  # nothing pruned here, but a saved pruned checkpoint is sparse: measure what is evaluated
            from tamp.models.measure import unpruned_run_sparsity

            r = settings.runner
            metrics["sparsity"], metrics["sparsity_per_linear"] = unpruned_run_sparsity(
                adapter, settings.model.name, base["sparsity"], r.targets, r.ignore
            )
        if is_main:
            from tamp.models.save_run import save_run_model

            save_run_model(settings, model, processor, adapter, run_dir, metrics, report)
        eval_start = time.perf_counter()
        scores = evaluate_model(settings, model, processor, adapter, fabric, Path(cache_dir) if cache_dir else None)
        metrics["timings"]["eval_s"] = time.perf_counter() - eval_start
        metrics["timings"]["total_s"] = time.perf_counter() - start
        metrics["scores"] = scores.get("scores", {})
        metrics["primary_metric"] = scores.get("primary_metric", {})
        failed = False
        if is_main:
            tracker.log_results(results.complete(metrics), dense_reference(settings, cache_dir, metrics))
            PruneCheckpoint(run_dir / "checkpoint", "", writer=True).clear()  # finished: weights are final
        # spawned workers hand their return value through a pipe: keep it small, the file has the rest
        return {"status": "completed", "results": str(results.path)}
    except BaseException as err:
        if is_main:
            data = results.fail(err)
            if tracker is not None:
                tracker.log_results(data)
        raise
    finally:
        if tracker is not None:
            tracker.finish(failed)
