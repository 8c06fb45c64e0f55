"""The contract between the layer-wise engine and the allocations, declared once: neither imports the other.

An allocation (tamp.sparsity) sees the model as a `ScoringModel`, is told each targeted linear's input
and output as a `BlockObserver` and perturbs `PerturbedUnit`s; the engine (tamp.pipeline.engine) is a
ScoringModel and calls these. A leaf: nothing of tamp or torch is imported when it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tamp.data.sample import CalibSample


class BlockObserver(Protocol):
    """Told every targeted linear's input X [T, C_in] and output Z [T, C_out] per sample, then each block's end."""

    def observe(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: Any) -> None: ...

    def end_block(self, index: int, linears: dict[str, nn.Linear], model: ScoringModel) -> None: ...


class PerturbedUnit(Protocol):
    """Weight tensors perturbed together and the decoder block that owns them."""

    block: int
    linears: list[nn.Linear]


class ScoringModel(Protocol):
    """What an allocation may ask of the model: its targeted linears and dense scoring passes over it."""

    #: the targeted linears of every decoder block, {name: nn.Linear} per block (shapes, weights)
    linears: list[dict[str, nn.Linear]]
    blocks: Sequence[nn.Module]
    device: torch.device
    samples: Sequence[CalibSample]  # this process's calibration samples
    indices: Sequence[int]  # each local sample's position in the whole calibration set

    def block_name(self, index: int) -> str:
        """The module path of decoder block `index` (`model.layers.3`)."""
        ...

    def scoring_pass(self, observer: BlockObserver, desc: str = "scoring") -> None:
        """Dense forward over all blocks with every targeted linear observed (checkpointed per block)."""
        ...

    def perturbation_pass(
        self,
        units: Sequence[PerturbedUnit],
        positions: Sequence[int],
        labels: Sequence[torch.Tensor],
        eps: float,
        direction: Callable[[int, int], list[torch.Tensor]],
        score: Callable[[float, float], float],
        dtype: torch.dtype | None = None,
        desc: str = "perturbation scoring",
    ) -> list[float]:
        """Per unit, the sum over the samples at `positions` of `score(L(w + eps d), L(w - eps d))`."""
        ...

    def reduce_(self, tensors: list[torch.Tensor]) -> None:
        """Sum statistics across processes in place (no-op on one process)."""
        ...

    def on_device(self, block: nn.Module, writes: bool = False) -> AbstractContextManager[nn.Module]:
        """`block` on the compute device inside the `with`."""
        ...
