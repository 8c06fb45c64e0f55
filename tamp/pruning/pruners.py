"""Pruners as the layer-wise method sees them: which statistic to gather, how to turn it into a mask.

The math lives in masks / magnitude / wanda / sparsegpt; these classes only bind it to an
nn.Linear, apply the result in place and say how many weights the rule prunes (the plan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tamp.config import MethodConfig
from tamp.pruning.magnitude import magnitude_metric, official_magnitude_sparsity
from tamp.pruning.masks import nm_mask, tensor_mask, unstructured_mask
from tamp.pruning.registry import register_pruner
from tamp.pruning.sparsegpt import DAMPINGS, sparsegpt_prune
from tamp.pruning.stats import HessianStats, SquaredNormStats
from tamp.pruning.wanda import wanda_metric

NM = tuple[int, int] | None


def _mask_from_metric(metric: torch.Tensor, sparsity: float, nm: NM) -> torch.Tensor:
    return nm_mask(metric, *nm) if nm else unstructured_mask(metric, sparsity)


class Pruner:
    """Base: per-row unstructured or N:M masks from a metric; stats gathered per linear."""

    name = ""
    needs_stats = True

    def new_stats(self, linear: nn.Linear) -> Any | None:
        return None

    def planned_pruned(self, linear: nn.Linear, sparsity: float, nm: NM) -> int:
        rows, cols = linear.weight.shape
        if nm:
            return rows * (cols // nm[1]) * nm[0]
        return rows * int(cols * sparsity)

    def prune(self, linear: nn.Linear, stats: Any, sparsity: float, nm: NM, name: str) -> torch.Tensor:
        """Zero the pruned weights of `linear` in place and return the mask (True = pruned)."""
        mask = _mask_from_metric(self.metric(linear, stats), sparsity, nm)
        linear.weight.data.masked_fill_(mask, 0)
        return mask

    def metric(self, linear: nn.Linear, stats: Any) -> torch.Tensor:
        raise NotImplementedError


MAGNITUDE_GROUPS = ("tensor", "row")


@dataclass
class MagnitudeMethodConfig(MethodConfig):
    """A method with the magnitude pruner: its comparison group, `compat_magnitude` for the official code.

    `tensor` (the default) compares |W| against one threshold over the whole weight, as Wanda's and
    SparseGPT's magnitude baselines and the official TAMP code do; `row` ranks within each output row.
    """

    pruner: str = "magnitude"
    magnitude_group: str = "tensor"
    compat_magnitude: bool = False  # official code's signed-weight magnitude that prunes 1 - p

    def check(self) -> None:
        if self.magnitude_group not in MAGNITUDE_GROUPS:
            raise ValueError(
                f"method.magnitude_group={self.magnitude_group!r} is unknown; valid: {', '.join(MAGNITUDE_GROUPS)}"
            )

    def variant_notes(self) -> dict[str, str]:
        if self.compat_magnitude:
            return {"pruner": "magnitude as the TAMP repository (signed weights, prunes 1 - p; as published)"}
        where = "one threshold per weight tensor" if self.magnitude_group == "tensor" else "ranked per output row"
        return {"pruner": f"magnitude |W|, {where} (the original baseline)"}


@dataclass
class SparseGPTMethodConfig(MethodConfig):
    """A method with the SparseGPT pruner: its column block size, Hessian dampening and when it applies.

    `damping: always` is the original SparseGPT; `on_failure` the TAMP repository's `fastprune` (damped
    only when Cholesky fails), which the paper's SparseGPT rows came from (preset sparsegpt_official).
    """

    pruner: str = "sparsegpt"
    blocksize: int = 128
    percdamp: float = 0.01
    damping: str = "always"  # always | on_failure

    def check(self) -> None:
        if self.blocksize <= 0 or not math.isfinite(self.percdamp) or self.percdamp < 0:
            bad = f"method.blocksize={self.blocksize}" if self.blocksize <= 0 else f"method.percdamp={self.percdamp}"
            raise ValueError(f"{bad} is out of range; valid: method.blocksize >= 1, method.percdamp >= 0")
        if self.damping not in DAMPINGS:
            raise ValueError(f"method.damping='{self.damping}' is unknown; valid: {', '.join(DAMPINGS)}")

    def variant_notes(self) -> dict[str, str]:
        if self.damping == "on_failure":
            return {"pruner": "SparseGPT as the TAMP repository's fastprune (undamped Hessian, damped only "
                              "when Cholesky fails; as published)"}
        return {"pruner": "the original SparseGPT (Hessian always damped)"}


@register_pruner("magnitude", config=MagnitudeMethodConfig)
class MagnitudePruner(Pruner):
    """|W| over the whole tensor (or per row); `compat_official` is the official code's signed ranking and 1 - p."""

    name = "magnitude"
    needs_stats = False

    def __init__(self, compat_official: bool | MagnitudeMethodConfig = False, group: str = "tensor") -> None:
        if isinstance(compat_official, MagnitudeMethodConfig):
            compat_official, group = compat_official.compat_magnitude, compat_official.magnitude_group
        if group not in MAGNITUDE_GROUPS:
            raise ValueError(f"method.magnitude_group={group!r} is unknown; valid: {', '.join(MAGNITUDE_GROUPS)}")
        self.compat_official = compat_official
        self.group = group

    def _sparsity(self, sparsity: float) -> float:
        return official_magnitude_sparsity(sparsity) if self.compat_official else sparsity

    def planned_pruned(self, linear: nn.Linear, sparsity: float, nm: NM) -> int:
        if self.group == "tensor" and not nm:
            return int(linear.weight.numel() * self._sparsity(sparsity))
        return super().planned_pruned(linear, self._sparsity(sparsity), nm)

    def prune(self, linear: nn.Linear, stats: Any, sparsity: float, nm: NM, name: str) -> torch.Tensor:
        if self.group == "tensor" and not nm:
            mask = tensor_mask(self.metric(linear, stats), self._sparsity(sparsity))
            linear.weight.data.masked_fill_(mask, 0)
            return mask
        return super().prune(linear, stats, self._sparsity(sparsity), nm, name)

    def metric(self, linear: nn.Linear, stats: Any) -> torch.Tensor:
        return magnitude_metric(linear.weight, compat_official=self.compat_official)


