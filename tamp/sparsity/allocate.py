"""The layer-wise allocator shared by TAMP's DAS, ECoFLaP and OWL: groups of linears, the ECoFLaP allocator, the row grid.

The ECoFLaP allocator (`allocate`, DESIGN.md "Allocator"): groups (linears or blocks) with a higher score
keep more weights. Every group starts at its floor ceil(n_g * (1 - max_sparsity)) (so no group is pruned
beyond the cap), then the remaining budget of K = int(N * (1 - target)) kept weights is handed out in
proportion to the scores, rounding up, until it is spent; the rounding over-shoot is taken back from the
groups that keep the most. The result keeps exactly K weights. Note that keep grows with the score
regardless of the group's size (aggregation "sum"), so small layers end near 0% sparsity; aggregation
"avg" divides each score by the group's size first.

Groups (`Group`, `layer_groups`, `module_groups`, `block_groups`) are the linears that receive one
sparsity: a single linear (DAS), a block's attention or MLP (ECoFLaP), or a block (OWL, block-wise DAS).
`allocate_groups` runs the allocator on them with cap target + delta and snaps the result onto the row
grid.

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

from tamp.core.config import AllocationConfig
from tamp.core.registries import lazy_module

if TYPE_CHECKING:
    from torch import nn

    from tamp.sparsity.registry import ScoringModel
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    nn = lazy_module("torch.nn")

log = logging.getLogger(__name__)

AGGREGATIONS = ("sum", "avg")
MIN_GRID = 16  # a group whose in_features share a gcd below this keeps its raw sparsity
_EPS = 1e-9


def _validate(
    scores: dict[str, float], num_params: dict[str, int], target: float, max_sparsity: float, aggregation: str
) -> None:
    if set(scores) != set(num_params):
        missing = sorted(set(scores) ^ set(num_params))
        raise ValueError(f"scores and num_params must have the same keys; differing: {missing[:5]}")
    if not scores:
        raise ValueError("allocate needs at least one group")
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {target}")
    if not target <= max_sparsity <= 1.0:
        raise ValueError(f"max_sparsity must be in [target={target}, 1], got {max_sparsity}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
    for name, n in num_params.items():
        if int(n) != n or n <= 0:
            raise ValueError(f"num_params[{name!r}] must be a positive integer, got {n}")
    for name, s in scores.items():
        if not math.isfinite(s):
            raise ValueError(f"score of {name!r} is not finite: {s}")


def _take_back(keep: list[int], floor: list[int], excess: int, sign: int) -> None:
    """Remove `excess` kept weights from the groups that keep the most, none below its floor.

    sign=+1 reproduces the official code, which adds the same amounts to those groups instead (a bug that
    keeps a little more than the budget; for reproduction only).
    """
    order = sorted(range(len(keep)), key=lambda g: -keep[g])
    for g in order:
        if excess <= 0:
            break
        amount = min(excess, keep[g] - floor[g])
        keep[g] += sign * amount
        excess -= amount


def _hand_out_shortfall(keep: list[int], sizes: list[int], weights: list[float], shortfall: int) -> None:
    """Proportional rounding added nothing: give the shortfall to scored groups in order, then to any."""
    for eligible in (lambda g: weights[g] > 0, lambda g: True):
        for g in range(len(keep)):
            if shortfall <= 0:
                return
            if eligible(g):
                amount = min(shortfall, sizes[g] - keep[g])
                keep[g] += amount
                shortfall -= amount


def allocate(
    scores: dict[str, float],
    num_params: dict[str, int],
    target: float,
    max_sparsity: float,
    aggregation: str = "sum",
    official_overshoot: bool = False,
) -> dict[str, float]:
    """Per-group sparsity {name: p_g}: higher score, lower sparsity; p_g <= max_sparsity; sum keep = K.

    `official_overshoot=True` reproduces the official code's over-shoot branch, which adds the excess
    where it should subtract it (so it keeps slightly more than K); only for reproducing its numbers.
    """
    _validate(scores, num_params, target, max_sparsity, aggregation)
    names = list(scores)
    sizes = [int(num_params[k]) for k in names]
    weights = [float(scores[k]) for k in names]
    if aggregation == "avg":
        weights = [w / n for w, n in zip(weights, sizes, strict=True)]
    weights = [w if w > 0 else 0.0 for w in weights]

    budget = int(sum(sizes) * (1 - target))
    floor = [min(n, math.ceil(n * (1 - max_sparsity))) for n in sizes]
    if sum(floor) > budget:
        raise ValueError(
            f"max_sparsity={max_sparsity} is too tight: the per-group floors keep {sum(floor)} "
            f"weights, more than the budget {budget}"
        )
    keep = list(floor)
    for g, n in enumerate(sizes):
        if keep[g] >= n:
            weights[g] = 0.0

    while sum(keep) < budget:
        remaining = budget - sum(keep)
        total = sum(weights)
        before = sum(keep)
        if total > 0:
            for g, w in enumerate(weights):
                if w > 0:
                    keep[g] += math.ceil(w / total * remaining)
                    if keep[g] >= sizes[g]:
                        keep[g] = sizes[g]
                        weights[g] = 0.0
        if sum(keep) == before:
            _hand_out_shortfall(keep, sizes, weights, remaining)
        excess = sum(keep) - budget
        if excess > 0:
            _take_back(keep, floor, excess, sign=+1 if official_overshoot else -1)
            if official_overshoot:
                break
    return {k: 1.0 - keep[g] / sizes[g] for g, k in enumerate(names)}


# --- groups of linears and the row grid ---

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


def layer_groups(model: ScoringModel) -> list[Group]:
    return [Group(name, {name: linear}) for linears in model.linears for name, linear in linears.items()]


def module_groups(model: ScoringModel) -> list[Group]:
    """One group per child module of a block that holds targeted linears (`...layers.N.self_attn`, `.mlp`).

    ECoFLaP's code groups a weight by its name cut after the fourth component, which on a
    `model.layers.N.self_attn.q_proj.weight` name is the block's attention or MLP. Cutting one component
    below the block instead gives the same groups on every family, whatever the depth of `blocks_path`.
    A linear that sits directly in the block is a group of its own.
    """
    groups: dict[str, Group] = {}
    for i, linears in enumerate(model.linears):
        prefix = model.block_name(i)
        for name, linear in linears.items():
            relative = name.removeprefix(prefix + ".").split(".")
            key = f"{prefix}.{relative[0]}" if len(relative) > 1 else name
            groups.setdefault(key, Group(key, {})).linears[name] = linear
    return list(groups.values())


def block_groups(model: ScoringModel) -> list[Group]:
    """One group per block that has targeted linears (blocks without any are not allocated)."""
    return [Group(model.block_name(i), dict(ls)) for i, ls in enumerate(model.linears) if ls]


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
