"""Mixed N:M: a layer-wise allocation under an N:M pattern, in the sense of OWL's mixed N:M sparsity.

M is the pattern's; each allocation group (a linear for DAS, a block's attention or MLP for ECoFLaP,
a block for OWL and block-wise DAS) gets its own N, so the allocation really moves pruning between
layers while every linear stays N:M structured. A group's N is its allocated sparsity times M,
rounded down or up (never further, and within 0..M-1: 0 leaves the group dense). Which groups round
up is decided by largest remainder, each step adding `numel / M` pruned weights, until the model's
pruned total reaches the pattern's N/M of the targeted weights: exactly when the groups' step sizes
allow it, else the closest the greedy finds (it stops within half of the smallest step still open).
The plan stores N / M per linear, so a linear's N is `round(plan * M)` and a resumed run needs no
more state than the plan.

When the allocation's spread is narrower than one step 1/M, every group rounds to the pattern's N
(OWL's default lambda 0.08 at M = 4 spans 0.42-0.58, which is 1.7-2.3 of 4): the plan is then
uniform, and `summarise` says so (`mixed: false` and a note), as does the one log line of `describe`,
so the run never reads as an allocation it did not make.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from tamp.sparsity.allocate import Group

_EPS = 1e-9


def group_n(sparsity: dict[str, float], groups: list[Group], n: int, m: int) -> dict[str, int]:
    """{group name: its N} for the groups' allocated sparsities; the pruned total meets n/m (see module doc)."""
    units = {g.name: g.size // m for g in groups}  # pruned weights per step of N (size is a multiple of m)
    real = {g.name: min(max(sparsity[g.name] * m, 0.0), m - 1.0) for g in groups}
    steps = {name: math.floor(x + _EPS) for name, x in real.items()}
    deficit = n * sum(units.values()) - sum(steps[k] * units[k] for k in steps)
    order = sorted(steps, key=lambda k: -(real[k] - steps[k]))  # largest remainder first; ties keep group order
    open_up = [k for k in order if real[k] - steps[k] > _EPS and steps[k] < m - 1]
    for exact in (True, False):  # first steps that never overshoot, then any that brings the total closer
        for name in open_up:
            if steps[name] > math.floor(real[name] + _EPS):
                continue  # already rounded up
            unit = units[name]
            if unit <= deficit if exact else unit < 2 * deficit:
                steps[name] += 1
                deficit -= unit
    return steps


def mixed_plan(
    sparsity: dict[str, float], groups: list[Group], n: int, m: int
) -> dict[str, float]:
    """Per-linear plan N_g / M from the allocation's per-linear sparsities (every linear of a group has one)."""
    per_group = {g.name: sparsity[next(iter(g.linears))] for g in groups}
    chosen = group_n(per_group, groups, n, m)
    return {name: chosen[g.name] / m for g in groups for name in g.linears}


def linear_n(planned: float, m: int) -> int:
    """A linear's N from its planned sparsity N / M."""
    return int(round(planned * m))


def summarise(plan: dict[str, float], n: int, m: int, allocation: str) -> dict[str, Any]:
    """What results.json records about the pattern: the N of every linear counted, and whether it is mixed."""
    counts = Counter(linear_n(p, m) for p in plan.values())
    uniform = set(counts) == {n}
    record: dict[str, Any] = {
        "m": m,
        "n": n,
        "allocation": allocation,
        "mixed": not uniform,
        "linears_per_n": {str(k): counts[k] for k in sorted(counts)},
    }
    if uniform and allocation != "uniform":
        record["note"] = f"uniform: the {allocation} allocation rounds to N={n} of M={m} on every linear"
    return record


def describe(summary: dict[str, Any]) -> str:
    """One log line for a plan: the mix of N, or why an allocation's plan came out uniform."""
    m, n, allocation = summary["m"], summary["n"], summary["allocation"]
    mix = ", ".join(f"{count} x {k}:{m}" for k, count in summary["linears_per_n"].items())
    if summary["mixed"]:
        return f"sparsity: mixed N:{m} from the {allocation} allocation, averaging {n}:{m}: {mix}"
    return (f"sparsity: {n}:{m} with the {allocation} allocation is uniform: every linear's allocated sparsity "
            f"rounds to N={n} of M={m}, so this run is {n}:{m} everywhere, not an allocation; a larger M "
            f"(e.g. sparsity.pattern={2 * n}:{2 * m}) or a wider allocation gives a mixed plan")
