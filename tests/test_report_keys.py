"""The report never averages runs that are not comparable and reports what it cannot compute.

Runs are made like the runner writes them: results.json with the resolved Hydra config under "config".
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
from matplotlib.container import ErrorbarContainer

from tamp.cli.report_command import main
from tamp.core.io import write_json_atomic
from tamp.reporting import build_report
from tamp.reporting.load import check_results
from tamp.reporting.plots import plot_rel
from tamp.reporting.render import report_markdown

pytestmark = pytest.mark.fast  # the unit tier: make test-fast

MODEL = "tiny:llava_next"
CONFIG = {
    "model": {"name": MODEL, "family": None, "dtype": "float32", "trust_remote_code": False},
    "calib": {"name": "", "source": "tiny", "path": "", "num_samples": 4, "seed": 42, "progress": True},
    "method": {
        "name": "wanda",
        "pruner": "wanda",
        "allocation": {"name": "uniform", "max_sparsity_delta": 0.1},
        "tokens": {"name": "all", "knn": 3, "modalities": ["text", "image"]},
    },
    "sparsity": {"target": 0.5, "pattern": "unstructured"},
    "runner": {"devices": 1, "precision": "32-true", "progress": True, "targets": [".*"], "ignore": []},
    "eval": {"tasks": ["mc", "open"], "include_paths": [], "limit": 4, "batch_size": 1, "max_new_tokens": 8},
    "logger": {"wandb": {"enabled": False}},
    "paths": {"output_dir": "outputs"},
    "experiment": None,
    "seed": 42,
}
PRESETS = {
    "dense": {"name": "dense", "pruner": "none"},
    "wanda": {"name": "wanda", "pruner": "wanda"},
    "tamp": {"name": "tamp", "pruner": "wanda", "allocation": {"name": "das"}, "tokens": {"name": "amia"}},
}


def _set(config: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        config = config[part]
    config[leaf] = value


def make_run(
    method: str = "wanda",
    target: float = 0.5,
    scores: tuple[float, float] | None = (0.5, 0.5),
    status: str = "completed",
    run_dir: str = "run",
    **overrides,
) -> dict:
    """A results.json as tamp.cli.runner writes it; overrides use Hydra's dotted names with `__` for dots."""
    config = copy.deepcopy(CONFIG)
    for key, value in PRESETS[method].items():
        if isinstance(value, dict):
            config["method"][key].update(value)
        else:
            config["method"][key] = value
    config["sparsity"]["target"] = target
    for key, value in overrides.items():
        _set(config, key.replace("__", "."), value)
    if "calib__seed" not in overrides:  # conf/calib: `seed: ${seed}`, resolved in the record
        config["calib"]["seed"] = config["seed"]
    m = config["method"]
    result = {
        "status": status,
        "error": None if status == "completed" else "ValueError: boom",
        "run_dir": run_dir,
        "model": {"name": config["model"]["name"]},
        "method": {
            "name": m["name"],
            "pruner": m["pruner"],
            "allocation": m["allocation"]["name"],
            "tokens": m["tokens"]["name"],
        },
        "sparsity": {
            "target": 0.0 if method == "dense" else target,
            "pattern": "unstructured",
            "achieved": 0.0 if method == "dense" else target,  # the runner measures a dense model's zeros
        },
        "scores": {},
        "primary_metric": {},
        "config": config,
    }
    if scores is not None and status == "completed":
        result["scores"] = {"mc": {"acc,none": scores[0]}, "open": {"exact_match,none": scores[1]}}
        result["primary_metric"] = {"mc": "acc,none", "open": "exact_match,none"}
    return check_results(result, run_dir)


def rows_of(report, title: str | None = None) -> dict[tuple[str, float], object]:
    tables = [t for t in report.tables if title is None or t.title == title]
    assert len(tables) == 1, [t.title for t in report.tables]
    return {(row.method, row.target): row for row in tables[0].rows}


