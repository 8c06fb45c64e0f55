"""Rel.%: a pruned run's score as a percentage of the dense model's, per column, and their average.

The paper's metric, computed here only: the report's tables (tamp.reporting.table, per seed then over
seeds) and the keys a W&B run logs (tamp.tracking.wandb_keys, one run) call these, so both say the
same number. A column counts when the dense run scored it and not 0 (nothing to divide by otherwise);
Avg Rel.% is the mean over those columns, and none when the pruned run lacks any of them (an average
over part of the columns misleads). This module imports nothing from tamp.
"""

from __future__ import annotations

from collections.abc import Mapping
from statistics import mean

NO_DENSE_SCORE, DENSE_ZERO = "no dense score", "dense score is 0"


def excluded_reason(dense: float | None) -> str | None:
    """Why a column with this dense score has no Rel.%; None when it has one."""
    if dense is None:
        return NO_DENSE_SCORE
    return DENSE_ZERO if dense == 0 else None


def rel_percent(score: float | None, dense: float | None) -> float | None:
    """100 x score / dense score; None when either is missing or the dense score is 0."""
    if score is None or excluded_reason(dense) is not None:
        return None
    return score / dense * 100.0  # type: ignore[operator]


def rel_columns(scores: Mapping[str, float | None], dense: Mapping[str, float | None]) -> dict[str, float | None]:
    """{column: Rel.%} over the columns the dense run has a usable score for (None where the run has none)."""
    return {c: rel_percent(scores.get(c), value) for c, value in dense.items() if excluded_reason(value) is None}


def avg_rel(rels: Mapping[str, float | None]) -> float | None:
    """Avg Rel.%: the mean over the columns, None if any is missing or there are none."""
    values = list(rels.values())
    return mean(values) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]
