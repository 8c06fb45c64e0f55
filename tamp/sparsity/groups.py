"""Groups of linears an allocation ranks (one linear, a block's attention or MLP, or one block), and their plan.

Why the rounding step (`snap`): Wanda and magnitude prune `int(in_features * p)` weights per row, so
a real-valued sparsity p loses up to one weight per row to the floor. On the paper's models that is
below 1/4096; on small models (tiny in_features of 64) it costs most of a percent of the overall
target. `snap` therefore moves each group's sparsity onto its row grid (multiples of 1 / g, g = the
gcd of its linears' in_features, so every linear of a block-uniform group prunes exactly p) and
spends the rounding by largest remainder, so the group total stays within half a grid step of the
allocator's budget, never above a group's cap. Groups whose grid is coarser than 1/16 (odd shapes)
keep their raw sparsity.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from tamp.config import AllocationConfig
from tamp.sparsity.allocate import AGGREGATIONS, allocate

if TYPE_CHECKING:
    from tamp.pipeline.engine import LayerwiseEngine

log = logging.getLogger(__name__)

MIN_GRID = 16  # a group whose in_features share a gcd below this keeps its raw sparsity
_EPS = 1e-9


@dataclass
class Group:
    """Linears that receive one sparsity: a single linear, a child module of a block, or a block."""

    name: str
    linears: dict[str, nn.Linear]

    @property
    def size(self) -> int:
        return sum(linear.weight.numel() for linear in self.linears.values())

    @property
    def grid(self) -> int:
        """Sparsities k / grid prune a whole number of weights in every row of every linear."""
        return math.gcd(*(linear.in_features for linear in self.linears.values()))


def block_name(engine: LayerwiseEngine, index: int) -> str:
    return f"{engine.adapter.blocks_path}.{index}"


def layer_groups(engine: LayerwiseEngine) -> list[Group]:
    return [Group(name, {name: linear}) for linears in engine.linears for name, linear in linears.items()]


def module_groups(engine: LayerwiseEngine) -> list[Group]:
    """One group per child module of a block that holds targeted linears (`...layers.N.self_attn`, `.mlp`).

    ECoFLaP's code groups a weight by its name cut after the fourth component, which on a
    `model.layers.N.self_attn.q_proj.weight` name is the block's attention or MLP. Cutting one component
    below the block instead gives the same groups on every family, whatever the depth of `blocks_path`.
    A linear that sits directly in the block is a group of its own.
    """
    groups: dict[str, Group] = {}
    for i, linears in enumerate(engine.linears):
        prefix = block_name(engine, i)
        for name, linear in linears.items():
            relative = name.removeprefix(prefix + ".").split(".")
            key = f"{prefix}.{relative[0]}" if len(relative) > 1 else name
            groups.setdefault(key, Group(key, {})).linears[name] = linear
    return list(groups.values())


def block_groups(engine: LayerwiseEngine) -> list[Group]:
    """One group per block that has targeted linears (blocks without any are not allocated)."""
    return [Group(block_name(engine, i), dict(ls)) for i, ls in enumerate(engine.linears) if ls]


def _exact(steps: int, group: Group) -> float:
    """steps / grid, nudged up by ulps until int(in_features * p) is exact in every linear."""
    p = steps / group.grid
    for linear in group.linears.values():
        while int(linear.in_features * p) * group.grid < linear.in_features * steps:
            p = math.nextafter(p, math.inf)
    return p


def snap(sparsity: dict[str, float], groups: list[Group], cap: float | dict[str, float]) -> dict[str, float]:
    """Group sparsities on their row grids, same total pruned weights (to within half a step)."""
    caps = cap if isinstance(cap, dict) else {g.name: cap for g in groups}
    wanted = sum(g.size * sparsity[g.name] for g in groups)
    steps: dict[str, int] = {}
    total = 0.0
    for g in groups:
        p = sparsity[g.name]
        if g.grid < MIN_GRID:
            total += g.size * p
            continue
        steps[g.name] = math.floor(g.grid * p + _EPS)
        total += g.size * steps[g.name] / g.grid
    deficit = wanted - total
    by_name = {g.name: g for g in groups}
    remainder = {n: by_name[n].grid * sparsity[n] - k for n, k in steps.items()}
    for name in sorted(steps, key=lambda n: -remainder[n]):  # stable: ties keep the group order
        g = by_name[name]
        unit = g.size / g.grid
        if unit < 2 * deficit and (steps[name] + 1) / g.grid <= caps[name] + _EPS:
            steps[name] += 1
            deficit -= unit
    out = {}
    for g in groups:
        if g.name in steps:
            out[g.name] = _exact(steps[g.name], g)
        else:
            out[g.name] = sparsity[g.name]
    return out


def expand(sparsity: dict[str, float], groups: list[Group]) -> dict[str, float]:
    """Per-linear plan: every linear of a group gets the group's sparsity."""
    return {name: sparsity[g.name] for g in groups for name in g.linears}


@dataclass
class GroupAllocationConfig(AllocationConfig):
    """The ECoFLaP allocator's knobs, shared by every allocation that scores groups of linears."""

    max_sparsity_delta: float = 0.1  # the allocator's cap is target + delta
    aggregation: str = "sum"  # sum | avg
    official_overshoot: bool = False  # reproduce the official allocator's over-shoot branch

    def check(self) -> None:
        delta = self.max_sparsity_delta
        if not (isinstance(delta, (int, float)) and math.isfinite(delta) and 0 <= delta <= 1):
            raise ValueError(f"method.allocation.max_sparsity_delta={delta} is out of range; valid: 0 <= delta <= 1")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"method.allocation.aggregation='{self.aggregation}' is unknown; "
                             f"valid: {', '.join(AGGREGATIONS)}")

    def variant_notes(self) -> dict[str, str]:
        if self.official_overshoot:
            return {"allocator": "the official over-shoot branch (adds the excess; as published)"}
        return {"allocator": "exact budget (the official over-shoot branch corrected)"}


def allocate_groups(
    groups: list[Group], scores: dict[str, float], target: float, cfg: GroupAllocationConfig
) -> tuple[dict[str, float], dict[str, float]]:
    """(per-linear plan, per-group sparsity) from the ECoFLaP allocator with cap target + delta."""
    cap = min(1.0, target + cfg.max_sparsity_delta)
    clean = {}
    for name, score in scores.items():
        if not math.isfinite(score):
            log.warning("allocation: score of %s is %s (no statistic defined); using 0", name, score)
            score = 0.0
        clean[name] = score
    sizes = {g.name: g.size for g in groups}
    raw = allocate(clean, sizes, target, cap, cfg.aggregation, cfg.official_overshoot)
    per_group = snap(raw, groups, cap)
    return expand(per_group, groups), per_group
