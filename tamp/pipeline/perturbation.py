"""Perturbation pass: losses of the model with one group of weight tensors moved by +eps d and by -eps d.

The pipeline side of zeroth-order importance (ECoFLaP, tamp.sparsity.ecoflap): the method chooses the
units (weight tensors perturbed together), the direction d of each (unit, sample) and how a pair of
losses becomes a score; this pass runs the forwards and sums the scores over samples and processes.

The loss is the LM loss on the answer tokens (tamp.pipeline.tail). A perturbation of block b only
changes blocks >= b, so blocks are visited in order with one store of dense block inputs
(offload-aware), advanced by one dense forward after b: every block's input is computed once and only
one block's inputs are held. Weights are restored by copying back a saved original (never by
subtracting, which would not round-trip in low precision).

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

`dtype` (float32 for ECoFLaP's default precision) upcasts the decoder blocks, final norm, LM head and
cached inputs for the pass and restores them bit-exactly afterwards (tamp.pipeline.precision).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch
from torch import nn

from tamp.core.progress import progress_bar, resume, weighted_steps
from tamp.core.protocols import PerturbedUnit
from tamp.pipeline.capture import run_block
from tamp.pipeline.precision import cast_floating, scoring_modules, upcast
from tamp.pipeline.store import ActivationStore
from tamp.pipeline.tail import lm_loss

if TYPE_CHECKING:
    from tamp.pipeline.engine import LayerwiseEngine

#: direction(unit index, k) -> one tensor per weight of the unit, for the k-th scored sample
Direction = Callable[[int, int], list[torch.Tensor]]
#: score(loss with +eps d, loss with -eps d) -> what the sample adds to the unit's total
Score = Callable[[float, float], float]


@torch.no_grad()
def perturbation_pass(
    engine: LayerwiseEngine,
    units: Sequence[PerturbedUnit],
    positions: Sequence[int],
    labels: Sequence[torch.Tensor],
    eps: float,
    direction: Direction,
    score: Score,
    dtype: torch.dtype | None = None,
    phase: str = "perturbation scoring",
) -> list[float]:
    """Per unit, the sum over the local samples at `positions` of `score(L+, L-)`, summed over processes.

    `labels[k]` are the k-th scored sample's loss labels. Units must be ordered by block. Each block's
    totals are reduced when the block is done and saved to the run's checkpoint under `phase`.
    """
    with upcast(scoring_modules(engine), dtype) if dtype else nullcontext(False) as changed:
        return _scores(engine, units, positions, labels, eps, direction, score, dtype if changed else None, phase)


def _scores(
    engine: LayerwiseEngine,
    units: Sequence[PerturbedUnit],
    positions: Sequence[int],
    labels: Sequence[torch.Tensor],
    eps: float,
    direction: Direction,
    score: Score,
    dtype: torch.dtype | None,
    phase: str,
) -> list[float]:
    """`perturbation_pass` once the modules are in their scoring dtype; `dtype` casts the cached inputs."""
    labels = [engine.transfers.to_device(t) for t in labels]
    totals = torch.zeros(len(units), dtype=torch.float64, device=engine.device)
    by_block: list[list[int]] = [[] for _ in engine.blocks]
    for index, unit in enumerate(units):
        by_block[unit.block].append(index)
    store = _scoring_store(engine, positions, dtype)
    last = max((unit.block for unit in units), default=-1)
    checkpoint = engine.checkpoint
    first = 0
    saved = checkpoint.load_scoring(phase) if checkpoint is not None else None
    if saved is not None:
        first, state = saved
        totals.copy_(state["totals"].to(totals.device))
    # a step of block b runs its loss through the L - b blocks from b on: early steps cost more, the ETA weighs them
    work = weighted_steps([(len(by_block[b]) * len(positions), len(engine.blocks) - b) for b in range(last + 1)])
    with progress_bar(len(units) * len(positions), phase, enabled=engine.progress, unit="step", every_s=30.0,
                      work=work) as bar:
        resume(bar, sum(len(by_block[b]) for b in range(first)) * len(positions))
        for b in range(last + 1):
            if b < first:  # resumed: the dense inputs of the next block only
                _advance(engine, b, store)
                continue
            _score_block(engine, b, [units[i] for i in by_block[b]], by_block[b], store, labels, eps, direction,
                         score, totals, advance=b < last, bar=bar)
            block_totals = totals[by_block[b]] if by_block[b] else None
            if block_totals is not None:  # this block's scores are complete: summed over processes now
                engine.reduce_([block_totals])
                totals[by_block[b]] = block_totals
            if checkpoint is not None:
                checkpoint.save_scoring(phase, b + 1, {"totals": totals})
    return totals.tolist()


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


@torch.no_grad()
def _perturbed_outputs(
    block: nn.Module,
    units: Sequence[PerturbedUnit],
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


def _advance(engine: LayerwiseEngine, index: int, store: ActivationStore) -> None:
    """Dense forward of the scored samples through block `index`."""
    with engine.on_device(engine.blocks[index]) as block:
        for i in range(len(store)):
            hidden, kwargs = store.get(i)
            store.replace_hidden(i, run_block(block, hidden, kwargs))


def _score_block(
    engine: LayerwiseEngine,
    b: int,
    units: list[PerturbedUnit],
    indices: list[int],
    store: ActivationStore,
    labels: list[torch.Tensor],
    eps: float,
    direction: Direction,
    score: Score,
    totals: torch.Tensor,
    advance: bool,
    bar,
) -> None:
    """Add block b's units' scores over the scored samples; advance the store past b."""
    with engine.on_device(engine.blocks[b]) as block:  # perturbed in place, restored exactly: read-only visit
        originals = [[lin.weight.data.clone() for lin in unit.linears] for unit in units]
        for i in range(len(store)):
            hidden, kwargs = store.get(i)
            if units:
                noise = [direction(index, i) for index in indices]
                outputs = _perturbed_outputs(block, units, originals, noise, hidden, kwargs, eps)
            if advance:
                store.replace_hidden(i, run_block(block, hidden, kwargs))  # dense input of block b + 1
            if not units:
                continue
            losses = _losses_through_tail(engine, b + 1, outputs, kwargs, labels[i])
            for k, index in enumerate(indices):
                totals[index] += score(losses[2 * k], losses[2 * k + 1])
            bar.update(len(units))
        del originals