def test_smoke_and_real_sweeps_are_separate_tables_never_blended():
    """The issue's case: eval.limit=4 gave mc 0.125, eval.limit=8 gave 0.0; it printed one row of 0.0625."""
    smoke = [make_run("dense", scores=(0.25, 0.5)), make_run(scores=(0.125, 0.5))]
    real = [make_run("dense", scores=(0.25, 0.5), eval__limit=8), make_run(scores=(0.0, 0.5), eval__limit=8)]
    report = build_report(smoke + real)
    assert sorted(t.title for t in report.tables) == [f"{MODEL} (eval.limit=4)", f"{MODEL} (eval.limit=8)"]
    four, eight = rows_of(report, f"{MODEL} (eval.limit=4)"), rows_of(report, f"{MODEL} (eval.limit=8)")
    assert four[("wanda", 0.5)].scores["mc"] == 0.125 and four[("wanda", 0.5)].avg_rel == pytest.approx(75.0)
    assert eight[("wanda", 0.5)].scores["mc"] == 0.0 and eight[("wanda", 0.5)].avg_rel == pytest.approx(50.0)
    markdown = report_markdown(report)
    assert "0.0625" not in markdown and f"## {MODEL} (eval.limit=8)" in markdown


@pytest.mark.parametrize(
    ("key", "value", "label"),
    [
        ("method__tokens__name", "attention", "wanda (method.tokens.name=attention)"),
        ("method__allocation__max_sparsity_delta", 0.2, "wanda (method.allocation.max_sparsity_delta=0.2)"),
        ("calib__num_samples", 128, "wanda (calib.num_samples=128)"),
        ("runner__ignore", ["mlp"], 'wanda (runner.ignore=["mlp"])'),
    ],
)
def test_any_other_difference_is_a_separate_row_named_by_the_key(key, value, label):
    runs = [make_run("dense"), make_run(scores=(0.5, 0.5)), make_run(scores=(0.25, 0.25), **{key: value})]
    rows = rows_of(build_report(runs))
    assert len(rows) == 3
    assert rows[(label, 0.5)].scores["mc"] == 0.25
    base = next(row for (name, _), row in rows.items() if name.startswith("wanda") and name != label)
    assert base.scores["mc"] == 0.5 and base.n == 1


def test_calibration_differences_are_named_on_every_pruned_row_and_methods_keep_their_names():
    runs = [
        make_run("dense"),
        make_run("wanda", calib__num_samples=8),
        make_run("tamp", calib__num_samples=128),
        make_run("tamp", method__tokens__name="attention", calib__num_samples=128),
    ]
    labels = sorted(label for label, _ in rows_of(build_report(runs)))
    assert labels == [
        "dense",
        "tamp (calib.num_samples=128)",  # the plain preset: nothing of its method to name
        "tamp (calib.num_samples=128, method.tokens.name=attention)",
        "wanda (calib.num_samples=8)",
    ]


