"""`tamp.prune`: the Python entry point, usable without Hydra."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tamp.api.inputs import classify_calibration, processor_for, resolve_model
from tamp.core.config import PRUNE_VOLATILE, PruneConfig
from tamp.data.sample import CalibSample
from tamp.methods.components import as_prune_config
from tamp.methods.composed import ComposedMethod, build_method
from tamp.methods.presets import SETTINGS, prune_config
from tamp.models.base import FamilyAdapter
from tamp.models.dispatch import refuse_dispatched
from tamp.models.registry import get_adapter
from tamp.pipeline.checkpoint import PruneCheckpoint
from tamp.pipeline.engine import LayerwiseEngine, Reducer, resolve_device
from tamp.pipeline.shared_inputs import InputStore, block_inputs_key
from tamp.sparsity.shared import ScoreStore
from tamp.tracking.prune_summary import LinearSparsity, PruneSummary


def prune(
    model: nn.Module | str | os.PathLike[str],
    samples: Sequence[CalibSample] | Sequence[Mapping[str, Any]] | Any,
    config: str | PruneConfig | dict[str, Any] | None = None,
    adapter: FamilyAdapter | None = None,
    reducer: Reducer | None = None,
    checkpoint_writer: bool = True,
    *,
    sparsity: float | None = None,
    pattern: str | None = None,
    overrides: Sequence[str] = (),
    processor: Any = None,
    model_settings: Mapping[str, Any] | None = None,
    score_store: ScoreStore | None = None,
    input_store: InputStore | None = None,
    **settings: Any,
) -> PruneSummary:
    """Prune `model` in place with the method of `config`, calibrated on `samples`.

    `model` is a torch module, or a name as `model.name` takes it (a Hub id, a folder saved with
    save_pretrained, `tiny:<family>`, `zoo`) that tamp loads with its own loader (`model_settings`:
    dtype, family, trust_remote_code, ...; bfloat16 by default): the summary's `model` and `processor`
    then hold the pruned model for `tamp.save(summary.model, summary.processor, dir, summary)`.
    `samples` is a list of CalibSample (`tamp.build_samples`), a list of conversations (LLaVA records
    as the JSON calibration files hold them, or chat entries) or a `datasets.Dataset` of LLaVA rows:
    conversations are all encoded, in order (`tamp.build_samples` draws a subset or roots relative
    media paths), with `processor` for a module (else the one saved where its config says it came from).
    `config` is a method preset by name (`"tamp"`, `"wanda"`, `"sparsegpt"`, ... the files of
    conf/method, composed with Hydra as the CLI does; `overrides` are Hydra overrides on it such as
    `"method.tokens.knn=5"`), a PruneConfig, a plain dict with the same keys, or an OmegaConf node.
    `sparsity` and `pattern` set the target and the pattern ("unstructured", "2:4"); other keywords set
    PruneConfig's fields (seed, device, offload, progress, targets, ignore, keep_masks, checkpoint_dir).
    `adapter` is found from the model's config when not given (`tamp.get_adapter(model, processor)`);
    `reducer` all-reduces statistics across processes (data-parallel calibration), None on one
    process. With `checkpoint_dir`, every completed block is checkpointed there (by the process with
    `checkpoint_writer`) and a rerun with the same config continues after the last completed block.
    `score_store` (tamp.sparsity.shared.ScoreStore, e.g. tamp.cli.score_cache.ScoreCache) keeps the
    allocation's dense scores (DAS, OWL, ECoFLaP) for every run with the same model, samples, allocation
    settings, seed and number of processes: a sweep over sparsities scores the dense model once.
    `input_store` (tamp.pipeline.shared_inputs.InputStore, e.g. tamp.cli.input_cache.InputCache) keeps
    the inputs of the first decoder block for every run with the same model weights, samples and device
    type: the runs of a sweep forward the samples to block 0 once.
    """
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"tamp.prune got an unknown setting '{unknown[0]}'; valid: sparsity, pattern, overrides, "
                         f"processor, model_settings, score_store, input_store, {', '.join(SETTINGS)}")
    named = isinstance(config, str) or isinstance(config, dict) and isinstance(config.get("method"), str)
    if named or sparsity is not None or pattern is not None or overrides or settings:
        cfg = prune_config(config, sparsity, pattern, overrides, **settings)
    else:
        cfg = as_prune_config(config)
    calibration = classify_calibration(samples)  # before loading: a wrong kind of input costs nothing
    resolved = resolve_model(model, adapter, processor, model_settings, cfg.progress)
    model = resolved.model
    refuse_dispatched(model)  # a device_map over several devices or offloaded modules: one line, no work
    adapter = resolved.adapter if resolved.adapter is not None else get_adapter(model, resolved.processor)
    samples = calibration.resolve(lambda: _encoder(adapter, model), cfg.progress)
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    method = build_method(cfg)  # `method.kind` selects it: pruner x allocation x tokens by default
    engine = LayerwiseEngine(
        model,
        adapter,
        samples,
        device=resolve_device(cfg.device),
        offload=cfg.offload,
        targets=cfg.targets,
        ignore=cfg.ignore,
        progress=cfg.progress,
        reducer=reducer,
    )
    if score_store is not None and isinstance(method, ComposedMethod):  # the allocation's dense scores
        method.score_store = score_store
        method.score_key = lambda: score_key(model, samples, engine.indices, cfg, method.allocation, engine.device,
                                             reducer)
    if input_store is not None:  # the block-0 inputs
        engine.input_store = input_store
        engine.input_key = lambda: block_inputs_key(model, samples, engine.indices, engine.device, weights_digest,
                                                    sample_digest)
    checkpoint = None
    if cfg.checkpoint_dir:
        digest = fingerprint(model, samples, cfg, reducer)
        checkpoint = PruneCheckpoint(cfg.checkpoint_dir, digest, checkpoint_writer)
    plan, masks = engine.prune(method, checkpoint)
    total = time.perf_counter() - start
    linears = []
    for block, named in enumerate(engine.linears):
        for name, linear in named.items():
            nm = method.nm_of(plan[name])
            planned = method.planned_pruned(linear, plan[name], nm)
            linears.append(
                LinearSparsity(
                    name=name,
                    block=block,
                    numel=linear.weight.numel(),
                    planned_pruned=planned,
                    pruned=int((linear.weight == 0).sum()),
                    planned_pattern=f"{nm[0]}:{nm[1]}" if nm else None,
                    achieved_pattern=achieved_pattern(linear.weight, nm[1]) if nm else None,
                )
            )
    t = engine.timings
    return PruneSummary(
        method=cfg.method.name,
        pruner=cfg.method.pruner,
        allocation=cfg.method.allocation.name,
        tokens=cfg.method.tokens.name,
        target=cfg.sparsity.target,
        pattern=cfg.sparsity.pattern,
        linears=linears,
        timings={"capture_s": t.capture_s, "plan_s": t.plan_s, "prune_s": t.prune_s, "total_s": total},
        blocks_s=t.blocks_s,
        num_samples=len(samples),
        num_tokens=sum(s.num_tokens for s in samples),
        device=str(engine.device),
        allocation_scores=method.allocation_scores(),
        nm=method.nm_summary(plan),
        transfers=engine.transfers.summary(),
        masks={k: v.cpu() for k, v in masks.items()} if cfg.keep_masks else None,
        model=model if resolved.loaded else None,
        processor=resolved.processor if resolved.loaded else None,
    )


def _encoder(adapter: FamilyAdapter, model: nn.Module) -> FamilyAdapter:
    """The adapter with a processor to encode conversations: the given one, else the one saved with the model."""
    if adapter.processor is None:
        adapter.processor = processor_for(model)
    if adapter.processor is None:
        raise ValueError("conversations need the model's processor to be encoded; valid: tamp.prune(model, "
                         "conversations, ..., processor=processor), adapter=tamp.get_adapter(model, processor), "
                         "a model id or folder as the model, or samples from tamp.build_samples")
    return adapter


def achieved_pattern(weight: torch.Tensor, m: int) -> str:
    """The N:M pattern the weights satisfy: the fewest zeros in any group of m consecutive inputs of a row."""
    rows, cols = weight.shape
    zeros = (weight.detach() == 0).reshape(rows, cols // m, m).sum(-1)
    return f"{int(zeros.min())}:{m}"


def fingerprint(
    model: nn.Module, samples: Sequence[CalibSample], cfg: PruneConfig, reducer: Reducer | None = None
) -> str:
    """What the masks depend on: the method, sparsity, targets, seed, the model and the samples.

    The model enters by its config and a digest of its weights (every tensor's name, shape, dtype
    and a strided sample of its values: another checkpoint of the same architecture differs).
    A sample enters by every tensor of its inputs (token ids, pixels, audio features, grids), so a
    calibration file with the same text and other images is another calibration set. Devices,
    offload, progress and the number of processes are left out: they do not change masks. Sample
    digests are summed (wrapping int64) across processes, so every process computes the same value.
    """
    h = hashlib.sha256()
    keys = cfg.to_dict()
    for volatile in PRUNE_VOLATILE:
        keys.pop(volatile, None)
    h.update(json.dumps(keys, sort_keys=True, default=str).encode())
    h.update(model.config.to_json_string(use_diff=False).encode() if hasattr(model, "config") else b"")
    h.update(weights_digest(model))
    h.update(samples_total(samples, reducer).numpy().tobytes())
    return h.hexdigest()[:24]


def samples_total(
    samples: Sequence[CalibSample], reducer: Reducer | None = None, indices: Sequence[int] | None = None
) -> torch.Tensor:
    """[sum of the samples' digests (wrapping int64), count] over every process: the whole set's identity.

    With `indices` (each sample's position in the whole set) a sample counts with its position, so the
    same records in another order are another set (ECoFLaP's `num_samples` scores the first N).
    """
    total = torch.zeros(2, dtype=torch.int64)
    for i, sample in enumerate(samples):
        digest = sample_digest(sample)
        if indices is not None:
            digest = hashlib.sha256(f"{indices[i]}:".encode() + digest).digest()
        total[0] += int.from_bytes(digest[:7], "little")
        total[1] += 1
    if reducer is not None:
        reducer([total])
    return total


def score_key(
    model: nn.Module, samples: Sequence[CalibSample], indices: Sequence[int], cfg: PruneConfig, allocation: Any,
    device: torch.device, reducer: Reducer | None = None,
) -> dict[str, str]:
    """What an allocation's dense scores depend on, for a score store (tamp.sparsity.shared).

    The model by its config and weights digest (dtype included), the calibration set by every sample's
    tensors and position over all processes, the allocation's resolved settings, the seed, the targeted linears, the
    number of processes, the device type (CPU and GPU round differently) and the versions that compute
    them. Not the target, the pattern, the pruner or the tokens selector: the dense scores ignore them.
    """
    import dataclasses

    import transformers

    import tamp

    settings = getattr(allocation, "cfg", None)
    resolved = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else repr(settings)
    processes = torch.ones(1, dtype=torch.int64)
    if reducer is not None:
        reducer([processes])
    config = model.config.to_json_string(use_diff=False) if hasattr(model, "config") else ""
    return {
        "allocation": json.dumps(resolved, sort_keys=True, default=str),
        "allocation.class": f"{type(allocation).__module__}.{type(allocation).__qualname__}",
        "seed": str(cfg.seed),
        "targets": json.dumps(list(cfg.targets)),
        "ignore": json.dumps(list(cfg.ignore)),
        "model.config": hashlib.sha256(config.encode()).hexdigest()[:16],
        "model.weights_digest": weights_digest(model).hex()[:32],
        "samples": hashlib.sha256(samples_total(samples, reducer, indices).numpy().tobytes()).hexdigest()[:16],
        "processes": str(int(processes.item())),
        "device": device.type,
        "versions": f"tamp {tamp.__version__}, torch {torch.__version__}, transformers {transformers.__version__}",
    }


def _tensor_bytes(tensor: torch.Tensor, limit: int | None = None) -> bytes:
    flat = tensor.detach().reshape(-1)
    if limit is not None and flat.numel() > limit:
        flat = flat[:: flat.numel() // limit][:limit]
    if flat.dtype == torch.bfloat16:
        flat = flat.view(torch.int16)  # numpy has no bfloat16; the bits are what matters
    return flat.cpu().contiguous().numpy().tobytes()


def weights_digest(model: nn.Module, per_tensor: int = 4096) -> bytes:
    """A digest of the model's weights from `per_tensor` evenly strided values of each (fast at 8B)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(_tensor_bytes(tensor, per_tensor))
    return h.digest()


def sample_digest(sample: CalibSample) -> bytes:
    """Every input tensor of a calibration sample, by key (media included), and its modality ids."""
    h = hashlib.sha256()
    for key in sorted(sample.inputs):
        value = sample.inputs[key]
        if isinstance(value, torch.Tensor):
            h.update(f"{key}:{tuple(value.shape)}:{value.dtype}".encode())
            h.update(_tensor_bytes(value))
    h.update(_tensor_bytes(sample.modality_ids))
    return h.digest()


def save(model: nn.Module, processor: Any, directory: str | Path, report: PruneSummary, masks: bool = True) -> Path:
    """Save a pruned model so it loads anywhere: `save_pretrained` weights (zeros kept) and processor,
    `sparsity_manifest.json` (method, target, pattern, overall and per-linear sparsity) and, with `masks`,
    `masks.safetensors` (1 bit per weight; `tamp.models.mask_file.load_masks` unpacks it).

    `report` is the pruning summary `tamp.prune` returned; the masks are its own (`keep_masks=True` in
    `tamp.prune`), else the pruned linears' exact zeros.
    The directory appears complete or not at all.
    """
    from tamp.models.saving import save_pruned, saved_masks
    from tamp.tracking.run_record import linears_to_json

    kept = saved_masks(report.masks, {x.name: model.get_submodule(x.name) for x in report.linears}) if masks else None
    info = {"method": report.method_name, "target": report.target, "pattern": report.pattern}
    return save_pruned(model, processor, directory, linears_to_json(report.table()), kept, info)
