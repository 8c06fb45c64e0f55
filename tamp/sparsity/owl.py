"""OWL (outlier-weighted layer-wise sparsity): blocks with more outlier Wanda scores are pruned less.

Per block, the outlier ratio is the percentage of the block's (concatenated) Wanda metric entries larger
than M times their mean. The ratios are scaled to [0, 2 * lambda], centred, and shifted by the target
density: that is the block's keep ratio, and its sparsity is 1 - keep. The TAMP repository's port adds the
target sparsity instead and uses the result as the sparsity, which inverts the ordering (more outliers,
more pruning); `compat="tamp_repository"` reproduces it.

The allocation "owl" (`OwlConfig`, `OwlAllocation`, at the end): a dense scoring pass gathers Wanda's
all-token squared input norms per linear; at the end of each block they are summed over processes, the
block's Wanda metrics are concatenated and its outlier ratio (entries > M * mean, percent) computed, so
only one block's metrics are alive at a time. `owl_sparsity` maps the ratios to block sparsities; every
linear of a block gets its block's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tamp.core.config import AllocationConfig
from tamp.core.registries import lazy_module
from tamp.pruning.wanda import SquaredNormStats, wanda_metric
from tamp.sparsity.allocate import Group, block_groups, expand, snap
from tamp.sparsity.registry import ScoringModel, register_allocation
from tamp.sparsity.shared import ScoreState

if TYPE_CHECKING:
    import torch
    from torch import nn
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    torch, nn = lazy_module("torch"), lazy_module("torch.nn")

COMPATS = ("owl", "tamp_repository")


def outlier_ratio(metric: torch.Tensor | Sequence[torch.Tensor], m: float) -> float:
    """Percentage of entries larger than `m` times the mean (a list of tensors is concatenated first)."""
    if not isinstance(metric, torch.Tensor):
        metric = torch.cat([t.detach().reshape(-1).float() for t in metric])
    flat = metric.detach().reshape(-1).float()
    if flat.numel() == 0:
        raise ValueError("outlier_ratio needs a non-empty metric")
    outliers = (flat > flat.mean() * m).sum()
    return 100.0 * outliers.item() / flat.numel()


def owl_sparsity(ratios: Sequence[float], target: float, lam: float, compat: str = "owl") -> list[float]:
    """Per-block sparsity from the blocks' outlier ratios (percent), target sparsity and lambda.

    Equal ratios give every block the target. Their mean is always the target sparsity.
    """
    if compat not in COMPATS:
        raise ValueError(f"unknown OWL compat {compat!r}; expected one of {COMPATS}")
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {target}")
    if lam < 0:
        raise ValueError(f"OWL lambda must be >= 0, got {lam}")
    values = [float(r) for r in ratios]
    if not values:
        raise ValueError("owl_sparsity needs at least one block")
    low, high = min(values), max(values)
    if high == low:
        return [target] * len(values)
    scaled = [(v - low) * (1.0 / (high - low) * lam * 2) for v in values]
    mean = sum(scaled) / len(scaled)
    if compat == "tamp_repository":
        return [s - mean + target for s in scaled]
    return [1.0 - (s - mean + (1.0 - target)) for s in scaled]


# --- the OWL allocation: a dense scoring pass of Wanda metrics, then owl_sparsity per block ---


class OutlierObserver:
    """Wanda squared norms per linear; the block's outlier ratio once its samples are through."""

    def __init__(self, model: ScoringModel, m: float) -> None:
        self.m = m
        self.device = model.device
        self.stats: dict[str, SquaredNormStats] = {}
        self.ratios: dict[str, float] = {}

    def observe(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: Any) -> None:
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = SquaredNormStats(x.shape[-1], self.device)
        stats.add(x)

    def end_block(self, index: int, linears: dict[str, nn.Linear], model: ScoringModel) -> None:
        if not linears:
            return
        stats = {
            name: self.stats.pop(name, None) or SquaredNormStats(lin.in_features, self.device)
            for name, lin in linears.items()
        }
        model.reduce_([t for s in stats.values() for t in s.tensors()])
        with model.on_device(model.blocks[index]):
            metrics = [
                wanda_metric(lin.weight, stats[name].scaler_row("samples")) for name, lin in linears.items()
            ]
            self.ratios[model.block_name(index)] = outlier_ratio(metrics, self.m)

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

    def groups(self, model: ScoringModel) -> list[Group]:
        """OWL gives one sparsity per decoder block."""
        return block_groups(model)

    def score(self, model: ScoringModel) -> ScoreState:
        """Every block's outlier ratio on the dense model (the target plays no part: shared across a sweep)."""
        observer = OutlierObserver(model, self.cfg.owl_m)
        model.scoring_pass(observer, desc="owl scoring")
        return {"block": dict(observer.ratios)}

    def plan(self, model: ScoringModel, target: float) -> dict[str, float]:
        return self.allocate(model, self.score(model), target)

    def allocate(self, model: ScoringModel, state: ScoreState, target: float) -> dict[str, float]:
        groups = block_groups(model)
        self.scores = {g.name: state["block"][g.name] for g in groups}
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
