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


# ------------------------------------------------------------------------------------------------
# Paper suites declare their columns; lmms-eval's groups are one number each
# ------------------------------------------------------------------------------------------------
BLINK_RIGHT = 5  # the fake model answers the first 5 BLINK sub-tasks (in sorted order) right, the rest wrong


class _PerTask:
    """A fake lmms-eval model whose answer depends on the task and document: `answer(task, doc_id)`."""

    def __new__(cls, answer):
        from lmms_eval.api.model import lmms

        class PerTask(lmms):
            def generate_until(self, requests):
                return [answer(req.args[4], req.args[3]) for req in requests]

            def loglikelihood(self, requests):
                raise NotImplementedError

            def generate_until_multi_round(self, requests):
                raise NotImplementedError

        return PerTask()


def _local_eval(tmp_path: Path, monkeypatch, names: list[str], answer) -> dict:
    """lmms-eval's own task code on the 2-document local copies (tests/paper_tasks.py), tamp's summary."""
    from paper_tasks import hf_home, write_local_tasks

    from tamp.eval.evaluate import _run, resolve_tasks

    tmp_path.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(tmp_path)  # some aggregations write submission files under ./
    monkeypatch.setenv("HF_HOME", str(hf_home(tmp_path)))
    manager, resolved = resolve_tasks(names, write_local_tasks(tmp_path, names))
    return _run(_PerTask(answer), resolved, manager, None, False, 0, 0, 1)


def _suite(compose_cfg, experiment: str, tasks: list[str] | None = None):
    from tamp.cli.schema import validate

    overrides = [f"+experiment={experiment}", "logger=none"] + ([f"eval.tasks=[{','.join(tasks)}]"] if tasks else [])
    return validate(compose_cfg(overrides))


def _columns(settings, summary: dict) -> list:
    from tamp.cli.runner import table_columns
    from tamp.eval.columns import Column

    return [Column.from_json(c) for c in table_columns(settings, summary)]


def _blink_answer(task: str, doc_id: int) -> str:
    subtasks = sorted(t for t in _blink_subtasks())
    return "(A)" if task in subtasks[:BLINK_RIGHT] else "(B)"


def _blink_subtasks() -> list[str]:
    from paper_tasks import TASKS_ROOT

    return [p.stem for p in (TASKS_ROOT / "blink").glob("blink_*.yaml")]


def test_blink_is_one_column_its_group_aggregate_and_its_subtasks_stay_in_the_csv(compose_cfg, tmp_path, monkeypatch):
    dense = _local_eval(tmp_path / "d", monkeypatch, ["blink"], lambda task, doc: "(A)")
    pruned = _local_eval(tmp_path / "p", monkeypatch, ["blink"], _blink_answer)
    assert len(pruned["groups"]["blink"]) == 14 and "blink" in pruned["scores"]  # lmms-eval's own aggregate
    settings = _suite(compose_cfg, "table5_onevision", ["blink"])
    (column,) = _columns(settings, pruned)
    assert (column.label, column.task, column.metric, column.aggregate) == ("BLINK", "blink", "blink_acc,none", "value")
    assert column.value(pruned["scores"]) == pytest.approx(BLINK_RIGHT / 14)

    records = []
    for method, target, summary in (("dense", 0.0, dense), ("wanda", 0.6, pruned)):
        record = _record(method, target, summary)
        record["columns"] = [c.to_json() for c in _columns(settings, summary)]
        records.append(record)
    (table,) = build_report(records).tables
    assert [c.label for c in table.columns] == ["BLINK"]
    row = next(r for r in table.rows if not r.dense)
    assert row.avg_rel == pytest.approx(100 * BLINK_RIGHT / 14)
    csv = build_report(records).frame
    subtask_columns = [k for k in csv.columns if k.startswith("score:blink_")]
    assert len(subtask_columns) == 14 and not [k for k in csv.columns if k.startswith("rel:blink_")]
    wrong = sorted(_blink_subtasks())[-1]
    assert csv.loc[csv.method == "wanda", f"score:{wrong}"].item() == 0.0

    # an ad-hoc task list (no declared columns): one column per requested task, the group's aggregate
    from tamp.eval.columns import run_columns

    adhoc = run_columns(["blink"], [], pruned["scores"], pruned["primary_metric"], pruned["groups"])
    assert [(c.label, c.metric) for c in adhoc] == [("blink", "blink_acc,none")]


def _mathvista_judge(monkeypatch) -> None:
    import importlib

    monkeypatch.setenv("OPENAI_API_KEY", "test-key-not-used")
    module = importlib.import_module("lmms_eval.tasks.mathvista.mathvista_evals")
    monkeypatch.setattr(module.MathVistaEvaluator, "get_chat_response", lambda self, prompt, **kw: "square")


