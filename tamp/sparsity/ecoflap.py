"""ECoFLaP allocation (zeroth-order): importance from loss differences under random weight perturbations.

For each unit (a targeted linear with granularity "layer", a block with "block") and each of the first
`num_samples` calibration samples: perturb the unit's weights by +eps*z and -eps*z (z ~ N(0, 1)),
(L+ - L-) / (2 eps) is the gradient projected on z; the unit's score is the sum of its absolute value
over samples (summed over processes). A block is perturbed as a whole, one z per tensor: the projected
gradient of a block is the sum of its tensors' projected gradients (the directional derivative is
linear in z), so the block score sums its tensors inside the absolute value. The allocator then runs
on the units with cap target + delta; with "block" every linear of a block gets the block's sparsity.

Loss: the LM loss on the answer tokens (labels shifted as HF does); a sample without labels uses all
its next tokens (input_ids). A perturbation of block b only changes blocks >= b, so blocks are visited
in order with one store of dense block inputs (offload-aware), advanced by one dense forward after b:
every block's input is computed once and only one block's inputs are held. Weights are restored by
copying back a saved original (never by subtracting, which would not round-trip in low precision).

z is seeded per (seed, unit, sample content): the same sample gets the same z on any number of
processes. `num_samples` counts this process's samples (the engine does not know global indices).
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
from tamp.pipeline.store import ActivationStore
from tamp.pipeline.tail import IGNORE_INDEX, tail_loss
from tamp.progress import progress_bar
from tamp.sparsity.groups import Group, GroupAllocationConfig, allocate_groups, block_groups, layer_groups
from tamp.sparsity.registry import register_allocation

if TYPE_CHECKING:
    from tamp.pipeline.engine import LayerwiseEngine

log = logging.getLogger(__name__)
GRANULARITIES = ("layer", "block")


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


def _seed(base: int, unit: int, key: int) -> int:
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
    """(L(w + eps z) - L(w - eps z)) / (2 eps) for one sample; weights left equal to `originals`."""
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


@dataclass
class EcoflapConfig(GroupAllocationConfig):
    """ECoFLaP's zeroth-order estimate: perturbation size, samples used, and what is scored as one unit."""

    name: str = "ecoflap"
    eps: float = 1e-3  # perturbation size
    num_samples: int | None = None  # calibration samples used for the estimate (None: all)
    granularity: str = "block"  # block (ECoFLaP's allocation) | layer (one group per linear)

    def check(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"method.allocation.granularity='{self.granularity}'; valid: {', '.join(GRANULARITIES)}"
            )
        super().check()
        if not self.eps > 0:
            raise ValueError(f"method.allocation.eps={self.eps} must be > 0")
        if self.num_samples is not None and self.num_samples < 1:
            raise ValueError(f"method.allocation.num_samples={self.num_samples} must be >= 1 or null")


@register_allocation("ecoflap", config=EcoflapConfig)
class EcoFlapAllocation:
    """Zeroth-order layer or block importance -> the ECoFLaP allocator."""

    def __init__(self, cfg: EcoflapConfig | None = None) -> None:
        self.cfg = cfg or EcoflapConfig()
        self.seed = torch.initial_seed()  # tamp.prune seeds torch with the run's seed just before
        self.scores: dict[str, float] = {}
        self.group_sparsity: dict[str, float] = {}

    def groups(self, engine: LayerwiseEngine) -> list[Group]:
        """The units perturbed together and allocated: linears ("layer") or blocks ("block")."""
        return layer_groups(engine) if self.cfg.granularity == "layer" else block_groups(engine)

    def _units(self, engine: LayerwiseEngine, groups: list[Group]) -> list[list[Group]]:
        """`groups` by the block that owns them."""
        per_block: list[list[Group]] = [[] for _ in engine.blocks]
        owner = {name: i for i, linears in enumerate(engine.linears) for name in linears}
        for g in groups:
            per_block[owner[next(iter(g.linears))]].append(g)
        return per_block

    @torch.no_grad()
    def importance(self, engine: LayerwiseEngine, groups: list[Group] | None = None) -> dict[str, float]:
        """{unit name: sum over samples of |projected gradient|}, summed over processes."""
        units = self._units(engine, self.groups(engine) if groups is None else groups)
        flat = [g for block in units for g in block]
        totals = torch.zeros(len(flat), dtype=torch.float64, device=engine.device)
        count = (
            len(engine.samples)
            if self.cfg.num_samples is None
            else min(self.cfg.num_samples, len(engine.samples))
        )
        samples = engine.samples[:count]
        keys = [sample_key(s) for s in samples]
        labels = loss_labels(samples)
        store = engine.captured().copy()
        unit_index = 0
        total = sum(len(b) for b in units) * count
        with progress_bar(total, "ecoflap scoring", enabled=engine.progress, unit="step", every_s=30.0) as bar:
            for b, block_units in enumerate(units):
                for group in block_units:
                    weights = [lin.weight for lin in group.linears.values()]
                    originals = [w.data.clone() for w in weights]  # restored by copy, never by subtraction
                    for i in range(count):
                        hidden, kwargs = store.get(i)
                        seed = _seed(self.seed, unit_index, keys[i])
                        g = projected_gradient(
                            engine, b, weights, originals, hidden, kwargs, labels[i], self.cfg.eps, seed
                        )
                        totals[unit_index] += abs(g)
                        bar.update(1)
                    del originals
                    unit_index += 1
                if b + 1 < len(engine.blocks):
                    _advance(engine, b, store, count)  # dense inputs of block b + 1
        engine.reduce_([totals])
        return {g.name: float(v) for g, v in zip(flat, totals.tolist(), strict=True)}

    def plan(self, engine: LayerwiseEngine, target: float) -> dict[str, float]:
        groups = self.groups(engine)
        self.scores = self.importance(engine, groups)
        plan, self.group_sparsity = allocate_groups(groups, self.scores, target, self.cfg)
        return plan
