"""Mean, sample std and count over seeds; repeats of one seed are averaged first, so they never inflate n."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from statistics import mean, stdev
from typing import Any


@dataclass(frozen=True)
class Stat:
    """A value over seeds: `std` is None with fewer than two seeds that have it."""

    mean: float
    std: float | None
    n: int


def stat(values: list[float | None]) -> Stat | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return Stat(mean(present), stdev(present) if len(present) > 1 else None, len(present))


def by_seed(
    runs: list[dict[str, Any]], seed_of: Callable[[dict[str, Any]], Any]
) -> list[list[dict[str, Any]]]:
    """The runs of each seed, in first-seen order (runs without a recorded seed count as one seed)."""
    seeds: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        seeds[repr(seed_of(run))].append(run)
    return list(seeds.values())


def seed_mean(runs: list[dict[str, Any]], value_of: Callable[[dict[str, Any]], float | None]) -> float | None:
    """One seed's value: the mean over its runs that have one (a sweep may hold the same cell twice)."""
    present = [v for v in map(value_of, runs) if v is not None]
    return mean(present) if present else None
