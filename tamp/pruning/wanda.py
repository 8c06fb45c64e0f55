"""Wanda: weight magnitude times input activation norm; the squared-norm statistic it needs and its pruner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from tamp.core.config import MethodConfig
from tamp.core.registries import lazy_module
from tamp.pruning.base import Pruner, token_rows
from tamp.pruning.registry import register_pruner

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    torch, nn = lazy_module("torch"), lazy_module("torch.nn")

__all__ = ["SquaredNormStats", "WandaPruner", "wanda_metric"]

Normalize = Literal["samples", "tokens"]


def wanda_metric(weight: Tensor, sq_norm: Tensor) -> Tensor:
    """``|W| * sqrt(sq_norm)[None, :]`` in float32.

    ``sq_norm[j]`` is the (possibly normalised) sum of ``x_j^2`` over the counted tokens; a constant
    scale does not change the per-row ranking, so either normalisation of SquaredNormStats works.
    """
    if sq_norm.dim() != 1 or sq_norm.shape[0] != weight.shape[1]:
        raise ValueError(
            f"sq_norm must have shape [in_features={weight.shape[1]}], got {tuple(sq_norm.shape)}"
        )
    scale = torch.sqrt(sq_norm.detach().to(device=weight.device, dtype=torch.float32))
    return weight.detach().float().abs() * scale[None, :]


class SquaredNormStats:
    """Per input column, the sum over tokens of ``x_j^2`` (Wanda's ``scaler_row`` before normalising)."""

    def __init__(self, in_features: int, device: torch.device | str | None = None) -> None:
        self.in_features = in_features
        self.sum = torch.zeros(in_features, dtype=torch.float32, device=device)
        # [n_samples, n_tokens]: a tensor so that one collective reduces it with the sum.
        self.counts = torch.zeros(2, dtype=torch.int64, device=device)

    @property
    def n_samples(self) -> int:
        return int(self.counts[0].item())

    @property
    def n_tokens(self) -> int:
        return int(self.counts[1].item())

    def add(self, x: Tensor) -> None:
        """Accumulate one sample's (selected) tokens; one reduction, no per-token loop."""
        tokens, samples = token_rows(x, self.in_features)
        tokens = tokens.to(self.sum.device)
        if tokens.shape[0] > 0:
            self.sum += tokens.square().sum(dim=0)
        self.counts[0] += samples
        self.counts[1] += tokens.shape[0]

    def scaler_row(self, normalize: Normalize = "samples") -> Tensor:
        """``sum / n_samples`` (original Wanda: mean over samples) or ``sum / n_tokens`` (TAMP/AMIA).

        Zeros when nothing was counted, rather than NaN.
        """
        if normalize not in ("samples", "tokens"):
            raise ValueError(f"normalize must be 'samples' or 'tokens', got {normalize!r}")
        count = self.counts[0] if normalize == "samples" else self.counts[1]
        return self.sum / count.clamp(min=1).to(torch.float32)

    def tensors(self) -> list[Tensor]:
        """The state tensors themselves (not copies): all-reduce(sum) them in place to merge processes."""
        return [self.sum, self.counts]

    def copy(self) -> SquaredNormStats:
        """An independent statistic with the same sums (a linear leaving a shared statistic keeps its past)."""
        other = SquaredNormStats.__new__(SquaredNormStats)
        other.in_features, other.sum, other.counts = self.in_features, self.sum.clone(), self.counts.clone()
        return other


@register_pruner("wanda")
class WandaPruner(Pruner):
    """|W_ij| * ||X_j||: needs the per-column squared norms of the (selected) inputs."""

    name = "wanda"
    input_only_stats = True  # SquaredNormStats: in_features and device, then the rows

    def __init__(self, cfg: MethodConfig | None = None) -> None:
        pass

    def new_stats(self, linear: nn.Linear) -> SquaredNormStats:
        return SquaredNormStats(linear.in_features, linear.weight.device)

    def metric(self, linear: nn.Linear, stats: SquaredNormStats) -> torch.Tensor:
        return wanda_metric(linear.weight, stats.scaler_row("samples"))