def test_seeds_are_mean_std_and_n_in_table_csv_and_plot(tmp_path: Path):
    runs = [make_run("dense", scores=(0.5, 1.0))]
    runs += [
        make_run(scores=(s, 0.5), seed=seed, run_dir=f"w{seed}") for seed, s in ((1, 0.2), (2, 0.3), (3, 0.4))
    ]
    runs.append(
        make_run(scores=(0.4, 0.5), seed=3, run_dir="w3-again")
    )  # the same seed twice: not a 4th seed
    runs.append(make_run(scores=(0.5, 0.5), target=0.6))
    report = build_report(runs)
    row = rows_of(report)[("wanda", 0.5)]
    assert row.n == 3 and len(row.runs) == 4
    assert row.scores["mc"] == pytest.approx(0.3) and row.scores_std["mc"] == pytest.approx(0.1)
    assert row.rel["mc"] == pytest.approx(60.0) and row.rel_std["mc"] == pytest.approx(20.0)
    assert row.avg_rel == pytest.approx(55.0) and row.avg_rel_std == pytest.approx(10.0)
    lone = rows_of(report)[("wanda", 0.6)]
    assert lone.n == 1 and lone.scores_std["mc"] is None and lone.avg_rel_std is None
    markdown = report_markdown(report)
    assert "| Method | Sparsity | n | mc | open | Avg Rel.% |" in markdown
    assert "| wanda | 50% | 3 | 0.300 ± 0.100 | 0.500 ± 0.000 | 55.0 ± 10.0 |" in markdown
    assert "| wanda | 60% | 1 | " in markdown and "mean ± sample std over its n seeds" in markdown
    for i, r in enumerate(runs):
        write_json_atomic(tmp_path / "sweep" / str(i) / "results.json", r)
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "report.csv", newline="") as f:
        csv_row = next(r for r in csv.DictReader(f) if r["target_sparsity"] == "0.5")
    assert (csv_row["n"], csv_row["runs"], csv_row["seeds"]) == ("3", "4", "1 2 3")
    assert float(csv_row["score:mc"]) == pytest.approx(0.3) and float(
        csv_row["score_std:mc"]
    ) == pytest.approx(0.1)
    assert float(csv_row["avg_rel"]) == pytest.approx(55.0) and float(
        csv_row["avg_rel_std"]
    ) == pytest.approx(10.0)
    fig = plot_rel(report, tmp_path / "rel.png")
    (ax,) = fig.axes
    assert any(isinstance(c, ErrorbarContainer) for c in ax.containers)
    legend = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "wanda (mean ± std, n=1-3)" in legend


def test_runs_differing_only_in_any_seed_are_repeats_with_their_seeds_listed():
    """Issue 26.1: `calib.seed=1,2` (or a method's own seed) was two rows ranked against each other."""
    runs = [make_run("dense", scores=(0.5, 1.0))]
    runs += [make_run(scores=(s, 0.5), calib__seed=c, run_dir=f"c{c}") for c, s in ((7, 0.2), (8, 0.4))]
    runs += [make_run(scores=(s, 0.5), seed=seed, run_dir=f"s{seed}", target=0.6) for seed, s in ((1, 0.1), (2, 0.3))]
    runs += [make_run(scores=(0.3, 0.5), target=0.7, method__tokens__seed=seed, run_dir=f"t{seed}") for seed in (5, 6)]
    report = build_report(runs)
    rows = rows_of(report)
    assert sorted(rows) == [("dense", 0.0), ("wanda", 0.5), ("wanda", 0.6), ("wanda", 0.7)]
    assert [rows[("wanda", t)].n for t in (0.5, 0.6, 0.7)] == [2, 2, 2]
    assert rows[("wanda", 0.5)].scores["mc"] == pytest.approx(0.3)
    assert rows[("wanda", 0.5)].scores_std["mc"] == pytest.approx(0.1414, abs=1e-4)
    markdown = report_markdown(report)
    assert "| wanda | 60% | 2 | 0.200 ± 0.141 |" in markdown
    assert "seeds: wanda 50%: seed=42,calib.seed=7, seed=42,calib.seed=8; wanda 60%: 1, 2;" in markdown
    assert "wanda 70%: seed=42,method.tokens.seed=5, seed=42,method.tokens.seed=6." in markdown
    one = report_markdown(build_report([make_run("dense")] + runs[3:5]))
    assert "over its n seeds; seeds 1, 2." in one


def test_the_header_says_what_the_cells_are_and_which_documents_were_scored():
    """Issue 26.5: the header spoke of Rel.% above raw scores, and a 4-document report did not say so."""
    markdown = report_markdown(build_report([make_run("dense"), make_run(scores=(0.25, 0.5))]))
    assert ("Score columns: raw scores (each task's primary metric, a column per score the paper prints); "
            "Avg Rel.% = mean over the columns") in markdown
    assert "Scored on the first 4 documents of each task only (`eval.limit=4`)" in markdown
    full = [make_run("dense", eval__limit=None), make_run(scores=(0.25, 0.5), eval__limit=None)]
    assert "Scored on every document of each task." in report_markdown(build_report(full))


