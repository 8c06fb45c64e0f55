"""DAS allocations: per-linear output diversity on the dense model -> the ECoFLaP allocator.

"das": one score per linear, the mean of its available diversity terms (intra per modality, inter
per modality pair), each term averaged over the samples where it is defined; the allocator runs on
the linears with cap target + delta. "das_all_token" (Table 4b): one term over all tokens,
modalities ignored. "das_block" (Table 4b): a block's score is the mean of its linears' scores;
the allocator runs on blocks, every linear of a block gets the block's sparsity.

A calibration set without non-text tokens leaves only the intra-text term: DAS then ranks linears
by text diversity alone and says so with a warning (it is no longer the multimodal score).
Per sample the paper variant costs O(T * C) (per-modality sums, no T x T matrix); the "reference"
variant (the official code's positive upper-triangle filter) is inherently O(T^2 * C), computed in
row chunks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from tamp.pipeline.context import SampleContext
from tamp.sparsity.das import VARIANTS, DiversityAccumulator
from tamp.sparsity.groups import Group, GroupAllocationConfig, allocate_groups, block_groups, layer_groups
from tamp.sparsity.registry import register_allocation

if TYPE_CHECKING:
    from tamp.pipeline.engine import LayerwiseEngine

log = logging.getLogger(__name__)


@dataclass
class DasConfig(GroupAllocationConfig):
    """DAS and its Table 4b variants (das_all_token, das_block): the score variant plus the allocator's knobs."""

    name: str = "das"
    variant: str = "paper"  # paper | reference

    def check(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"method.allocation.variant='{self.variant}' is unknown; valid: {', '.join(VARIANTS)}")
        super().check()

    def variant_notes(self) -> dict[str, str]:
        das = ("the official code's similarity (positive upper-triangle entries; as published)"
               if self.variant == "reference" else "the paper's mean cosine distances")
        return {"allocation": f"DAS: {das}", **super().variant_notes()}


class DiversityObserver:
    """Accumulates every targeted linear's DAS terms over the samples of a scoring pass."""

    def __init__(self, engine: LayerwiseEngine, variant: str, all_token: bool) -> None:
        self.accumulators = {
            name: DiversityAccumulator(variant, all_token=all_token, device=engine.device)
            for linears in engine.linears
            for name in linears
        }

    def observe(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: SampleContext) -> None:
        acc = self.accumulators.get(name)
        if acc is not None:
            acc.update(z, ctx.modality_ids)

    def end_block(self, index: int, linears: dict[str, nn.Linear], engine: LayerwiseEngine) -> None:
        """The block's linears have seen every sample: sum their terms over processes now."""
        engine.reduce_([t for name in linears if name in self.accumulators for t in self.accumulators[name].tensors()])

    def state(self) -> dict[str, torch.Tensor]:
        """Every linear's (sums, counts), for the scoring checkpoint (complete blocks are summed over processes)."""
        return {f"{name}/{i}": t for name, acc in self.accumulators.items() for i, t in enumerate(acc.tensors())}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, acc in self.accumulators.items():
            for i, tensor in enumerate(acc.tensors()):
                tensor.copy_(state[f"{name}/{i}"].to(tensor.device))


def layer_diversity(engine: LayerwiseEngine, variant: str, all_token: bool) -> dict[str, float]:
    """{linear name: DAS score} from a dense scoring pass, statistics summed over processes block by block."""
    observer = DiversityObserver(engine, variant, all_token)
    engine.scoring_pass(observer, desc="das scoring")
    accumulators = observer.accumulators
    if not all_token and accumulators:
        terms = next(iter(accumulators.values())).result()
        if not terms.inter and set(terms.intra) <= {0}:
            log.warning(
                "DAS: the calibration samples hold no non-text tokens; layer scores use the intra-text "
                "diversity only (not the multimodal DAS of the paper)"
            )
    return {name: acc.score for name, acc in accumulators.items()}


@register_allocation("das", config=DasConfig)
class DasAllocation:
    """Per-linear DAS scores -> allocator over linears (TAMP's allocation)."""

    all_token = False

    def __init__(self, cfg: DasConfig | None = None) -> None:
        self.cfg = cfg or DasConfig()
        self.scores: dict[str, float] = {}

    def groups(self, engine: LayerwiseEngine) -> list[Group]:
        """DAS gives every linear its own sparsity."""
        return layer_groups(engine)

    def plan(self, engine: LayerwiseEngine, target: float) -> dict[str, float]:
        self.scores = layer_diversity(engine, self.cfg.variant, self.all_token)
        plan, _ = allocate_groups(layer_groups(engine), self.scores, target, self.cfg)
        return plan


@register_allocation("das_all_token", config=DasConfig)
class DasAllTokenAllocation(DasAllocation):
    """Table 4b's All-token DAS: one diversity term over every token of the sample."""

    all_token = True


@register_allocation("das_block", config=DasConfig)
class DasBlockAllocation:
    """Table 4b's Block-wise DAS: block score = mean layer score; uniform inside a block."""

    def __init__(self, cfg: DasConfig | None = None) -> None:
        self.cfg = cfg or DasConfig(name="das_block")
        self.scores: dict[str, float] = {}
        self.layer_scores: dict[str, float] = {}
        self.block_sparsity: dict[str, float] = {}

    def groups(self, engine: LayerwiseEngine) -> list[Group]:
        """Block-wise DAS gives one sparsity per decoder block."""
        return block_groups(engine)

    def plan(self, engine: LayerwiseEngine, target: float) -> dict[str, float]:
        self.layer_scores = layer_diversity(engine, self.cfg.variant, all_token=False)
        groups = block_groups(engine)
        self.scores = {g.name: sum(self.layer_scores[n] for n in g.linears) / len(g.linears) for g in groups}
        plan, self.block_sparsity = allocate_groups(groups, self.scores, target, self.cfg)
        return plan
