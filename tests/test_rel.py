"""Rel.% is one computation (tamp.eval.rel): the report's table and a W&B run's keys say the same numbers.

On the hand-made sweep of tests/data/report (dense, wanda and tamp on two tasks), then with a column
the dense model scored 0 and a pruned run without a number in a column: both paths leave out the same columns and
give no average over part of them.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tamp.cli.report_command import build_report
from tamp.eval.rel import avg_rel, rel_columns, rel_percent
from tamp.reporting import load_results
from tamp.tracking.wandb_keys import rel_metrics

pytestmark = pytest.mark.fast  # the unit tier: make test-fast

DATA = Path(__file__).parent / "data" / "report"


def _table_and_wandb(results: list[dict]) -> list[tuple[dict, dict]]:
    """(the table row's Rel.% keys, rel_metrics of its run) for every completed pruned run."""
    (table,) = build_report(results).tables
    dense = next(r for r in results if r["method"]["name"] == "dense")
    pairs = []
    for row in table.rows:
        if row.dense or not row.completed:
            continue
        (run,) = row.runs  # one seed each
        from_table = {f"rel/{c}": v for c, v in row.rel.items() if v is not None}
        if row.avg_rel is not None:
            from_table["rel/avg"] = row.avg_rel
        pairs.append((from_table, rel_metrics(run, dense)))
    return pairs


def test_the_report_and_wandb_give_the_same_rel() -> None:
    pairs = _table_and_wandb(load_results([DATA]))
    assert len(pairs) == 3
    for from_table, from_wandb in pairs:
        assert from_wandb == from_table  # exactly: one function computed both
    assert {"rel/toy_color": 90.0, "rel/toy_count": 70.0, "rel/avg": 80.0} in [
        {k: pytest.approx(v) for k, v in w.items()} for _, w in pairs]


def test_a_dense_zero_and_a_missing_column_are_left_out_alike() -> None:
    results = copy.deepcopy(load_results([DATA]))
    for run in results:
        run["scores"]["toy_zero"] = {"acc,none": 0.0 if run["method"]["name"] == "dense" else 0.3}
        run["primary_metric"]["toy_zero"] = "acc,none"
    lacking = next(r for r in results if r["method"]["name"] == "tamp" and r["status"] == "completed")
    lacking["scores"]["toy_count"]["acc,none"] = float("nan")  # lmms-eval scored it, but no number
    pairs = _table_and_wandb(results)
    for from_table, from_wandb in pairs:
        assert from_wandb == from_table
        assert "rel/toy_zero" not in from_wandb  # dense 0: nothing to divide by
    assert sum("rel/avg" not in w for _, w in pairs) == 1  # the run without toy_count: no partial average


def test_rel_percent_and_its_average() -> None:
    assert rel_percent(0.72, 0.8) == pytest.approx(90.0)
    assert rel_percent(0.5, 0.0) is None and rel_percent(None, 0.8) is None and rel_percent(0.5, None) is None
    rels = rel_columns({"a": 0.4, "b": 0.5}, {"a": 0.8, "b": 0.5, "z": 0.0})
    assert rels == pytest.approx({"a": 50.0, "b": 100.0}) and avg_rel(rels) == pytest.approx(75.0)
    assert avg_rel(rel_columns({"a": 0.4}, {"a": 0.8, "b": 0.5})) is None
    assert avg_rel({}) is None