def test_a_single_seed_table_keeps_the_paper_layout():
    markdown = report_markdown(build_report([make_run("dense"), make_run(scores=(0.25, 0.5))]))
    assert "| Method | Sparsity | mc | open | Avg Rel.% |" in markdown and "±" not in markdown


def test_failed_cell_with_an_unresolved_config_does_not_rename_its_method_row():
    """record_failure writes the unresolved config and only name/pruner of the method (issue: wanda (allocation=None, tokens=None))."""
    failed = make_run(
        status="failed", run_dir="bad", calib__path="${zoo_data:${model.name},${paths.cache_dir}}"
    )
    failed["method"] = {"name": "wanda", "pruner": "wanda", "allocation": None, "tokens": None}
    bad_target = make_run(status="failed", target=1.5, run_dir="bad-target")
    bad_target["method"] = dict(failed["method"])
    no_config = check_results(
        {
            "status": "failed",
            "model": {"name": MODEL},
            "method": {"name": "wanda"},
            "sparsity": {"target": 0.5},
        },
        "old",
    )
    runs = [make_run("dense"), make_run("tamp"), make_run(scores=(0.25, 0.5)), failed, bad_target, no_config]
    report = build_report(runs)
    rows = rows_of(report)
    assert sorted(rows) == [("dense", 0.0), ("tamp", 0.5), ("wanda", 0.5), ("wanda", 1.5)]
    wanda = rows[("wanda", 0.5)]
    assert wanda.completed and wanda.n == 1 and len(wanda.runs) == 3 and wanda.scores["mc"] == 0.25
    assert rows[("wanda", 1.5)].status == "failed"
    markdown = report_markdown(report)
    assert "- wanda at 50%: 2 of 3 runs did not complete: ValueError: boom (bad, old)" in markdown
    assert "- wanda at 150%: failed" in markdown


def test_a_failed_cell_matching_two_rows_stays_apart_and_names_what_it_lacks():
    failed = make_run(status="failed", run_dir="bad", method__tokens__name="${oops}")
    runs = [make_run("dense"), make_run(), make_run(method__tokens__name="attention"), failed]
    labels = sorted(label for label, _ in rows_of(build_report(runs)))
    assert labels == [
        "dense",
        "wanda",  # the plain preset (tokens all) keeps its name
        "wanda (method.tokens.name=?)",
        "wanda (method.tokens.name=attention)",
    ]


def test_task_with_dense_score_zero_is_a_visible_exclusion(tmp_path: Path):
    runs = [make_run("dense", scores=(0.0, 0.5)), make_run(scores=(0.25, 0.25))]
    report = build_report(runs)
    (table,) = report.tables
    row = rows_of(report)[("wanda", 0.5)]
    assert table.excluded == {"mc": "dense score is 0"} and row.avg_rel == pytest.approx(50.0)
    markdown = report_markdown(report)
    assert "| Method | Sparsity | mc | open | Avg Rel.%* |" in markdown
    assert "Avg Rel.% leaves out mc (dense score is 0)" in markdown
    assert report.frame.loc[1, "avg_rel_excludes"] == "mc"


def test_failed_dense_run_says_so():
    runs = [make_run("dense", status="failed", run_dir="d"), make_run(scores=(0.25, 0.5))]
    markdown = report_markdown(build_report(runs))
    assert "| dense | 0% | failed | failed | failed |" in markdown
    assert "the dense run of this table failed (ValueError: boom)" in markdown
    assert "| wanda | 50% | 0.250 | 0.500 | – |" in markdown


def test_runs_without_scores_say_they_were_not_evaluated():
    markdown = report_markdown(build_report([make_run(scores=None), make_run(scores=None, target=0.6)]))
    assert (
        "| wanda | 60% | – |" in markdown and "No task was scored" in markdown and "`eval=tiny`" in markdown
    )
    assert "Rel.% needs a completed dense run" not in markdown
