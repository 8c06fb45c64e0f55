"""One sweep cell on a Lightning Fabric world: load, calibrate, prune, save, evaluate, record.

Every process loads the model and prunes it with statistics summed across processes, so every
process ends with the same masks; rank 0 writes results.json, the W&B run and the saved model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from tamp.pipeline.checkpoint import PruneCheckpoint
from tamp.schema import RunConfig, validate
from tamp.tracking.results import ResultsFile, block_index, projection_kind, write_json_atomic

log = logging.getLogger("tamp")


def make_fabric(settings: RunConfig):
    """The Fabric world the runner config asks for (devices absent here: a one-line error)."""
    from lightning.fabric import Fabric

    r = settings.runner
    if r.accelerator in ("cuda", "gpu") and not torch.cuda.is_available():
        raise ValueError(f"runner.accelerator={r.accelerator} but no CUDA device is present; use runner=cpu")
    if r.accelerator in ("cuda", "gpu") and isinstance(r.devices, int) and r.devices > torch.cuda.device_count():
        raise ValueError(
            f"runner.devices={r.devices} but only {torch.cuda.device_count()} CUDA devices are present"
        )
    return Fabric(accelerator=r.accelerator, devices=r.devices, strategy=r.strategy, precision=r.precision)


def load_model_and_processor(settings: RunConfig):
    """(model, processor, adapter, tiny bundle or None) for model.name (a Hub id, a directory, tiny:..., zoo)."""
    from tamp.models.loading import load_model
    from tamp.models.tiny import build_tiny

    name = settings.model.name
    if name.startswith("tiny:"):
        bundle = build_tiny(name.split(":", 1)[1], seed=settings.seed)
        return bundle.model, bundle.processor, bundle.adapter, bundle
    if name == "zoo" or name.startswith("zoo:"):  # the toy zoo's model, built on first use
        from tamp.zoo.cache import load_zoo

        model, processor, adapter = load_zoo(name, settings.paths.cache_dir, settings.model.dtype,
                                             progress=settings.runner.progress)
        return model, processor, adapter, None
    model, processor, adapter = load_model(
        name, settings.model.family, settings.model.dtype, trust_remote_code=settings.model.trust_remote_code
    )
    return model, processor, adapter, None


def build_samples(settings: RunConfig, adapter, bundle) -> list:
    """The calibration samples of calib.* for this adapter (all of them; the caller shards)."""
    calib = settings.calib
    if calib.source == "tiny":
        if bundle is None:
            raise ValueError("calib.source=tiny needs a tiny model (model.name=tiny:<family>)")
        examples = bundle.examples()
        encoded = [adapter.encode(e.messages, e.images, e.videos, e.audios) for e in examples]
        return [encoded[i % len(encoded)] for i in range(calib.num_samples)]
    from tamp.data.calib import build_calibration

    fields = OmegaConf.to_container(OmegaConf.structured(calib), resolve=True)
    fields["progress"] = fields["progress"] and settings.runner.progress
    return build_calibration(adapter, fields)


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


def evaluate_model(settings: RunConfig, model, processor, adapter, fabric, cache_dir: Path | None) -> dict:
    """lmms-eval scores (rank 0 gets them); a dense model's scores are reused within a sweep."""
    e = settings.eval
    if not e.tasks:
        return {}
    dense = settings.method.pruner == "none"
    cached = cache_dir / f"dense_{_dense_cache_key(settings)}.json" if (dense and cache_dir) else None
    if cached is not None and cached.exists():
        log.info("dense scores reused from %s", cached)
        return json.loads(cached.read_text())
    from tamp.eval.evaluate import evaluate

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
        name = f"{settings.method.name}_{settings.sparsity.target}"
        tracker = WandbRun(settings.logger.wandb, name, base["config"], run_dir, tags)
    failed = True
    try:
        start = time.perf_counter()
        if settings.eval.tasks:  # an unknown task fails now, not after an hour of pruning
            from tamp.eval.evaluate import resolve_tasks

            resolve_tasks(list(settings.eval.tasks), list(settings.eval.include_paths))
        model, processor, adapter, bundle = load_model_and_processor(settings)
        results.data["model"]["family"] = adapter.family
        prune_cfg = settings.prune_config()
        if prune_cfg.device == "auto":
            prune_cfg.device = str(fabric.device)
        prune_cfg.checkpoint_dir = str(run_dir / "checkpoint")
        metrics: dict[str, Any] = {"timings": {}}
        if settings.method.pruner != "none":
            samples = shard(build_samples(settings, adapter, bundle), fabric.global_rank, fabric.world_size)
            report = tamp.prune(
                model, samples, prune_cfg, adapter=adapter, reducer=fabric_reducer(fabric), checkpoint_writer=is_main
            )
            metrics["sparsity"] = {**base["sparsity"], "achieved": report.achieved, "planned": report.planned}
            metrics["sparsity_per_linear"] = linear_table(report)
            metrics["allocation_scores"] = report.allocation_scores
            metrics["timings"].update(report.timings)
            if is_main:
                (run_dir / "prune_report.md").write_text(report.summary() + "\n")
        else:
            metrics["sparsity"] = {**base["sparsity"], "target": 0.0, "achieved": 0.0}
        if settings.runner.save_model and is_main:
            from tamp.models.saving import save_pruned

            save_pruned(model, processor, run_dir / "model", metrics.get("sparsity_per_linear", {}))
        eval_start = time.perf_counter()
        scores = evaluate_model(settings, model, processor, adapter, fabric, Path(cache_dir) if cache_dir else None)
        metrics["timings"]["eval_s"] = time.perf_counter() - eval_start
        metrics["timings"]["total_s"] = time.perf_counter() - start
        metrics["scores"] = scores.get("scores", {})
        metrics["primary_metric"] = scores.get("primary_metric", {})
        failed = False
        if is_main:
            tracker.log_results(results.complete(metrics))
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
