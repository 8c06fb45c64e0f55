"""One sweep cell on a Lightning Fabric world: load, calibrate, prune, save, evaluate, record.

The steps are the methods of `Cell`, read top to bottom in `_run_cell`; the functions above it are
what they record (start_record, run_variants, table_columns) and the sweep's caches they share.

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
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from tamp.cli.dense_cache import DenseCache
from tamp.cli.schema import CHECKPOINT_DIR, RunConfig, validate
from tamp.core.progress import quiet_library_bars
from tamp.models.named import LoadedModel, load_named_model, scheme_of
from tamp.pipeline.checkpoint import PruneCheckpoint
from tamp.tracking.results import ResultsFile
from tamp.tracking.run_names import measured_sparse
from tamp.tracking.run_record import MethodId, ModelId, RunRecord, Sparsity

if TYPE_CHECKING:
    from tamp.tracking.prune_summary import PruneSummary
    from tamp.tracking.wandb_logger import WandbRun

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
    """The Fabric world the runner config asks for (devices were checked by tamp.cli.preflight)."""
    from lightning.fabric import Fabric

    r = settings.runner
    return Fabric(accelerator=r.accelerator, devices=r.devices, strategy=r.strategy, precision=r.precision)


def run_variants(settings: RunConfig) -> dict[str, str]:
    """Which variant of each component this cell runs (results.json `variants`, the report's footnote).

    The method's components say it themselves (`variant_notes`); the calibration draw counts where
    the method reads calibration data from a conversation set.
    """
    from tamp.data.calib import draw_note
    from tamp.methods.components import reads_calibration

    m = settings.method
    if m.pruner == "none":
        return {}
    notes = m.variants()
    if reads_calibration(m) and settings.calib.source in ("llava_json", "hf"):
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
    """The Rel.% reference known now: this cell's own scores if it is dense, else the sweep's dense scores (for a
    saved pruned checkpoint, those of the model it was pruned from, with the same eval settings)."""
    if _prunes_nothing(settings) and not measured_sparse(record.sparsity.achieved):
        return record
    if _prunes_nothing(settings):  # a saved pruned checkpoint evaluated as is: its source model's dense run
        source = (record.sparsity.manifest or {}).get("source_model")
        name = source.get("name") if isinstance(source, dict) else None
        if cache is None or not isinstance(name, str) or not name:
            return None
        cache = cache.of_model(name, settings.seed if scheme_of(name) == "tiny" else None)
    cached = cache.read() if cache is not None else None
    return cached["scores"] if cached is not None else None


def sparse_kernels(settings: RunConfig, model, adapter) -> dict[str, Any] | None:
    """runner.sparse_kernels=semi_structured: the pruned (2:4) target linears on the GPU's sparse kernels,
    in place, once the model sits on its evaluation device; what was converted (None: the option is off,
    or nothing is 2:4: the sweep's dense cell). A cell that prunes nothing converts the target linears a
    saved 2:4 checkpoint brings. Inference only: runs after the save."""
    r = settings.runner
    if r.sparse_kernels == "none":
        return None
    from tamp.models.semi_structured import is_two_four, to_semi_structured

    targets = {name: linear for block in adapter.target_linears(r.targets, r.ignore) for name, linear in block.items()}
    if _prunes_nothing(settings):
        targets = {name: linear for name, linear in targets.items() if is_two_four(linear.weight)}
        if not targets:
            return None
    report = to_semi_structured(model, list(targets))
    log.info("runner.sparse_kernels=%s: %d linears on the %s kernels", r.sparse_kernels, len(report.converted),
             report.backend)
    return {"kind": r.sparse_kernels, "backend": report.backend, "converted": len(report.converted),
            "skipped": report.skipped}


def evaluate_model(
    settings: RunConfig, model, processor, adapter, fabric, cache: DenseCache | None
) -> tuple[dict, str | None, dict[str, Any] | None]:
    """(lmms-eval scores, the device they were computed on, the sparse kernels used); a dense model's scores
    are reused in a sweep.

    The device is `runner.eval_device` (auto: this process's Fabric device); the whole model moves
    there first, whatever the pruning left where (offload keeps the decoder blocks in CPU memory).
    Reused scores keep the device they were computed on.
    """
    e = settings.eval
    if not e.tasks:
        return {}, None, None
    cache = cache if _prunes_nothing(settings) else None
    cached = _reused_scores(cache, fabric)
    if cached is not None:
        return cached["scores"], cached["device"], None
    from tamp.eval.doc_media import VideoSampling
    from tamp.eval.evaluate import evaluate
    from tamp.eval.placement import eval_device, place_for_eval

    device = place_for_eval(model, eval_device(settings.runner.eval_device, fabric.device))
    kernels = sparse_kernels(settings, model, adapter)
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
    return out, str(device), kernels


def _reused_scores(cache: DenseCache | None, fabric) -> dict[str, Any] | None:
    """The dense cache's entry (scores, device) if every rank reuses it; rank 0 decides, since lmms-eval
    synchronises the ranks, and every rank takes part in the broadcasts."""
    cached = cache.read() if cache is not None else None
    reuse = cached is not None
    if fabric.world_size > 1:
        reuse = fabric.broadcast(reuse, src=0)
        if reuse:  # rank 0's copy
            cached = fabric.broadcast(cached, src=0)
    if not reuse:
        return None
    log.info("dense scores reused from %s (same model, eval and precision settings)", cache.path)  # type: ignore[union-attr]
    return cached


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


def input_cache(settings: RunConfig, cache_dir: str | Path | None, fabric, loaded: LoadedModel, block_inputs: bool):
    """The sweep's store of encoded calibration samples and block-0 inputs (tamp.cli.input_cache; None outside
    a sweep). Its key items are what changes the encoding: the model (name, family, dtype, weights and config,
    the processor's settings and vocabulary), the calibration settings and file, the precision; the store adds
    the rank and the number of processes, tamp.prune the content digests of the block-0 inputs' key."""
    if not cache_dir:
        return None
    import dataclasses
    import hashlib

    from tamp.cli.dense_cache import weights_identity
    from tamp.cli.input_cache import (
        MEDIA_WALK_LIMIT,
        InputCache,
        files_identity,
        media_identity,
        processor_identity,
    )
    from tamp.pipeline.distributed import fabric_broadcast, fabric_reducer

    m, c = settings.model, settings.calib
    calib = {k: v for k, v in dataclasses.asdict(c).items() if k not in ("name", "progress")}
    config = getattr(loaded.model, "config", None)
    context = {
        "model.name": str(m.name), "model.family": str(loaded.adapter.family), "model.dtype": str(m.dtype),
        "model.trust_remote_code": str(m.trust_remote_code), "model.use_audio_in_video": str(m.use_audio_in_video),
        "model.config": hashlib.sha256((config.to_json_string(use_diff=False) if config is not None else "").encode())
        .hexdigest()[:16],
        "processor": processor_identity(loaded.adapter.processor), "runner.precision": str(settings.runner.precision),
        "calib": json.dumps(calib, sort_keys=True, default=str),
    }
    if c.path:
        context["calib.files"] = files_identity(c.path)
    media = Path(c.media_dir).expanduser() if c.media_dir else (
        Path(c.path).expanduser().parent if c.path and Path(c.path).expanduser().is_file() else None)
    if media is not None and media.is_dir():  # the media the records name: their bytes change the encoding
        context["calib.media"] = media_identity(media)
        if context["calib.media"] is None:
            log.info("calibration samples not shared: %s holds over %d files (each cell encodes its own)",
                     media, MEDIA_WALK_LIMIT)
            return None
    if scheme_of(m.name) == "tiny":  # the weights and the examples are drawn with the run's seed
        context["seed"] = str(settings.seed)
    weights = weights_identity(str(m.name))
    if weights is not None:
        context["model.weights"] = weights
    return InputCache(cache_dir, context, fabric.global_rank, fabric.world_size, fabric_broadcast(fabric),
                      fabric_reducer(fabric), block_inputs=block_inputs)


def shares_block_inputs(settings: RunConfig, device: str) -> bool:
    """`runner.share_block_inputs`: auto shares them where the pruning runs on the CPU (capturing is slow
    there), not on a GPU (capturing 128 samples takes seconds; an entry is gigabytes at full scale)."""
    choice = getattr(settings.runner, "share_block_inputs", "auto")
    if choice == "auto":
        from tamp.pipeline.engine import resolve_device

        return resolve_device(device).type == "cpu"
    return bool(choice)


def calibration_record(settings: RunConfig, ids: list[Any]) -> dict[str, Any]:
    """What results.json says about the calibration draw: which records the seed picked."""
    c = settings.calib
    return {"source": c.source, "seed": c.seed, "ids": ids if any(i is not None for i in ids) else []}


def save_resolved_config(config: dict[str, Any], run_dir: Path) -> None:
    """The resolved config, printed to the log and saved as RUN_DIR/config_resolved.yaml (Hydra's
    .hydra/config.yaml keeps the interpolations: `${seed}`, `${paths.data_dir}`, ...). Written beside and
    renamed (tamp.core.io): a link put at its name is replaced, never written through."""
    import yaml

    from tamp.core.io import write_text_atomic

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


def _run_cell(
    fabric, cfg: DictConfig | SealedConfig, run_dir: str | Path, cache_dir: str | Path | None = None
) -> dict[str, Any]:
    """The cell's steps in order (each a method of Cell); a failure on the way is recorded, then raised."""
    from tamp.cli.launch import joined_world

    joined_world()
    cell = Cell(fabric, SealedConfig.of(cfg), Path(run_dir), cache_dir)
    cell.start()
    failed = True
    try:
        cell.check_tasks()
        loaded = cell.load()
        pruning = None
        if _prunes_nothing(cell.settings):
            cell.measure_unpruned(loaded.adapter)
        else:
            pruning = cell.prune(loaded, *cell.calibrate(loaded))
        cell.save(loaded, pruning)
        cache = cell.evaluate(loaded, pruning)
        failed = False  # scored: the W&B run ends finished even if recording fails (results.json: failed)
        cell.record(cache)
        # spawned workers hand their return value through a pipe: keep it small, the file has the rest
        return {"status": "completed", "results": str(cell.results.path)}
    except BaseException as err:
        cell.fail(err)
        raise
    finally:
        cell.finish(failed)


class Cell:
    """One cell's steps, in the order _run_cell takes them; what one step hands the next is kept here.

    Every rank runs every step (the pruning sums statistics across ranks, lmms-eval splits the tasks);
    only rank 0 (`is_main`) writes: results.json, the resolved config, prune_report.md, the saved model,
    the W&B run. `measured` gathers the RunRecord fields that results.json gets once the cell completes.
    """

    def __init__(self, fabric, sealed: SealedConfig, run_dir: Path, cache_dir: str | Path | None) -> None:
        self.fabric, self.sealed, self.settings = fabric, sealed, sealed.settings
        self.run_dir, self.cache_dir = run_dir, cache_dir
        self.is_main = fabric.global_rank == 0
        self.results = ResultsFile(run_dir, start_record(self.settings, sealed.config))
        self.tracker: WandbRun | None = None
        self.measured: dict[str, Any] = {"timings": {}}
        self.started = 0.0
        #: the sweep's shared calibration samples and block-0 inputs (tamp.cli.input_cache), set by calibrate
        self.inputs: Any = None

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config as results.json records it."""
        return self.results.record.config or {}

    def _tags(self, name: Any) -> list[str]:
        """The W&B tags of the cell named `name`, cut to what W&B accepts (a checkpoint path can be longer)."""
        from tamp.tracking.wandb_keys import run_tags

        return [tag[:WANDB_TAG_CHARS] for tag in run_tags(name, self.config, self.settings.model.name)]

    def start(self) -> None:
        """Rank 0: results.json says running, the resolved config is saved, the W&B run opens; the clock starts."""
        if self.is_main:
            from tamp.tracking.run_names import name_of_config
            from tamp.tracking.wandb_keys import group_name
            from tamp.tracking.wandb_logger import WandbRun

            s = self.settings
            self.results.start()
            save_resolved_config(self.config, self.run_dir)
            name = name_of_config(self.config)
            group = group_name(s.logger.wandb.group, Path(self.cache_dir).parent if self.cache_dir else None)
            self.tracker = WandbRun(s.logger.wandb, name.wandb(s.model.name), self.config, self.run_dir,
                                    self._tags(name), group)
        self.started = time.perf_counter()

    def check_tasks(self) -> None:
        """An unknown task or a judge without its key fails now, not after an hour of pruning."""
        e = self.settings.eval
        if not e.tasks:
            return
        from tamp.eval.evaluate import resolve_tasks
        from tamp.eval.judges import check_judges

        resolve_tasks(list(e.tasks), list(e.include_paths))
        check_judges(e.tasks, {**os.environ, **e.env})

    def load(self) -> LoadedModel:
        """The named model with its processor and family adapter; results.json records the adapter's family."""
        loaded = load_named_model(self.settings.model_settings())
        if self.settings.model.use_audio_in_video:
            from tamp.cli.preflight import check_audio_in_video

            check_audio_in_video(True, loaded.adapter)
            loaded.adapter.use_audio_in_video = True
        self.results.record.model.family = loaded.adapter.family
        return loaded

    def calibrate(self, loaded: LoadedModel) -> tuple[Any, list[Any]]:
        """(this rank's calibration samples, the drawn records' ids): the file parsed once (rank 0), each rank
        encodes its share."""
        from tamp.pipeline.distributed import calibration_share, fabric_broadcast, fabric_reducer

        f = self.fabric
        device = self.settings.prune_config(device=str(f.device)).device
        self.inputs = input_cache(self.settings, self.cache_dir, f, loaded, shares_block_inputs(self.settings, device))

        def encode() -> tuple[Any, Any, list[Any]]:
            return calibration_share(
                self.settings.calib_settings(), loaded.adapter, loaded.examples, f.global_rank, f.world_size,
                fabric_broadcast(f), fabric_reducer(f),
            )

        began = time.perf_counter()
        if self.inputs is None:
            samples, fitted, ids = encode()
        else:
            from tamp.pipeline.shared_inputs import shared_calibration

            samples, fitted, ids = shared_calibration(self.inputs, encode)
        self.measured["timings"]["calibration_s"] = time.perf_counter() - began  # encoded, or loaded from the sweep
        self.measured["calibration"] = {**fitted.as_dict(), **calibration_record(self.settings, ids)}
        return samples, ids

    def prune(self, loaded: LoadedModel, samples: Any, ids: list[Any]) -> PruneSummary:
        """Prune in place, statistics summed across ranks (every rank ends with the same masks), the allocation's
        scores shared through the sweep's score cache; rank 0 writes the checkpoints and prune_report.md."""
        import tamp
        from tamp.pipeline.distributed import fabric_reducer

        f, m = self.fabric, self.measured
        prune_cfg = self.settings.prune_config(device=str(f.device), run_dir=self.run_dir)
        scores = score_cache(self.settings, self.cache_dir, f, ids)
        pruning = tamp.prune(loaded.model, samples, prune_cfg, adapter=loaded.adapter, reducer=fabric_reducer(f),
                             checkpoint_writer=self.is_main, score_store=scores, input_store=self.inputs)
        reused = {**(self.inputs.reused if self.inputs is not None else {}), **(scores.reused if scores else {})}
        if reused:
            m["reused"] = reused
        asked = self.results.record.sparsity
        m["sparsity"] = replace(asked, achieved=pruning.achieved, planned=pruning.planned, nm=pruning.nm)
        m["sparsity_per_linear"] = pruning.table()
        m["allocation_scores"] = pruning.allocation_scores
        m["timings"].update(pruning.timings)
        if self.is_main:
            from tamp.core.io import write_text_atomic

            write_text_atomic(self.run_dir / "prune_report.md", pruning.summary() + "\n")  # never through a link
        return pruning

    def measure_unpruned(self, adapter: Any) -> None:
        """Nothing pruned here, but a saved pruned checkpoint is sparse: measure what is evaluated, and name the
        W&B run by it (a sparse checkpoint without a manifest is named once its weights are measured)."""
        from tamp.tracking.measure import unpruned_run_sparsity

        s, r = self.settings, self.settings.runner
        sparsity, per_linear = unpruned_run_sparsity(adapter, s.model.name, self.results.record.sparsity,
                                                     r.targets, r.ignore)
        self.measured["sparsity"], self.measured["sparsity_per_linear"] = sparsity, per_linear
        if self.tracker is not None:
            from tamp.tracking.run_names import name_of_record

            name = name_of_record({**self.results.data, "sparsity": sparsity.to_json()})
            self.tracker.rename(name.wandb(s.model.name))
            self.tracker.retag(self._tags(name))

    def save(self, loaded: LoadedModel, pruning: PruneSummary | None) -> None:
        """Rank 0 saves the model where runner.save_model / save_dir / save_masks ask (tamp.models.saving checks
        the target again, then writes weights, manifest and packed masks); nothing when the run saves nothing.
        The masks come from the pruning when the run pruned; a run that pruned nothing (a saved checkpoint
        evaluated again) saves the zeros it has, so its masks and manifest still describe it."""
        if not self.is_main:
            return
        from tamp.core.config import config_digest
        from tamp.models.saving import check_run_save, save_pruned, saved_masks, source_model
        from tamp.tracking.measure import measure_sparsity
        from tamp.tracking.run_record import linears_to_json

        directory = check_run_save(self.settings, self.config, self.run_dir)
        if directory is None:
            return
        s, r, adapter = self.settings, self.settings.runner, loaded.adapter
        masks = None
        if r.save_masks:
            linears = {name: linear for block in adapter.target_linears(r.targets, r.ignore) for name, linear in block.items()}
            masks = saved_masks(pruning.masks if pruning is not None else None, linears)
        table = self.measured.get("sparsity_per_linear") or measure_sparsity(adapter, r.targets, r.ignore)
        info = {"method": s.method.name, "target": s.sparsity.target, "pattern": s.sparsity.pattern,
                "source_model": source_model(s.model.name)}
        where = save_pruned(loaded.model, loaded.processor, directory, linears_to_json(table), masks, info,
                            digest=config_digest(self.config))
        log.info("model saved to %s", where)

    def evaluate(self, loaded: LoadedModel, pruning: PruneSummary | None) -> DenseCache | None:
        """Score the model with lmms-eval (a dense cell's scores come from the sweep's dense cache when there);
        returns that cache, where the record step finds the Rel.% reference."""
        began = time.perf_counter()
        cache = dense_cache(self.settings, self.results.record.config or self.sealed.config, self.cache_dir)
        scores, evaluated_on, kernels = evaluate_model(self.settings, loaded.model, loaded.processor, loaded.adapter,
                                                       self.fabric, cache)
        m = self.measured
        m["devices"] = {"prune": pruning.device if pruning else None, "offload": self.settings.runner.offload,
                        "eval": evaluated_on, "transfers": pruning.transfers if pruning else {}}
        if kernels is not None:
            m["devices"]["sparse_kernels"] = kernels
        m["timings"]["eval_s"] = time.perf_counter() - began
        m["timings"]["total_s"] = time.perf_counter() - self.started
        m["scores"] = scores.get("scores", {})
        m["primary_metric"] = scores.get("primary_metric", {})
        m["groups"] = scores.get("groups", {})
        m["columns"] = table_columns(self.settings, scores)
        return cache

    def record(self, cache: DenseCache | None) -> None:
        """Rank 0: results.json completed, the scores logged to W&B with their Rel.% reference, the per-block
        checkpoints cleared (the weights are final)."""
        if self.is_main:
            self.results.complete(**self.measured)
            reference = dense_reference(self.settings, cache, self.results.record)
            self.tracker.log_results(self.results.record, reference)  # type: ignore[union-attr]
            PruneCheckpoint(self.run_dir / CHECKPOINT_DIR, "", writer=True).clear()

    def fail(self, err: BaseException) -> None:
        """Rank 0 records the failure in results.json and W&B (interrupted, when submitit is requeuing)."""
        if self.is_main:
            self.results.fail(_recorded(err))
            if self.tracker is not None:
                self.tracker.log_results(self.results.record)

    def finish(self, failed: bool) -> None:
        """The W&B run ends, marked failed or finished."""
        if self.tracker is not None:
            self.tracker.finish(failed)
