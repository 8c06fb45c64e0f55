"""Zeroth-order scores: sum over samples of |(L(w + eps z) - L(w - eps z)) / (2 eps)| per perturbed unit.

A unit is a list of weight tensors perturbed together (one tensor for ECoFLaP's own estimator, a whole
group for the joint one). The loss is the LM loss on the answer tokens (labels shifted as HF does); a
sample without labels uses all its next tokens (input_ids). A perturbation of block b only changes
blocks >= b, so blocks are visited in order with one store of dense block inputs (offload-aware),
advanced by one dense forward after b: every block's input is computed once and only one block's
inputs are held. Weights are restored by copying back a saved original (never by subtracting, which
would not round-trip in low precision).

Order of the work, for one scored block b: b stays on the device; for each sample, its input visits
the device once, block b runs once per (unit, sign) with that unit perturbed (2 x units outputs: 14
on a Llama block with the per-tensor estimator) plus once dense (the next block's input), then every
later block runs on those outputs, visiting the device once per sample, and the final norm and LM
head give the losses. With offload (blocks in CPU memory) that streams each later block once per
(scored block, sample): samples x L(L-1)/2 block copies in all, 63,488 for 128 samples on 32 blocks,
55 TB for LLaVA-NeXT-8B's blocks upcast to float32 (872 MB; 28 TB scoring in bf16), about 75 min at
12 GB/s; copying each later block in and out per (unit, sample, sign), as before, was 1.6 PB. Device
memory holds one streamed block, the perturbed block and 2 x units hidden states of one sample. The forward count is the method's own: 2 x units x (L - b) block
forwards per sample. Without offload nothing moves; the numbers are the same either way (the same
forwards in the same order per loss).

Each block's scores are summed over processes when the block is done and, when the run is
checkpointed, saved with it: a pre-empted run resumes scoring after its last completed block.

z is seeded per (seed, unit index, sample content): the same sample gets the same z on any number of
processes. `num_samples` keeps the first N samples of the whole calibration set (by their global
position, `engine.indices`): each process scores those of them it holds, so the subset is the same
on any number of processes.
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
from tamp.pipeline.tail import IGNORE_INDEX, lm_loss
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


def scored_positions(engine: LayerwiseEngine, num_samples: int | None) -> list[int]:
    """Local positions of the samples scored: those among the first `num_samples` of the whole set."""
    return [i for i, g in enumerate(engine.indices) if num_samples is None or g < num_samples]


def _scoring_store(engine: LayerwiseEngine, positions: list[int], dtype: torch.dtype | None) -> ActivationStore:
    """A private copy of the scored samples' block-0 inputs, cast to `dtype` when given."""
    source = engine.captured()
    store = source.empty_like()
    for i in positions:
        hidden, kwargs = source.hidden[i], source.kwargs[i]
        if dtype is not None:
            hidden, kwargs = hidden.to(dtype), cast_floating(kwargs, dtype)
        store.hidden.append(hidden.clone())
        store.kwargs.append(kwargs)
    return store


def _noise(engine: LayerwiseEngine, weights: list[nn.Parameter], seed: int) -> list[torch.Tensor]:
    """z for one (unit, sample): drawn in float32 on the device, then rounded to the weights' dtype,
    so a float32 and a bfloat16 copy of a model see the same directions."""
    gen = torch.Generator(device=engine.device).manual_seed(seed)
    return [
        torch.randn(w.shape, generator=gen, device=engine.device, dtype=torch.float32).to(w.device, w.dtype)
        for w in weights
    ]


@torch.no_grad()
def _perturbed_outputs(
    block: nn.Module,
    units: list[Unit],
    originals: list[list[torch.Tensor]],
    noise: list[list[torch.Tensor]],
    hidden: torch.Tensor,
    kwargs: dict,
    eps: float,
) -> list[torch.Tensor]:
    """Block outputs with each unit perturbed by +eps z, then -eps z ([u0+, u0-, u1+, ...]); weights restored."""
    outputs = []
    for unit, orig, z in zip(units, originals, noise, strict=True):
        weights = [lin.weight for lin in unit.linears]
        try:
            for sign in (1.0, -1.0):
                for w, o, zi in zip(weights, orig, z, strict=True):
                    w.data.copy_(o).add_(zi, alpha=sign * eps)
                outputs.append(run_block(block, hidden, kwargs))
        finally:
            for w, o in zip(weights, orig, strict=True):
                w.data.copy_(o)  # restored by copy, never by subtraction
    return outputs


