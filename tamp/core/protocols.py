"""The contract between the layer-wise engine and the allocations, declared once: neither imports the other.

An allocation (tamp.sparsity) sees the model as a `ScoringModel`, is told each targeted linear's input
and output as a `BlockObserver` and perturbs `PerturbedUnit`s; the engine (tamp.pipeline.engine) is a
ScoringModel and calls these. A pruning method is a `LayerwiseMethod` the engine runs block by block
(tamp.methods.composed.ComposedMethod, pruner x allocation x tokens, is one; others register by `method.kind`).
A leaf: nothing of tamp or torch is imported when it runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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


class LayerwiseMethod(ABC):
    """A pruning method as the layer-wise engine runs it (tamp.pipeline.engine.LayerwiseEngine.prune).

    The engine calls `plan` once (dense scoring passes allowed), then per decoder block `begin_block`,
    `observe` for every targeted linear's input X [T, C_in] and output Z [T, C_out] of every sample (only
    when `needs_block_forward`), and `end_block`, which zeroes the pruned weights in place and returns the
    masks (True = pruned). The block's pruned outputs feed the next block. Register an implementation
    with `tamp.core.registries.register_method(kind, config=Settings)`; `method.kind` selects it. The other
    members have defaults: a method without a checkpointed plan state, an N:M pattern or allocation scores
    leaves them as they are.
    """

    #: False when masks need no calibration statistics: the per-block statistics forward is skipped
    needs_block_forward: bool = True

    @abstractmethod
    def plan(self, engine: ScoringModel) -> dict[str, float]:
        """The sparsity of every targeted linear, by name (`engine.linears`)."""

    def begin_block(self, index: int, linears: dict[str, nn.Linear]) -> None:
        """Block `index` starts: reset per-block statistics."""
        return None  # nothing to do unless the method keeps state

    def observe(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: Any) -> None:
        """One sample's input and output of linear `name` (ctx: tamp.pipeline.context.SampleContext)."""
        return None  # nothing to do unless the method keeps state

    @abstractmethod
    def end_block(
        self, index: int, linears: dict[str, nn.Linear], plan: dict[str, float], engine: ScoringModel
    ) -> dict[str, torch.Tensor]:
        """Prune the block's linears in place; their masks by name. Sum statistics with `engine.reduce_` first."""

    def plan_state(self) -> dict[str, Any]:
        """What a checkpoint keeps beside the plan, handed back to `restore_plan_state` on resume."""
        return {}

    def restore_plan_state(self, state: dict[str, Any]) -> None:
        """A resumed run's `plan_state`."""
        return None  # nothing to do unless the method keeps state

    def nm_of(self, planned: float) -> tuple[int, int] | None:
        """The N:M pattern a linear with this planned sparsity is pruned with; None: not N:M."""
        return None

    def planned_pruned(self, linear: nn.Linear, planned: float, nm: tuple[int, int] | None) -> int:
        """How many weights of `linear` the plan prunes (the summary's planned column)."""
        return round(planned * linear.weight.numel())

    def allocation_scores(self) -> dict[str, float]:
        """The allocation's scores by unit, where the plan came from scores (recorded in the summary)."""
        return {}

    def nm_summary(self, plan: dict[str, float]) -> dict[str, Any] | None:
        """The N:M plan's summary (tamp.sparsity.mixed_nm.summarise); None when not N:M."""
        return None
