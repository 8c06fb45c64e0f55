"""One sweep cell on a Lightning Fabric world: load, calibrate, prune, save, evaluate, record.

Every process loads the model and prunes it with statistics summed across processes, so every
process ends with the same masks; rank 0 writes results.json, the W&B run and the saved model.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tamp.cli.dense_cache import DenseCache
from tamp.cli.schema import CHECKPOINT_DIR, RunConfig, validate
from tamp.models.named import load_named_model, scheme_of
from tamp.pipeline.checkpoint import PruneCheckpoint
from tamp.progress import quiet_library_bars
from tamp.run_names import measured_sparse
from tamp.tracking.results import ResultsFile
from tamp.tracking.run_record import MethodId, ModelId, RunRecord, Sparsity

log = logging.getLogger("tamp")
RESOLVED_CONFIG = "config_resolved.yaml"
WANDB_TAG_CHARS = 64


class SealedConfig:
    """A run's config resolved and validated in the launching process, carried to the workers as one object.

    Resolved here because `${hydra:...}` and `${now:...}` only resolve where Hydra runs; one opaque
    object because launchers rebuild the mappings they are given (Lightning's CPU ddp_spawn turns a
    DictConfig into a plain dict), which would drop every component's settings type. It holds the
    typed run config the launching process checked (`settings`), so a worker neither validates nor
    resolves the method again, and the resolved config as results.json records it (`config`).
    """

    def __init__(self, cfg: DictConfig, settings: RunConfig | None = None) -> None:
        self.config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        self.settings = settings if settings is not None else validate(cfg)

    @staticmethod
    def of(cfg: DictConfig | SealedConfig) -> SealedConfig:
        return cfg if isinstance(cfg, SealedConfig) else SealedConfig(cfg)


def make_fabric(settings: RunConfig):
    """The Fabric world the runner config asks for (devices were checked by tamp.cli.checks)."""
    from lightning.fabric import Fabric

    r = settings.runner
    return Fabric(accelerator=r.accelerator, devices=r.devices, strategy=r.strategy, precision=r.precision)


def run_variants(settings: RunConfig) -> dict[str, str]:
    """Which variant of each component this cell runs (results.json `variants`, the report's footnote).

    The method's components say it themselves (`variant_notes`); the calibration draw counts where
    the method reads calibration data from a conversation set.
    """
    from tamp.data.calib import draw_note
    from tamp.pruning.registry import PRUNERS

    m = settings.method
    if m.pruner == "none":
        return {}
    notes = m.variants()
    reads_data = getattr(PRUNERS.get(m.pruner).factory, "needs_stats", True) or m.allocation.name != "uniform"
    if reads_data and settings.calib.source in ("llava_json", "hf"):
        notes["calibration"] = draw_note(settings.calib)
    return notes


def start_record(settings: RunConfig, cfg: DictConfig | dict[str, Any]) -> RunRecord:
    """What this cell runs, as its results.json says from the first write on (`cfg`: the run's config)."""
    m = settings.method
    return RunRecord(
        experiment=settings.experiment,
        model=ModelId(settings.model.name, settings.model.family),
        method=MethodId(m.name, m.pruner, m.allocation.name, m.tokens.name),
        sparsity=Sparsity(settings.sparsity.target, settings.sparsity.pattern),
        config=cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
        variants=run_variants(settings),
    )


def table_columns(settings: RunConfig, scores: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's table columns (tamp.eval.columns) from the suite's declaration and lmms-eval's results."""
    from tamp.eval.columns import run_columns

    e = settings.eval
    columns = run_columns(
        list(e.tasks), list(e.columns), scores.get("scores", {}), scores.get("primary_metric", {}),
        scores.get("groups", {}),
    )
    return [c.to_json() for c in columns]


def _prunes_nothing(settings: RunConfig) -> bool:
    """The dense preset (or any method with pruner `none`): its scores are the sweep's dense reference."""
    return settings.method.pruner == "none"


def dense_cache(settings: RunConfig, config: dict[str, Any], cache_dir: str | Path | None) -> DenseCache | None:
    """The sweep's dense-score entry this cell's table is compared with (None outside a sweep)."""
    if not cache_dir:
        return None
    tiny_seed = settings.seed if scheme_of(settings.model.name) == "tiny" else None  # weights drawn with the seed
    return DenseCache.for_cell(config, tiny_seed, cache_dir)


def dense_reference(settings: RunConfig, cache: DenseCache | None, record: RunRecord) -> RunRecord | dict | None:
    """The Rel.% reference known now: this cell's own scores if it is dense, else the sweep's dense scores."""
    if _prunes_nothing(settings):  # unless it is a saved pruned checkpoint evaluated as is (tamp.run_names)
        return record if not measured_sparse(record.sparsity.achieved) else None
    cached = cache.read() if cache is not None else None
    return cached["scores"] if cached is not None else None


def evaluate_model(
    settings: RunConfig, model, processor, adapter, fabric, cache: DenseCache | None
) -> tuple[dict, str | None]:
    """(lmms-eval scores, the device they were computed on); a dense model's scores are reused in a sweep.

    The device is `runner.eval_device` (auto: this process's Fabric device); the whole model moves
    there first, whatever the pruning left where (offload keeps the decoder blocks in CPU memory).
    Reused scores keep the device they were computed on.
    """
    e = settings.eval
    if not e.tasks:
        return {}, None
    cache = cache if _prunes_nothing(settings) else None
    cached = cache.read() if cache is not None else None
    reuse = cached is not None
    if fabric.world_size > 1:  # every rank takes rank 0's decision: lmms-eval synchronises the ranks
        reuse = fabric.broadcast(reuse, src=0)
        if reuse:  # rank 0's copy (every rank takes part in a broadcast)
            cached = fabric.broadcast(cached, src=0)
    if reuse:
        log.info("dense scores reused from %s (same model, eval and precision settings)", cache.path)  # type: ignore[union-attr]
        return cached["scores"], cached["device"]  # type: ignore[index]
    from tamp.eval.doc_media import VideoSampling
    from tamp.eval.evaluate import evaluate
    from tamp.eval.placement import eval_device, place_for_eval

    device = place_for_eval(model, eval_device(settings.runner.eval_device, fabric.device))
    os.environ.update({k: str(v) for k, v in e.env.items()})  # e.g. TAMP_ZOO_DIR, the zoo build's data
    out = evaluate(
        model,
        processor,
        adapter,
        tasks=list(e.tasks),
        include_paths=list(e.include_paths),
        limit=e.limit,
        batch_size=e.batch_size,
        # set: overrides every task's own max_new_tokens; null (the paper suites): each task's own
        gen_kwargs={"max_new_tokens": e.max_new_tokens} if e.max_new_tokens is not None else None,
        rank=fabric.global_rank,
        world_size=fabric.world_size,
        video=VideoSampling(e.video.num_frames, e.video.fps),
        device=device,
    )
    if cache is not None and fabric.global_rank == 0:
        cache.write(out, str(device))
    return out, str(device)


def score_cache(settings: RunConfig, cache_dir: str | Path | None, fabric, ids: list[Any]):
    """The sweep's allocation-score store this cell shares (tamp.cli.score_cache; None outside a sweep).

    Its readable key items are the run's words for what tamp.prune also digests by content: the model
    (name, family, dtype, weights identity), the precision and the calibration draw.
    """
    if not cache_dir:
        return None
    import hashlib

    from tamp.cli.dense_cache import weights_identity
    from tamp.cli.score_cache import ScoreCache
    from tamp.pipeline.distributed import fabric_broadcast

    m, c = settings.model, settings.calib
    context = {
        "model.name": str(m.name), "model.family": str(m.family), "model.dtype": str(m.dtype),
        "model.trust_remote_code": str(m.trust_remote_code), "model.use_audio_in_video": str(m.use_audio_in_video),
        "runner.precision": str(settings.runner.precision), "calib.source": str(c.source), "calib.seed": str(c.seed),
        "calib.ids": hashlib.sha256(json.dumps(ids, default=str).encode()).hexdigest()[:16],
    }
    weights = weights_identity(str(m.name))
    if weights is not None:
        context["model.weights"] = weights
    return ScoreCache(cache_dir, context, fabric.global_rank, fabric.world_size, fabric_broadcast(fabric))


def calibration_record(settings: RunConfig, ids: list[Any]) -> dict[str, Any]:
    """What results.json says about the calibration draw: which records the seed picked."""
    c = settings.calib
    return {"source": c.source, "seed": c.seed, "ids": ids if any(i is not None for i in ids) else []}


def save_resolved_config(config: dict[str, Any], run_dir: Path) -> None:
    """The resolved config, printed to the log and saved as RUN_DIR/config_resolved.yaml (Hydra's
    .hydra/config.yaml keeps the interpolations: `${seed}`, `${paths.data_dir}`, ...). Written beside and
    renamed (tamp.io): a link put at its name is replaced, never written through."""
    import yaml

    from tamp.io import write_text_atomic

    path = run_dir / RESOLVED_CONFIG
    write_text_atomic(path, OmegaConf.to_yaml(OmegaConf.create(config)))
    def flow(value: Any) -> str:
        if not isinstance(value, (dict, list)):
            return json.dumps(value)
        return yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()

    compact = [f"  {key}: {flow(value)}" for key, value in config.items()]  # one line per group: sweeps stay readable
    log.info("resolved config (saved to %s):\n%s", path, "\n".join(compact))


def _recorded(err: BaseException) -> BaseException:
    """The error as results.json records it: a cell that submitit is requeuing is interrupted, not failed."""
    from tamp.cli.launch import requeue_signalled

    signalled = requeue_signalled()
    if signalled is None:
        return err
    return KeyboardInterrupt(f"{signalled} (time limit or pre-emption): submitit requeues the job while it has "
                             "requeues left; it, or the same command, resumes from the checkpoint")


def run_cell(
    fabric, cfg: DictConfig | SealedConfig, run_dir: str | Path, cache_dir: str | Path | None = None
) -> dict[str, Any]:
    """The whole cell inside the Fabric world; returns the results dict (rank 0's is authoritative)."""
    with quiet_library_bars():  # off a terminal: no "Loading weights" / "Writing model shards" bars in the log
        return _run_cell(fabric, cfg, run_dir, cache_dir)


def _run_cell(fabric, cfg: DictConfig | SealedConfig, run_dir: str | Path, cache_dir: str | Path | None = None) -> dict[str, Any]:
    import tamp
    from tamp.cli.launch import joined_world
    from tamp.pipeline.distributed import calibration_share, fabric_broadcast, fabric_reducer
    from tamp.run_names import name_of_config, name_of_record
    from tamp.tracking.wandb_keys import group_name, run_tags
    from tamp.tracking.wandb_logger import WandbRun

    joined_world()
    sealed = SealedConfig.of(cfg)
    settings = sealed.settings
    is_main = fabric.global_rank == 0
    run_dir = Path(run_dir)
    results = ResultsFile(run_dir, start_record(settings, sealed.config))
    tracker = None
    if is_main:
        results.start()
        save_resolved_config(results.record.config or {}, run_dir)
        cell = name_of_config(results.record.config or {})
        tags = run_tags(cell, results.record.config or {}, settings.model.name)
        tags = [tag[:WANDB_TAG_CHARS] for tag in tags]  # W&B refuses the run for a longer tag (a checkpoint path)
        group = group_name(settings.logger.wandb.group, Path(cache_dir).parent if cache_dir else None)
        tracker = WandbRun(settings.logger.wandb, cell.wandb(settings.model.name), results.record.config or {},
                           run_dir, tags, group)
    failed = True
    try:
        start = time.perf_counter()
        if settings.eval.tasks:  # an unknown task fails now, not after an hour of pruning
            from tamp.eval.evaluate import resolve_tasks
            from tamp.eval.judges import check_judges

            resolve_tasks(list(settings.eval.tasks), list(settings.eval.include_paths))
            check_judges(settings.eval.tasks, {**os.environ, **settings.eval.env})
        loaded = load_named_model(settings.model_settings())
        model, processor, adapter = loaded.model, loaded.processor, loaded.adapter
        if settings.model.use_audio_in_video:
            from tamp.cli.checks import check_audio_in_video

            check_audio_in_video(True, adapter)
            adapter.use_audio_in_video = True
        results.record.model.family = adapter.family
        prune_cfg = settings.prune_config(device=str(fabric.device), run_dir=run_dir)
        pruning = None
        measured: dict[str, Any] = {"timings": {}}  # RunRecord fields, recorded once the cell completes
        asked = results.record.sparsity
        if settings.method.pruner != "none":
            samples, fitted, ids = calibration_share(  # the file parsed once (rank 0); each rank encodes its share
                settings.calib_settings(), adapter, loaded.examples, fabric.global_rank, fabric.world_size,
                fabric_broadcast(fabric), fabric_reducer(fabric),
            )
            measured["calibration"] = {**fitted.as_dict(), **calibration_record(settings, ids)}
            scores_cache = score_cache(settings, cache_dir, fabric, ids)
            pruning = tamp.prune(
                model, samples, prune_cfg, adapter=adapter, reducer=fabric_reducer(fabric), checkpoint_writer=is_main,
                score_store=scores_cache,
            )
            if scores_cache is not None and scores_cache.reused:
                measured["reused"] = dict(scores_cache.reused)
            measured["sparsity"] = replace(asked, achieved=pruning.achieved, planned=pruning.planned, nm=pruning.nm)
            measured["sparsity_per_linear"] = pruning.table()
            measured["allocation_scores"] = pruning.allocation_scores
            measured["timings"].update(pruning.timings)
            if is_main:
                from tamp.io import write_text_atomic

                write_text_atomic(run_dir / "prune_report.md", pruning.summary() + "\n")  # never through a link
        else:  # nothing pruned here, but a saved pruned checkpoint is sparse: measure what is evaluated
            from tamp.tracking.measure import unpruned_run_sparsity

            r = settings.runner
            measured["sparsity"], measured["sparsity_per_linear"] = unpruned_run_sparsity(
                adapter, settings.model.name, asked, r.targets, r.ignore
            )
            if tracker is not None:  # a sparse checkpoint without a manifest: named once its weights are measured
                measured_name = name_of_record({**results.data, "sparsity": measured["sparsity"].to_json()})
                tracker.rename(measured_name.wandb(settings.model.name))
                tracker.retag([tag[:WANDB_TAG_CHARS] for tag in run_tags(
                    measured_name, results.record.config or {}, settings.model.name)])
        if is_main:
            from tamp.cli.save_run import save_run_model

            save_run_model(settings, model, processor, adapter, run_dir, measured["sparsity_per_linear"], pruning,
                           results.record.config or {})
        eval_start = time.perf_counter()
        cache = dense_cache(settings, results.record.config or sealed.config, cache_dir)
        scores, evaluated_on = evaluate_model(settings, model, processor, adapter, fabric, cache)
        measured["devices"] = {"prune": pruning.device if pruning else None, "offload": settings.runner.offload,
                               "eval": evaluated_on, "transfers": pruning.transfers if pruning else {}}
        measured["timings"]["eval_s"] = time.perf_counter() - eval_start
        measured["timings"]["total_s"] = time.perf_counter() - start
        measured["scores"] = scores.get("scores", {})
        measured["primary_metric"] = scores.get("primary_metric", {})
        measured["groups"] = scores.get("groups", {})
        measured["columns"] = table_columns(settings, scores)
        failed = False
        if is_main:
            results.complete(**measured)
            tracker.log_results(results.record, dense_reference(settings, cache, results.record))
            PruneCheckpoint(run_dir / CHECKPOINT_DIR, "", writer=True).clear()  # finished: weights are final
        # spawned workers hand their return value through a pipe: keep it small, the file has the rest
        return {"status": "completed", "results": str(results.path)}
    except BaseException as err:
        if is_main:
            results.fail(_recorded(err))
            if tracker is not None:
                tracker.log_results(results.record)
        raise
    finally:
        if tracker is not None:
            tracker.finish(failed)