@register_pruner("wanda")
class WandaPruner(Pruner):
    """|W_ij| * ||X_j||: needs the per-column squared norms of the (selected) inputs."""

    name = "wanda"

    def __init__(self, cfg: MethodConfig | None = None) -> None:
        pass

    def new_stats(self, linear: nn.Linear) -> SquaredNormStats:
        return SquaredNormStats(linear.in_features, linear.weight.device)

    def metric(self, linear: nn.Linear, stats: SquaredNormStats) -> torch.Tensor:
        return wanda_metric(linear.weight, stats.scaler_row("samples"))


@register_pruner("sparsegpt", config=SparseGPTMethodConfig)
class SparseGPTPruner(Pruner):
    """OBS reconstruction from the input Hessian; the mask is read off the zeros it leaves."""

    name = "sparsegpt"

    def __init__(
        self, blocksize: int | SparseGPTMethodConfig = 128, percdamp: float = 0.01, damping: str = "always"
    ) -> None:
        if isinstance(blocksize, SparseGPTMethodConfig):
            blocksize, percdamp, damping = blocksize.blocksize, blocksize.percdamp, blocksize.damping
        self.blocksize = blocksize
        self.percdamp = percdamp
        self.damping = damping

    def new_stats(self, linear: nn.Linear) -> HessianStats:
        return HessianStats(linear.in_features, linear.weight.device)

    def planned_pruned(self, linear: nn.Linear, sparsity: float, nm: NM) -> int:
        if nm or sparsity == 0.0:
            return super().planned_pruned(linear, sparsity, nm)
        # SparseGPT thresholds each column block at its int(numel * p)-th score and prunes `<=` it
        rows, cols = linear.weight.shape
        widths = [min(self.blocksize, cols - i) for i in range(0, cols, self.blocksize)]
        return sum(int(rows * w * sparsity) + 1 for w in widths)

    def prune(self, linear: nn.Linear, stats: HessianStats, sparsity: float, nm: NM, name: str) -> torch.Tensor:
        n, m = nm or (0, 0)
        pruned = sparsegpt_prune(
            linear.weight.data, stats.hessian(), sparsity, n, m, self.blocksize, self.percdamp, name=name,
            damping=self.damping,
        )
        linear.weight.data.copy_(pruned)
        return pruned == 0


@register_pruner("none")
class NoPruner(Pruner):
    """The dense reference: plans and prunes nothing, so a dense run goes through the same code."""

    name = "none"
    needs_stats = False

    def __init__(self, cfg: MethodConfig | None = None) -> None:
        pass

    def planned_pruned(self, linear: nn.Linear, sparsity: float, nm: NM) -> int:
        return 0

    def prune(self, linear: nn.Linear, stats: Any, sparsity: float, nm: NM, name: str) -> torch.Tensor:
        return torch.zeros_like(linear.weight, dtype=torch.bool)


def build_pruner(method: MethodConfig | str) -> Pruner:
    """The pruner of a method's settings (or of a bare pruner name, with that pruner's defaults)."""
    from tamp.pruning.registry import PRUNERS, pruner_settings

    settings = pruner_settings({"pruner": method}) if isinstance(method, str) else method
    return PRUNERS.build(settings, name_key="pruner")
