"""The paper's columns: MME is two (cognition, perception), in results.json, the report and Avg Rel.%.

The end-to-end test runs lmms-eval's own `mme` task config (its metric_list, process_results and
aggregation, from the installed package) on a few fabricated documents answered by a fake model,
through tamp's evaluation summary and the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tamp.eval.columns import column_scores, task_columns
from tamp.reporting.load import check_results
from tamp.reporting.table import build_report

#: (question_id, category, answer): two documents per question, as MME pairs them
DOCS = [
    (f"{category}/{i}", category, answer)
    for i, category in enumerate(["existence", "count", "commonsense_reasoning", "numerical_calculation"])
    for answer in ("Yes", "No")
]
#: the pruned model answers "Yes" everywhere except on commonsense_reasoning, which it gets right
PRUNED = {i: (answer if category == "commonsense_reasoning" else "Yes") for i, (_, category, answer) in enumerate(DOCS)}
DENSE = {i: answer for i, (_, _, answer) in enumerate(DOCS)}


def _mme_task(tmp_path: Path) -> Path:
    """A task folder whose `mme` is lmms-eval's own mme.yaml with the fabricated documents as its data."""
    import lmms_eval.tasks

    real = Path(lmms_eval.tasks.__file__).parent / "mme" / "mme.yaml"
    docs = [
        {"question_id": qid, "category": category, "answer": answer, "question": f"Is it {i}? Please answer yes or no."}
        for i, (qid, category, answer) in enumerate(DOCS)
    ]
    data = tmp_path / "mme_docs.json"
    data.write_text(json.dumps(docs))
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "no_visual.py").write_text("def doc_to_visual(doc):\n    return []\n")
    (folder / "mme.yaml").write_text(
        f"include: {real}\n"
        "task: mme\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "doc_to_visual: !function no_visual.doc_to_visual\n"
    )
    return folder


def _fake_lm(answers: dict[int, str]):
    from lmms_eval.api.model import lmms

    class Answers(lmms):
        """Answers each document from a table (by doc_id); nothing else is needed by a generate task."""

        def generate_until(self, requests):
            return [answers[req.args[3]] for req in requests]

        def loglikelihood(self, requests):
            raise NotImplementedError

        def generate_until_multi_round(self, requests):
            raise NotImplementedError

    return Answers()


def _record(method: str, target: float, summary: dict) -> dict:
    return check_results(
        {
            "status": "completed",
            "model": {"name": "llava-next"},
            "method": {"name": method},
            "sparsity": {"target": target},
            "scores": summary["scores"],
            "primary_metric": summary["primary_metric"],
        },
        method,
    )


def test_lmms_evals_mme_reaches_results_and_report_as_two_columns(tmp_path):
    from tamp.eval.evaluate import _run, resolve_tasks

    manager, names = resolve_tasks(["mme"], [str(_mme_task(tmp_path))])
    dense = _run(_fake_lm(DENSE), names, manager, None, False, 0, 0, 1)
    pruned = _run(_fake_lm(PRUNED), names, manager, None, False, 0, 0, 1)

    keys = ["mme_cognition_score,none", "mme_perception_score,none"]
    assert dense["primary_metric"] == {"mme": keys}
    # MME's score per category is acc + acc+ (0..200), summed over the categories of each half
    assert [dense["scores"]["mme"][k] for k in keys] == [400.0, 400.0]
    assert [pruned["scores"]["mme"][k] for k in keys] == [250.0, 100.0]

    (table,) = build_report([_record("dense", 0.0, dense), _record("wanda", 0.5, pruned)]).tables
    assert [c.label for c in table.columns] == ["MME-cognition", "MME-perception"]
    row = next(r for r in table.rows if not r.dense)
    assert row.rel == {"MME-cognition": 62.5, "MME-perception": 25.0}
    assert row.avg_rel == pytest.approx((62.5 + 25.0) / 2)


def test_an_older_results_file_with_perception_only_reads_as_both_columns():
    scores = {"mme": {"mme_perception_score,none": 1500.0, "mme_cognition_score,none": 300.0}}
    columns = task_columns("mme", "mme_perception_score,none", scores["mme"])
    assert [(c.label, c.metric) for c in columns] == [
        ("MME-cognition", "mme_cognition_score,none"),
        ("MME-perception", "mme_perception_score,none"),
    ]
    assert column_scores({"mme": "mme_perception_score,none"}, scores) == {
        "MME-cognition": 300.0,
        "MME-perception": 1500.0,
    }


def test_other_tasks_keep_their_recorded_metric():
    scores = {"relaxed_overall,none": 0.5, "relaxed_human_split,none": 0.4}
    assert [(c.label, c.metric) for c in task_columns("chartqa", "relaxed_overall,none", scores)] == [
        ("chartqa", "relaxed_overall,none")
    ]
    # an MME run that scored only one half (a `limit` that cut the other) keeps what it has
    only = {"mme_perception_score,none": 1500.0}
    assert [c.label for c in task_columns("mme", "mme_perception_score,none", only)] == ["mme"]


def test_wandb_rel_averages_over_the_paper_columns():
    from tamp.tracking.wandb_keys import rel_metrics

    dense = {"scores": {"mme": {"mme_perception_score,none": 1000.0, "mme_cognition_score,none": 400.0},
                        "ai2d": {"exact_match,none": 0.5}},
             "primary_metric": {"mme": ["mme_cognition_score,none", "mme_perception_score,none"],
                                "ai2d": "exact_match,none"}}
    pruned = {"scores": {"mme": {"mme_perception_score,none": 500.0, "mme_cognition_score,none": 400.0},
                         "ai2d": {"exact_match,none": 0.2}},
              "primary_metric": dense["primary_metric"]}
    rel = rel_metrics(pruned, dense)
    assert rel["rel/MME-cognition"] == 100.0 and rel["rel/MME-perception"] == 50.0 and rel["rel/ai2d"] == 40.0
    assert rel["rel/avg"] == pytest.approx((100.0 + 50.0 + 40.0) / 3)
