"""OWL allocation: per-block outlier ratio of the dense Wanda metric -> per-block sparsity.

A dense scoring pass gathers Wanda's all-token squared input norms per linear; at the end of each
block they are summed over processes, the block's Wanda metrics are concatenated and its outlier
ratio (entries > M * mean, percent) computed, so only one block's metrics are alive at a time.
`owl_sparsity` maps the ratios to block sparsities; every linear of a block gets its block's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from tamp.config import AllocationConfig
from tamp.pipeline.context import SampleContext
from tamp.pruning.wanda import SquaredNormStats, wanda_metric
from tamp.sparsity.groups import Group, block_groups, block_name, expand, snap
from tamp.sparsity.owl import COMPATS, outlier_ratio, owl_sparsity
from tamp.sparsity.registry import register_allocation

if TYPE_CHECKING:
    from tamp.pipeline.engine import LayerwiseEngine


class OutlierObserver:
    """Wanda squared norms per linear; the block's outlier ratio once its samples are through."""

    def __init__(self, engine: LayerwiseEngine, m: float) -> None:
        self.m = m
        self.device = engine.device
        self.stats: dict[str, SquaredNormStats] = {}
        self.ratios: dict[str, float] = {}

    def observe(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: SampleContext) -> None:
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = SquaredNormStats(x.shape[-1], self.device)
        stats.add(x)

    def end_block(self, index: int, linears: dict[str, nn.Linear], engine: LayerwiseEngine) -> None:
        if not linears:
            return
        stats = {
            name: self.stats.pop(name, None) or SquaredNormStats(lin.in_features, self.device)
            for name, lin in linears.items()
        }
        engine.reduce_([t for s in stats.values() for t in s.tensors()])
        with engine.on_device(engine.blocks[index]):
            metrics = [
                wanda_metric(lin.weight, stats[name].scaler_row("samples")) for name, lin in linears.items()
            ]
            self.ratios[block_name(engine, index)] = outlier_ratio(metrics, self.m)

    def state(self) -> dict[str, torch.Tensor]:
        """The outlier ratios of the blocks done so far, for the scoring checkpoint."""
        return {name: torch.tensor([ratio], dtype=torch.float64) for name, ratio in self.ratios.items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.ratios = {name: float(t.item()) for name, t in state.items()}


@dataclass
class OwlConfig(AllocationConfig):
    """OWL's outlier threshold M, spread lambda, and which implementation's formula to follow."""

    name: str = "owl"
    owl_m: float = 5.0
    owl_lambda: float = 0.08
    owl_compat: str = "owl"  # owl | tamp_repository

    def check(self) -> None:
        if not (math.isfinite(self.owl_m) and self.owl_m > 0):
            raise ValueError(f"method.allocation.owl_m={self.owl_m} is out of range; valid: > 0")
        if not (math.isfinite(self.owl_lambda) and 0 <= self.owl_lambda < 1):
            raise ValueError(
                f"method.allocation.owl_lambda={self.owl_lambda} is out of range; valid: 0 <= lambda < 1"
            )
        if self.owl_compat not in COMPATS:
            raise ValueError(
                f"method.allocation.owl_compat='{self.owl_compat}' is unknown; valid: {', '.join(COMPATS)}"
            )

    def variant_notes(self) -> dict[str, str]:
        if self.owl_compat == "tamp_repository":
            return {"allocation": "OWL as the TAMP repository's port (the mapping inverted; as published)"}
        return {"allocation": "OWL's own mapping (more outliers, less pruning)"}


@register_allocation("owl", config=OwlConfig)
class OwlAllocation:
    """Blocks with more outlier Wanda scores are pruned less (OWL); `owl_compat` for the TAMP port."""

    def __init__(self, cfg: OwlConfig | None = None) -> None:
        self.cfg = cfg or OwlConfig()
        self.scores: dict[str, float] = {}
        self.block_sparsity: dict[str, float] = {}

    def groups(self, engine: LayerwiseEngine) -> list[Group]:
        """OWL gives one sparsity per decoder block."""
        return block_groups(engine)

    def plan(self, engine: LayerwiseEngine, target: float) -> dict[str, float]:
        observer = OutlierObserver(engine, self.cfg.owl_m)
        engine.scoring_pass(observer, desc="owl scoring")
        groups = block_groups(engine)
        self.scores = {g.name: observer.ratios[g.name] for g in groups}
        ratios = [self.scores[g.name] for g in groups]
        sparsities = owl_sparsity(ratios, target, self.cfg.owl_lambda, compat=self.cfg.owl_compat)
        for g, p in zip(groups, sparsities, strict=True):
            if not 0.0 <= p <= 1.0:
                raise ValueError(
                    f"OWL gives block {g.name} sparsity {p:.4f}, outside [0, 1]; lower owl_lambda"
                )
        self.block_sparsity = {g.name: p for g, p in zip(groups, sparsities, strict=True)}
        # on the row grid; the cap is the largest OWL sparsity, so rounding never exceeds OWL's range
        return expand(snap(self.block_sparsity, groups, max(sparsities)), groups)
