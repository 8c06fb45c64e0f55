"""The ECoFLaP layer-wise sparsity allocator used by TAMP (DAS) and ECoFLaP.

Groups (linears or blocks) with a higher score keep more weights. Every group starts at its floor
ceil(n_g * (1 - max_sparsity)) (so no group is pruned beyond the cap), then the remaining budget of
K = int(N * (1 - target)) kept weights is handed out in proportion to the scores, rounding up, until it is
spent; the rounding over-shoot is taken back from the groups that keep the most. The result keeps exactly
K weights. Note that keep grows with the score regardless of the group's size (aggregation "sum"), so
small layers end near 0% sparsity; aggregation "avg" divides each score by the group's size first.
"""

from __future__ import annotations

import math

AGGREGATIONS = ("sum", "avg")


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
