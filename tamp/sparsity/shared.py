"""Dense allocation scores shared between runs: what an allocation knows before it knows the target.

DAS, OWL and ECoFLaP score the dense model first (a scoring or perturbation pass over the calibration
samples) and only then turn the scores into per-linear sparsities for the target. A sweep over
sparsities therefore needs the scores once per model, calibration set and allocation setting. An
allocation that splits its `plan` this way (`score` then `allocate`, the `ScoredAllocation` protocol)
lets `tamp.prune(..., score_store=...)` fetch its scores from a store (tamp.cli.score_cache: a sweep's
cache folder) instead of computing them; without a store `plan` runs as always.

The state an allocation shares is plain: {part: {name: float}} (e.g. {"layer": {linear: score}}), so a
store can keep it as JSON and a process can broadcast it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: this module imports no torch (tamp.cli.score_cache reads it)
    from tamp.sparsity.registry import ScoringModel

#: {part: {linear, group or block name: score}}: everything `allocate` needs besides the target
ScoreState = dict[str, dict[str, float]]
#: the name results.json and the stores use for this kind of shared work
KIND = "allocation_scores"


@runtime_checkable
class ScoredAllocation(Protocol):
    """An allocation whose dense scores do not depend on the target sparsity."""

    def score(self, model: ScoringModel) -> ScoreState:
        """The dense scores (passes over the model and samples, summed over processes)."""
        ...

    def allocate(self, model: ScoringModel, state: ScoreState, target: float) -> dict[str, float]:
        """The per-linear plan for `target` from `state` (this run's or another's `score`)."""
        ...


class ScoreStore(Protocol):
    """Where scores computed once are kept for every run with the same key (tamp.cli.score_cache)."""

    def fetch(self, key: dict[str, str], compute: Callable[[], ScoreState]) -> ScoreState:
        """The stored state of `key`, else `compute()` (stored for the next run). Every process calls it."""
        ...


def shares_scores(allocation: Any) -> bool:
    """Whether `allocation` splits its plan into target-free scores and an allocation step."""
    return isinstance(allocation, ScoredAllocation)


def check_state(state: Any, where: str) -> ScoreState:
    """`state` as a ScoreState, or a one-line ValueError naming `where` (a store's file)."""
    if not isinstance(state, dict) or not all(
        isinstance(part, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in part.values())
        for part in state.values()
    ):
        raise ValueError(f"{where}: allocation scores must be {{part: {{name: number}}}}")
    return {str(k): {str(n): float(v) for n, v in part.items()} for k, part in state.items()}
