"""Zeroth-order scores: sum over samples of |(L(w + eps z) - L(w - eps z)) / (2 eps)| per perturbed unit.

A unit is a list of weight tensors perturbed together (one tensor for ECoFLaP's own estimator, a whole
group for the joint one). The loss is the LM loss on the answer tokens (labels shifted as HF does); a
sample without labels uses all its next tokens (input_ids). A perturbation of block b only changes
blocks >= b, so blocks are visited in order with one store of dense block inputs (offload-aware),
advanced by one dense forward after b: every block's input is computed once and only one block's
inputs are held. Weights are restored by copying back a saved original (never by subtracting, which
would not round-trip in low precision).

z is seeded per (seed, unit index, sample content): the same sample gets the same z on any number of
processes. `count` counts this process's samples (the engine does not know global indices).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from tamp.data.sample import CalibSample
from tamp.pipeline.capture import run_block
from tamp.pipeline.precision import cast_floating
from tamp.pipeline.store import ActivationStore
from tamp.pipeline.tail import IGNORE_INDEX, tail_loss
from tamp.progress import progress_bar

if TYPE_CHECKING:
    from tamp.pipeline.engine import LayerwiseEngine

log = logging.getLogger(__name__)


@dataclass
class Unit:
    """Weight tensors perturbed together, the block that owns them, and the index that seeds their z."""

    block: int
    seed_index: int
    linears: list[nn.Linear]


def sample_key(sample: CalibSample) -> int:
    """A process-independent identity of a sample: its record id or a checksum of its tokens."""
    if "id" in sample.meta:
        return zlib.crc32(str(sample.meta["id"]).encode())
    tokens = sample.inputs.get("input_ids", sample.modality_ids)
    return zlib.crc32(tokens.detach().cpu().contiguous().numpy().tobytes())


def loss_labels(samples: list[CalibSample]) -> list[torch.Tensor]:
    """Answer labels; a sample without an answer span counts every next token of its input_ids."""
    out, missing = [], 0
    for sample in samples:
        labels = sample.labels
        if labels is None or not bool((labels != IGNORE_INDEX).any()):
            if "input_ids" not in sample.inputs:
                raise ValueError("ecoflap: a calibration sample has neither answer labels nor input_ids")
            labels, missing = sample.inputs["input_ids"], missing + 1
        out.append(labels)
    if missing:
        log.warning(
            "ecoflap: %d sample(s) without answer labels; their loss counts every next token", missing
        )
    return out


def unit_seed(base: int, unit: int, key: int) -> int:
    return (base * 1_000_003 + unit * 7_919 + key) % (2**63 - 1)


@torch.no_grad()
def projected_gradient(
    engine: LayerwiseEngine,
    block_index: int,
    weights: list[nn.Parameter],
    originals: list[torch.Tensor],
    hidden: torch.Tensor,
    kwargs: dict,
    labels: torch.Tensor,
    eps: float,
    seed: int,
) -> float:
    """(L(w + eps z) - L(w - eps z)) / (2 eps) for one sample; weights left equal to `originals`.

    z is drawn in float32 and then rounded to the weights' dtype, so a float32 and a bfloat16 copy of
    a model see the same directions.
    """
    gen = torch.Generator(device=engine.device).manual_seed(seed)
    noise = [
        torch.randn(w.shape, generator=gen, device=engine.device, dtype=torch.float32).to(w.device, w.dtype)
        for w in weights
    ]
    losses = []
    try:
        for sign in (1.0, -1.0):
            for w, orig, z in zip(weights, originals, noise, strict=True):
                w.data.copy_(orig).add_(z, alpha=sign * eps)
            losses.append(tail_loss(engine, block_index, hidden, kwargs, labels))
    finally:
        for w, orig in zip(weights, originals, strict=True):
            w.data.copy_(orig)
    return (losses[0] - losses[1]) / (2 * eps)


def _advance(engine: LayerwiseEngine, index: int, store: ActivationStore, count: int) -> None:
    """Dense forward of the first `count` samples through block `index` (the others are not scored)."""
    with engine.on_device(engine.blocks[index]) as block:
        for i in range(count):
            hidden, kwargs = store.get(i)
            store.replace_hidden(i, run_block(block, hidden, kwargs))


def _scoring_store(engine: LayerwiseEngine, count: int, dtype: torch.dtype | None) -> ActivationStore:
    """A private copy of the first `count` samples' block-0 inputs, cast to `dtype` when given."""
    source = engine.captured()
    store = ActivationStore(source.compute_device, source.storage_device.type == "cpu")
    store.storage_device = source.storage_device
    for i in range(count):
        hidden, kwargs = source.hidden[i], source.kwargs[i]
        if dtype is not None:
            hidden, kwargs = hidden.to(dtype), cast_floating(kwargs, dtype)
        store.hidden.append(hidden.clone())
        store.kwargs.append(kwargs)
    return store


@torch.no_grad()
def zeroth_order_scores(
    engine: LayerwiseEngine,
    units: list[Unit],
    seed: int,
    eps: float,
    num_samples: int | None,
    dtype: torch.dtype | None = None,
) -> list[float]:
    """Per unit (ordered by block): sum over samples of |projected gradient|, summed over processes.

    `dtype` casts the cached block inputs (the caller casts the modules, see tamp.pipeline.precision).
    """
    count = len(engine.samples) if num_samples is None else min(num_samples, len(engine.samples))
    samples = engine.samples[:count]
    keys = [sample_key(s) for s in samples]
    labels = loss_labels(samples)
    totals = torch.zeros(len(units), dtype=torch.float64, device=engine.device)
    by_block: list[list[int]] = [[] for _ in engine.blocks]
    for index, unit in enumerate(units):
        by_block[unit.block].append(index)
    store = _scoring_store(engine, count, dtype)
    last = max((unit.block for unit in units), default=-1)
    with progress_bar(len(units) * count, "ecoflap scoring", enabled=engine.progress, unit="step", every_s=30.0) as bar:
        for b in range(last + 1):
            for index in by_block[b]:
                unit = units[index]
                weights = [lin.weight for lin in unit.linears]
                originals = [w.data.clone() for w in weights]  # restored by copy, never by subtraction
                for i in range(count):
                    hidden, kwargs = store.get(i)
                    g = projected_gradient(
                        engine, b, weights, originals, hidden, kwargs, labels[i], eps,
                        unit_seed(seed, unit.seed_index, keys[i]),
                    )
                    totals[index] += abs(g)
                    bar.update(1)
                del originals
            if b < last:
                _advance(engine, b, store, count)  # dense inputs of block b + 1
    engine.reduce_([totals])
    return totals.tolist()
