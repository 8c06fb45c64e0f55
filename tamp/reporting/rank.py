"""Best / second-best per column among the pruned rows of one sparsity, as the paper marks them."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from tamp.reporting.runs import Column

if TYPE_CHECKING:
    from tamp.reporting.table import Row

AVG = "avg_rel"
BEST, SECOND = "best", "second"


def _marks_of(values: dict[int, float]) -> dict[int, str]:
    """Rows holding the highest value are best, those holding the next distinct value second (ties share)."""
    if len(values) < 2:  # a lone row has nothing to be compared with
        return {}
    distinct = sorted({round(v, 9) for v in values.values()}, reverse=True)
    top = distinct[:2]
    return {i: BEST if round(v, 9) == top[0] else SECOND for i, v in values.items() if round(v, 9) in top}


def rank_marks(rows: list[Row], columns: list[Column]) -> dict[tuple[int, str], str]:
    """Marks for every (row index, column label or AVG); higher is better; failed or missing cells never rank."""
    groups: dict[tuple[float, str], list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        if not row.dense and row.completed:
            groups[(row.target, row.pattern)].append(index)
    marks: dict[tuple[int, str], str] = {}
    for members in groups.values():
        for label in [c.label for c in columns] + [AVG]:
            values = {i: rows[i].avg_rel if label == AVG else rows[i].scores.get(label) for i in members}
            present = {i: v for i, v in values.items() if v is not None}
            marks |= {(i, label): mark for i, mark in _marks_of(present).items()}
    return marks