def test_mathvista_is_one_column_the_format_prompt_variant(compose_cfg, tmp_path, monkeypatch):
    _mathvista_judge(monkeypatch)
    ours = _local_eval(tmp_path / "a", monkeypatch, ["tamp_mathvista_testmini"], lambda task, doc: "square")
    settings = _suite(compose_cfg, "table2_llava_next", ["tamp_mathvista_testmini"])
    (column,) = _columns(settings, ours)
    assert (column.label, column.task, column.metric) == ("MathVista", "mathvista_testmini_format", "llm_as_judge_eval,none")
    assert column.value(ours["scores"]) == 100.0  # the judge's extraction equals the answer on both documents

    # lmms-eval 0.7.3's mathvista_testmini is three prompt variants: three columns ad hoc, one declared
    from tamp.eval.columns import run_columns

    three = _local_eval(tmp_path / "b", monkeypatch, ["mathvista_testmini"], lambda task, doc: "square")
    assert sorted(three["groups"]["mathvista_testmini"]) == [
        "mathvista_testmini_cot", "mathvista_testmini_format", "mathvista_testmini_solution"
    ]
    adhoc = run_columns(["mathvista_testmini"], [], three["scores"], three["primary_metric"], three["groups"])
    assert len(adhoc) == 3
    declared = _columns(_suite(compose_cfg, "table2_llava_next", ["mathvista_testmini"]), three)
    assert [(c.label, c.task) for c in declared] == [("MathVista", "mathvista_testmini_format")]


def test_tamp_mathvista_is_lmms_evals_format_prompt_at_1024_new_tokens(tmp_path):
    from paper_tasks import write_local_tasks

    from tamp.eval.evaluate import resolve_tasks

    # tamp's group as shipped, its member read from the local copy's documents (the Hub is not reachable)
    manager, names = resolve_tasks(["tamp_mathvista_testmini"], write_local_tasks(tmp_path, ["tamp_mathvista_testmini"]))
    loaded = manager.load_task_or_group(names)
    (group,) = loaded
    (task,) = loaded[group].values()
    config = task.config
    assert config.task == "mathvista_testmini_format"
    assert config.generation_kwargs["max_new_tokens"] == 1024 and config.generation_kwargs["do_sample"] is False
    assert config.lmms_eval_specific_kwargs["default"]["shot_type"] == "format-prompt"
    assert config.metric_list[0]["metric"] == "llm_as_judge_eval"


@pytest.mark.slow
def test_mvbench_is_the_mean_of_its_20_subtasks(compose_cfg, tmp_path, monkeypatch):
    right = {"mvbench_action_antonym", "mvbench_action_count", "mvbench_object_shuffle", "mvbench_state_change"}
    out = _local_eval(tmp_path, monkeypatch, ["mvbench"], lambda task, doc: "(A)" if task in right else "(C)")
    assert "mvbench" not in out["scores"] and len(out["groups"]["mvbench"]) == 20  # no aggregate in 0.7.3
    settings = _suite(compose_cfg, "table3_audio_visual", ["mvbench"])
    (column,) = _columns(settings, out)
    assert (column.label, column.aggregate, len(column.tasks)) == ("MVBench", "mean", 20)
    per_task = [out["scores"][t][column.metric] for t in column.tasks]
    assert column.value(out["scores"]) == pytest.approx(sum(per_task) / 20)
    assert sorted(set(per_task)) != [per_task[0]]  # the fake model's answers made them differ

    from tamp.eval.columns import run_columns

    assert len(run_columns(["mvbench"], [], out["scores"], out["primary_metric"], out["groups"])) == 20


def test_declared_columns_follow_the_task_list(compose_cfg):
    """Table 1 asks for two tasks of the LLaVA-NeXT suite: its three columns; an extra task gets its own."""
    from tamp.eval.columns import run_columns

    scores = {
        "mme": {"mme_cognition_score,none": 300.0, "mme_perception_score,none": 1400.0},
        "chartqa": {"relaxed_overall,none": 0.6, "relaxed_human_split,none": 0.5},
        "textvqa_val": {"exact_match,none": 0.4},
    }
    primary = {"mme": ["mme_cognition_score,none", "mme_perception_score,none"], "chartqa": "relaxed_overall,none",
               "textvqa_val": "exact_match,none"}
    settings = _suite(compose_cfg, "table1_modality")
    assert list(settings.eval.tasks) == ["mme", "chartqa"]
    columns = run_columns(["mme", "chartqa", "textvqa_val"], settings.eval.columns, scores, primary, {})
    assert [c.label for c in columns] == ["MME-cognition", "MME-perception", "ChartQA", "textvqa_val"]


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("eval.columns=[{name:X,task:mme,metric:m,aggregate:median}]", "eval.columns[0].aggregate='median' is unknown"),
        ("eval.columns=[{name:X,task:mme,metric:m},{name:X,task:ai2d,metric:m}]", "column name 'X' is declared twice"),
        ("eval.columns=[{name:X,task:'',metric:m}]", "eval.columns[0].task is empty"),
    ],
)
def test_a_bad_column_declaration_is_one_line(compose_cfg, override, says):
    from tamp.cli.schema import validate

    with pytest.raises(ValueError) as err:
        validate(compose_cfg([override, "logger=none"]))
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_run_records_its_declared_columns_and_variants(compose_cfg, tmp_path):
    from tamp.cli.run_command import run

    cfg = compose_cfg([
        "eval=tiny", "eval.limit=4", "calib.num_samples=2", "runner.progress=false", "logger=none",
        "method=sparsegpt_official", "eval.columns=[{name:Colour,task:tamp_tiny_colour,metric:exact_match}]",
    ])
    run(cfg, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["columns"][0] == {"name": "Colour", "task": "tamp_tiny_colour", "metric": "exact_match,none"}
    assert [c["name"] for c in saved["columns"]] == ["Colour", "tamp_tiny_colour_mc"]  # the undeclared task: ad hoc
    assert "fastprune" in saved["variants"]["pruner"]
