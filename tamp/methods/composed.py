"""The default layer-wise method, pruner x allocation x tokens assembled from their registries by name,
and `build_method`, which builds the method `method.kind` names (tamp.core.registries.METHODS).
Linears that read one input share one statistic (tamp.methods.shared_statistics).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any, TypeVar

import torch
from torch import nn

from tamp.core.config import MethodConfig, PruneConfig, parse_pattern
from tamp.core.protocols import LayerwiseMethod
from tamp.core.registries import METHODS, method_kind, register_method
from tamp.methods.components import check_sample_counts, resolve_method, sample_counts
from tamp.methods.shared_statistics import SharedStatistics
from tamp.pipeline.context import SampleContext
from tamp.pipeline.engine import NonFiniteError
from tamp.pruning.base import Pruner, all_finite
from tamp.pruning.registry import PRUNERS
from tamp.sparsity.allocate import Group, layer_groups
from tamp.sparsity.mixed_nm import describe, linear_n, mixed_plan, summarise
from tamp.sparsity.registry import ALLOCATIONS, Allocation
from tamp.sparsity.shared import ScoreStore, shares_scores
from tamp.tokens.registry import SELECTORS, TokenSelector

S = TypeVar("S")
log = logging.getLogger("tamp")


def with_run_seed(settings: S, seed: int) -> S:
    """A component's `seed: None` setting means the run's seed: a seed sweep then changes its draws."""
    if any(f.name == "seed" for f in fields(settings)) and settings.seed is None:
        return replace(settings, seed=seed)
    return settings


def _check_finite(name: str, tensors: list[torch.Tensor]) -> None:
    for tensor in tensors:
        if tensor.is_floating_point() and not bool(all_finite(tensor)):
            raise NonFiniteError(f"non-finite calibration statistics (NaN/inf) for {name}; masks would be meaningless")


class ComposedMethod(LayerwiseMethod):
    """The LayerwiseMethod the engine runs: statistics from selected tokens, masks by the pruner."""

    def __init__(self, pruner: Pruner, allocation: Allocation, tokens: TokenSelector, target: float, pattern: str,
                 allocation_name: str = ""):
        self.pruner = pruner
        self.allocation = allocation
        self.allocation_name = allocation_name or type(allocation).__name__
        self.tokens = tokens
        self.target = target
        self.nm = parse_pattern(pattern)
        self.stats: dict[str, Any] = {}
        #: this block's shared statistics (None: every linear accumulates its own, as the selector or the
        #: pruner do not declare that the statistic depends on the input alone)
        self.sharing: SharedStatistics | None = None
        #: the method's settings that count calibration samples, checked against the samples at plan time
        self.settings: MethodConfig | None = None
        #: where the allocation's dense scores are shared with other runs, and their key (tamp.prune's score_store)
        self.score_store: ScoreStore | None = None
        self.score_key: Callable[[], dict[str, str]] | None = None

    @classmethod
    def from_config(cls, cfg: PruneConfig) -> ComposedMethod:
        """The method of `cfg`; resolved settings (tamp.prune's, a RunConfig's) are only checked, not rebuilt."""
        m = resolve_method(cfg.method)
        method = cls(
            PRUNERS.build(m, name_key="pruner"),
            ALLOCATIONS.build(with_run_seed(m.allocation, cfg.seed)),
            SELECTORS.build(with_run_seed(m.tokens, cfg.seed)),
            cfg.sparsity.target,
            cfg.sparsity.pattern,
            m.allocation.name,
        )
        method.settings = m
        return method

    def plan_state(self) -> dict[str, Any]:
        """What a checkpoint keeps beside the plan: the allocation's scores (restored on resume)."""
        return {"allocation_scores": {k: float(v) for k, v in getattr(self.allocation, "scores", {}).items()}}

    def restore_plan_state(self, state: dict[str, Any]) -> None:
        scores = state.get("allocation_scores")
        if scores is not None and hasattr(self.allocation, "scores"):
            self.allocation.scores = dict(scores)

    @property
    def needs_block_forward(self) -> bool:
        return self.pruner.needs_stats

    #: a block's statistics (pruner statistic of the selected tokens) do not depend on the plan: the engine
    #: may gather block 0's during the dense scoring pass, whose forward of block 0 is the same one
    stats_need_no_plan = True

    def plan(self, engine) -> dict[str, float]:
        self._check_sample_counts(engine)
        if not self.nm:
            return self._allocate(engine, self.target)
        n, m = self.nm
        for linears in engine.linears:
            for name, linear in linears.items():
                if linear.in_features % m:
                    raise ValueError(
                        f"sparsity.pattern={n}:{m} needs in_features divisible by {m}, but {name} has "
                        f"{linear.in_features}; use a pattern whose M divides it or exclude it (runner.ignore)"
                    )
        if getattr(self.allocation, "uniform", False):
            return {name: n / m for linears in engine.linears for name in linears}
        # a layer-wise allocation under N:M: mixed N per allocation group, M fixed (tamp.sparsity.mixed_nm)
        allocated = self._allocate(engine, n / m)
        groups = allocation_groups(self.allocation, engine)
        plan = mixed_plan(allocated, groups, n, m)
        summary = summarise(plan, n, m, self.allocation_name)
        log.log(logging.INFO if summary["mixed"] else logging.WARNING, describe(summary))
        return plan

    def _allocate(self, engine, target: float) -> dict[str, float]:
        """The allocation's plan; its dense scores from the score store when it has them for this key."""
        allocation = self.allocation
        if self.score_store is None or self.score_key is None or not shares_scores(allocation):
            return allocation.plan(engine, target)
        state = self.score_store.fetch(self.score_key(), lambda: allocation.score(engine))
        return allocation.allocate(engine, state, target)

    def _check_sample_counts(self, engine) -> None:
        """Before any scoring: no setting counts more samples than the whole calibration set (all processes)."""
        if self.settings is None or not sample_counts(self.settings):
            return
        total = torch.tensor([float(len(engine.samples))])
        engine.reduce_([total])  # every process plans: the sum is the whole set's size
        check_sample_counts(self.settings, int(total.item()))

    def nm_of(self, planned: float) -> tuple[int, int] | None:
        """The N:M pattern a linear with this planned sparsity is pruned with (N varies under an allocation)."""
        if not self.nm:
            return None
        return linear_n(planned, self.nm[1]), self.nm[1]

    def planned_pruned(self, linear: nn.Linear, planned: float, nm: tuple[int, int] | None) -> int:
        """The pruner's count; a linear mixed N:M left at N = 0 stays dense."""
        return 0 if nm is not None and nm[0] == 0 else self.pruner.planned_pruned(linear, planned, nm)

    def allocation_scores(self) -> dict[str, float]:
        return {k: float(v) for k, v in getattr(self.allocation, "scores", {}).items()}

    def nm_summary(self, plan: dict[str, float]) -> dict[str, Any] | None:
        return summarise(plan, *self.nm, self.allocation_name) if self.nm else None

    def begin_block(self, index: int, linears: dict[str, nn.Linear]) -> None:
        self.stats = {name: self.pruner.new_stats(linear) for name, linear in linears.items()}
        shares = getattr(self.tokens, "input_only", False) and getattr(self.pruner, "input_only_stats", False)
        self.sharing = SharedStatistics(self.stats) if shares else None

    def observe(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: SampleContext) -> None:
        stats = self.stats.get(name)
        if stats is None:
            return

        def rows() -> torch.Tensor:
            index = self.tokens.select(name, x, z, ctx)
            return x if index is None else x.index_select(0, index)

        if self.sharing is None:
            stats.add(rows())
        else:
            self.sharing.observe(name, x, ctx, rows)

    def end_block(
        self, index: int, linears: dict[str, nn.Linear], plan: dict[str, float], engine
    ) -> dict[str, torch.Tensor]:
        if self.sharing is not None:
            self.sharing.finish([name for name in linears if self.stats.get(name) is not None], engine.reduce_)
        masks = {}
        merged: set[int] = set()  # statistics already all-reduced and checked (a shared one: once)
        try:
            for name, linear in linears.items():
                stats = self.stats.get(name)
                if stats is not None and id(stats) not in merged:
                    merged.add(id(stats))
                    engine.reduce_(stats.tensors())
                    _check_finite(name, stats.tensors())
                nm = self.nm_of(plan[name])
                if nm is not None and nm[0] == 0:  # mixed N:M gave this linear N = 0: it stays dense
                    masks[name] = torch.zeros_like(linear.weight, dtype=torch.bool)
                else:
                    masks[name] = self.pruner.prune(linear, stats, plan[name], nm, name)
        finally:
            block_done = getattr(self.pruner, "block_done", None)  # Pruner's; a duck-typed pruner may lack it
            if block_done is not None:
                block_done()
        self.stats, self.sharing = {}, None
        return masks


@register_method("composed")
def composed(cfg: PruneConfig) -> ComposedMethod:
    """`method.kind=composed` (the default): every preset of conf/method."""
    return ComposedMethod.from_config(cfg)


def build_method(cfg: PruneConfig) -> LayerwiseMethod:
    """The layer-wise method `cfg.method` selects by its kind, built from the whole job's settings."""
    return METHODS.get(method_kind(cfg.method)).factory(cfg)


def allocation_groups(allocation: Allocation, engine) -> list[Group]:
    """The groups an allocation gives one sparsity each (its own `groups(engine)`, else one per linear)."""
    groups = getattr(allocation, "groups", None)
    return groups(engine) if callable(groups) else layer_groups(engine)