@torch.no_grad()
def _losses_through_tail(
    engine: LayerwiseEngine, start: int, hidden: list[torch.Tensor], kwargs: dict, labels: torch.Tensor
) -> list[float]:
    """The LM loss of each hidden state entering block `start`; each later block visits the device once."""
    for index in range(start, len(engine.blocks)):
        with engine.on_device(engine.blocks[index]) as block:
            hidden = [run_block(block, h, kwargs) for h in hidden]
    return [lm_loss(engine.adapter, h, labels) for h in hidden]


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
    positions = scored_positions(engine, num_samples)
    samples = [engine.samples[i] for i in positions]
    keys = [sample_key(s) for s in samples]
    labels = [engine.transfers.to_device(t) for t in loss_labels(samples)]
    totals = torch.zeros(len(units), dtype=torch.float64, device=engine.device)
    by_block: list[list[int]] = [[] for _ in engine.blocks]
    for index, unit in enumerate(units):
        by_block[unit.block].append(index)
    store = _scoring_store(engine, positions, dtype)
    last = max((unit.block for unit in units), default=-1)
    checkpoint, phase = engine.checkpoint, "ecoflap scoring"
    first = 0
    saved = checkpoint.load_scoring(phase) if checkpoint is not None else None
    if saved is not None:
        first, state = saved
        totals.copy_(state["totals"].to(totals.device))
    with progress_bar(len(units) * len(positions), phase, enabled=engine.progress, unit="step", every_s=30.0) as bar:
        for b in range(last + 1):
            if b < first:  # resumed: the dense inputs of the next block only
                _advance(engine, b, store)
                bar.update(len(by_block[b]) * len(positions))
                continue
            _score_block(engine, b, [units[i] for i in by_block[b]], by_block[b], store, labels, keys, seed, eps,
                         totals, advance=b < last, bar=bar)
            block_totals = totals[by_block[b]] if by_block[b] else None
            if block_totals is not None:  # this block's scores are complete: summed over processes now
                engine.reduce_([block_totals])
                totals[by_block[b]] = block_totals
            if checkpoint is not None:
                checkpoint.save_scoring(phase, b + 1, {"totals": totals})
    return totals.tolist()


def _advance(engine: LayerwiseEngine, index: int, store: ActivationStore) -> None:
    """Dense forward of the scored samples through block `index`."""
    with engine.on_device(engine.blocks[index]) as block:
        for i in range(len(store)):
            hidden, kwargs = store.get(i)
            store.replace_hidden(i, run_block(block, hidden, kwargs))


def _score_block(
    engine: LayerwiseEngine,
    b: int,
    units: list[Unit],
    indices: list[int],
    store: ActivationStore,
    labels: list[torch.Tensor],
    keys: list[int],
    seed: int,
    eps: float,
    totals: torch.Tensor,
    advance: bool,
    bar,
) -> None:
    """Add block b's units' |projected gradients| over the scored samples; advance the store past b."""
    with engine.on_device(engine.blocks[b]) as block:  # perturbed in place, restored exactly: read-only visit
        originals = [[lin.weight.data.clone() for lin in unit.linears] for unit in units]
        for i in range(len(store)):
            hidden, kwargs = store.get(i)
            if units:
                noise = [_noise(engine, [lin.weight for lin in u.linears], unit_seed(seed, u.seed_index, keys[i]))
                         for u in units]
                outputs = _perturbed_outputs(block, units, originals, noise, hidden, kwargs, eps)
            if advance:
                store.replace_hidden(i, run_block(block, hidden, kwargs))  # dense input of block b + 1
            if not units:
                continue
            losses = _losses_through_tail(engine, b + 1, outputs, kwargs, labels[i])
            for k, index in enumerate(indices):
                totals[index] += abs((losses[2 * k] - losses[2 * k + 1]) / (2 * eps))
            bar.update(len(units))
        del originals
