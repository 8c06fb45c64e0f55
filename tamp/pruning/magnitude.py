"""Magnitude pruning: the metric |W|, its settings (comparison group, the official code's compat) and its pruner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tamp.core.config import MethodConfig
from tamp.core.registries import lazy_module
from tamp.pruning.base import NM, Pruner
from tamp.pruning.masks import tensor_mask
from tamp.pruning.registry import register_pruner

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    torch, nn = lazy_module("torch"), lazy_module("torch.nn")

__all__ = ["MagnitudeMethodConfig", "MagnitudePruner", "magnitude_metric", "official_magnitude_sparsity"]


def magnitude_metric(weight: Tensor, compat_official: bool = False) -> Tensor:
    """Importance |W| in float32 (lowest is pruned first).

    ``compat_official=True`` is for reproducing the official TAMP tables only: that code ranks the
    signed weights, so it prunes the most negative weights rather than the smallest ones. Use it
    together with :func:`official_magnitude_sparsity`.
    """
    w = weight.detach().float()
    return w.clone() if compat_official else w.abs()


def official_magnitude_sparsity(sparsity: float) -> float:
    """Compat only: the official TAMP magnitude baseline prunes ``1 - p`` when asked for ``p``."""
    return 1.0 - sparsity


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


@register_pruner("magnitude", config=MagnitudeMethodConfig)
class MagnitudePruner(Pruner):
    """|W| over the whole tensor (or per row); `compat_official` is the official code's signed ranking and 1 - p."""

    name = "magnitude"
    needs_stats = False

    def __init__(self, compat_official: bool | MagnitudeMethodConfig = False, group: str = "tensor") -> None:
        settings = (compat_official if isinstance(compat_official, MagnitudeMethodConfig)
                    else MagnitudeMethodConfig(magnitude_group=group, compat_magnitude=compat_official))
        settings.check()  # the one range check, for a pruner built by hand too
        self.compat_official = settings.compat_magnitude
        self.group = settings.magnitude_group

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
