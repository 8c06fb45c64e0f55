"""`python -m tamp.report`: Rel.% tables, marks, CSV, figures and input errors on hand-made results.json.

tests/data/report holds a dense run and a 2-method x 2-sparsity sweep on two tasks (wanda at 60% failed):
dense toy_color 0.80, toy_count 0.50; wanda 50%: 0.72, 0.35; tamp 50%: 0.68, 0.45; tamp 60%: 0.60, 0.30.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from tamp.cli.report_command import build_report, main
from tamp.reporting import ReportError, load_results
from tamp.reporting.load import check_results
from tamp.reporting.plots import choose_sparsity
from tamp.reporting.render import report_markdown
from tamp.reporting.wandb_source import fetch_wandb, results_from_wandb_run

DATA = Path(__file__).parent / "data" / "report"
MODEL = "tamp-zoo/toy-llava"
PNGS = ("sparsity_vs_rel.png", "sparsity_per_projection.png", "sparsity_per_block.png")


@pytest.fixture(scope="module")
def results() -> list[dict]:
    return load_results([DATA])


@pytest.fixture(scope="module")
def report(results):
    return build_report(results)


def md_row(markdown: str, method: str, sparsity: str) -> list[str]:
    """The cells of one markdown table row (after Method and Sparsity)."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:2] == [method, sparsity]:
            return cells[2:]
    raise AssertionError(f"no row {method} {sparsity}")


def test_rel_per_task_and_row_mean(report):
    (table,) = report.tables
    assert table.model == MODEL
    assert [c.label for c in table.columns] == ["toy_color", "toy_count"]
    assert [c.metric for c in table.columns] == ["exact_match,none", "acc,none"]
    rows = {(r.method, r.target): r for r in table.rows}
    assert [(r.method, r.target) for r in table.rows] == [
        ("dense", 0.0),
        ("wanda", 0.5),
        ("tamp", 0.5),
        ("wanda", 0.6),
        ("tamp", 0.6),
    ]
    dense = rows[("dense", 0.0)]
    assert dense.rel == {"toy_color": 100.0, "toy_count": 100.0} and dense.avg_rel == 100.0
    expected = {  # pruned / dense x 100 per task, and their mean
        ("wanda", 0.5): (0.72 / 0.80 * 100, 0.35 / 0.50 * 100),  # 90, 70
        ("tamp", 0.5): (0.68 / 0.80 * 100, 0.45 / 0.50 * 100),  # 85, 90
        ("tamp", 0.6): (0.60 / 0.80 * 100, 0.30 / 0.50 * 100),  # 75, 60
    }
    for key, (color, count) in expected.items():
        row = rows[key]
        assert row.rel["toy_color"] == pytest.approx(color)
        assert row.rel["toy_count"] == pytest.approx(count)
        assert row.avg_rel == pytest.approx((color + count) / 2)
    assert rows[("wanda", 0.5)].avg_rel == pytest.approx(80.0)
    assert rows[("tamp", 0.5)].avg_rel == pytest.approx(87.5)
    assert rows[("tamp", 0.6)].avg_rel == pytest.approx(67.5)
    failed = rows[("wanda", 0.6)]
    assert failed.status == "failed" and failed.avg_rel is None and failed.error.startswith("RuntimeError")


def test_markdown_marks_best_and_second_per_sparsity(report):
    markdown = report_markdown(report)
    assert md_row(markdown, "dense", "0%") == ["0.800", "0.500", "100.0"]
    assert md_row(markdown, "wanda", "50%") == ["**0.720**", "<u>0.350</u>", "<u>80.0</u>"]
    assert md_row(markdown, "tamp", "50%") == ["<u>0.680</u>", "**0.450**", "**87.5**"]
    # at 60% tamp is the only completed pruned row: nothing to compare, no marks; the failed cells say so
    assert md_row(markdown, "tamp", "60%") == ["0.600", "0.300", "67.5"]
    assert md_row(markdown, "wanda", "60%") == ["failed", "failed", "failed"]
    assert "- wanda at 60%: failed: RuntimeError: CUDA out of memory" in markdown


def test_main_writes_all_outputs_into_first_dir(tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(DATA, runs)
    assert main([str(runs / "dense"), str(runs / "sweep")]) == 0
    out = runs / "dense"  # default output: the first DIR
    printed = capsys.readouterr().out
    assert printed == (out / "report.md").read_text()
    assert "| tamp | 50% | <u>0.680</u> | **0.450** | **87.5** |" in printed
    for name in PNGS:
        data = (out / name).read_bytes()
        assert len(data) > 1000 and data.startswith(b"\x89PNG")
    with open(out / "report.csv", newline="") as f:
        rows = {(r["method"], r["target_sparsity"]): r for r in csv.DictReader(f)}
    assert float(rows[("wanda", "0.5")]["rel:toy_color"]) == pytest.approx(90.0)
    assert float(rows[("wanda", "0.5")]["score:toy_count"]) == pytest.approx(0.35)
    assert float(rows[("tamp", "0.5")]["avg_rel"]) == pytest.approx(87.5)
    assert float(rows[("dense", "0.0")]["avg_rel"]) == 100.0
    assert rows[("tamp", "0.6")]["achieved_sparsity"] == "0.6"
    failed = rows[("wanda", "0.6")]
    assert failed["status"] == "failed" and failed["score:toy_color"] == "" and failed["avg_rel"] == ""


def test_missing_dense_still_writes_raw_scores_and_says_how_to_add_one(tmp_path, capsys):
    """Issue 14.2: no dense run is no longer an error: raw scores, failed rows, and how to get Rel.%."""
    assert main([str(DATA / "sweep"), "--out", str(tmp_path)]) == 0
    markdown = (tmp_path / "report.md").read_text()
    assert md_row(markdown, "tamp", "50%") == ["<u>0.680</u>", "**0.450**", "–"]
    assert md_row(markdown, "wanda", "60%") == ["failed", "failed", "failed"]
    assert "Rel.% needs a completed dense run of tamp-zoo/toy-llava" in markdown
    assert "`method=dense`" in markdown and "--dense DENSE_DIR" in markdown
    with open(tmp_path / "report.csv", newline="") as f:
        rows = {(r["method"], r["target_sparsity"]): r for r in csv.DictReader(f)}
    assert float(rows[("tamp", "0.5")]["score:toy_color"]) == pytest.approx(0.68)
    assert rows[("tamp", "0.5")]["avg_rel"] == ""
    assert rows[("wanda", "0.6")]["status"] == "failed"
    assert all((tmp_path / name).exists() for name in PNGS)
    # --dense brings the reference from another directory, reading only its dense runs
    assert main([str(DATA / "sweep"), "--dense", str(DATA), "--out", str(tmp_path)]) == 0
    markdown = (tmp_path / "report.md").read_text()
    assert md_row(markdown, "tamp", "50%") == ["<u>0.680</u>", "**0.450**", "**87.5**"]
    capsys.readouterr()
    assert main([str(DATA / "sweep"), "--dense", str(DATA / "sweep"), "--out", str(tmp_path)]) == 1
    assert "no dense run" in capsys.readouterr().err


def test_bad_inputs_name_the_file(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "no results.json found under" in capsys.readouterr().err
    bad = tmp_path / "0" / "results.json"
    bad.parent.mkdir()
    bad.write_text('{"status": "completed", ')
    assert main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "malformed JSON" in err and len(err.strip().splitlines()) == 1
    bad.write_text(json.dumps({"model": {"name": "m"}, "method": {"name": "wanda"}}))
    assert main([str(tmp_path)]) == 1
    assert "missing field 'sparsity.target'" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere")]) == 1
    assert main([]) == 2


def test_paper_table2_rel(tmp_path):
    """Table 2 of the paper: Magnitude 19.0 and SparseGPT 89.0 Rel.%, MME's two scores as two columns."""
    names = ["mme", "chartqa", "ai2d", "mmmu", "mathvista", "mmbench"]
    rows = {
        "dense": [376.8, 1588.3, 69.2, 71.7, 40.1, 36.2, 72.2],
        "magnitude": [0, 0, 0, 0, 24.0, 26.6, 0],
        "sparsegpt": [328.6, 1448.9, 65.5, 64.5, 33.6, 31.3, 64.7],
    }
    primary = {"mme": ["cognition,none", "perception,none"]} | {t: "score,none" for t in names[1:]}
    results = []
    for method, values in rows.items():
        scores = {"mme": {"cognition,none": values[0], "perception,none": values[1]}}
        scores |= {t: {"score,none": v} for t, v in zip(names[1:], values[2:], strict=True)}
        results.append(
            {
                "status": "completed",
                "model": {"name": "llava-next"},
                "method": {"name": method},
                "sparsity": {"target": 0.0 if method == "dense" else 0.5},
                "scores": scores,
                "primary_metric": primary,
            }
        )
    (table,) = build_report([check_results(r, "table2") for r in results]).tables
    assert [c.label for c in table.columns][:2] == ["mme:cognition", "mme:perception"]
    avg = {row.method: row.avg_rel for row in table.rows}
    assert round(avg["magnitude"], 1) == 19.0 and round(avg["sparsegpt"], 1) == 89.0


def test_labels_tell_apart_presets_sharing_a_name():
    base = {"model": {"name": "m"}, "sparsity": {"target": 0.5}, "scores": {}, "primary_metric": {}}
    results = [
        base | {"method": {"name": "tamp", "pruner": "wanda", "tokens": "amia"}},
        base | {"method": {"name": "tamp", "pruner": "wanda", "tokens": "attention"}},
        base | {"method": {"name": "wanda", "pruner": "wanda", "tokens": "all"}},
    ]
    (table,) = build_report([check_results(dict(r), "labels") for r in results]).tables
    # the label names the differing setting by the override that sets it; the plain preset keeps its name
    assert sorted(row.method for row in table.rows) == [
        "tamp",
        "tamp (method.tokens.name=attention)",
        "wanda",
    ]


def test_figure_sparsity_choice(report):
    assert choose_sparsity(report, None) == 0.6  # the highest target with per-linear sparsity
    assert choose_sparsity(report, 0.5) == 0.5
    with pytest.raises(ReportError, match="sparsity 0.7"):
        choose_sparsity(report, 0.7)


class FakeRun:
    """What the conversion reads from wandb.apis.public.Run."""

    def __init__(self, summary: dict, config: dict, state: str = "finished", run_id: str = "abc") -> None:
        self.summary_metrics, self.config, self.state = summary, config, state
        self.path = ["ent", "proj", run_id]


def fake_runs(results: list[dict]) -> list[FakeRun]:
    """Summary as a tracker would log it: flattened score keys; config = the resolved Hydra config."""
    runs = []
    for i, r in enumerate(results):
        summary = {
            "_runtime": 3.0,
            "model": r["model"],
            "sparsity": r["sparsity"],
            "primary_metric": r["primary_metric"],
        }
        summary |= {f"scores/{t}/{m}": v for t, ms in r["scores"].items() for m, v in ms.items()}
        summary |= {"sparsity_per_linear": r["sparsity_per_linear"]}
        method = {
            "name": r["method"]["name"],
            "pruner": r["method"]["pruner"],
            "allocation": {"name": r["method"]["allocation"], "max_sparsity_delta": 0.1},
            "tokens": {"name": r["method"]["tokens"], "knn": 3},
        }
        state = "failed" if r["status"] == "failed" else "finished"
        runs.append(FakeRun(summary, {"method": method, "seed": 42}, state, f"run{i}"))
    return runs


def test_wandb_run_conversion(results):
    converted = [results_from_wandb_run(run) for run in fake_runs(results)]
    tamp = converted[2]
    assert tamp["method"] == {"name": "tamp", "pruner": "wanda", "allocation": "das", "tokens": "amia"}
    assert tamp["scores"]["toy_color"]["exact_match,none"] == 0.68
    assert tamp["status"] == "completed" and tamp["run_dir"] == "wandb:ent/proj/run2"
    assert tamp["config"] == {"method": fake_runs(results)[2].config["method"], "seed": 42}
    assert converted[3]["status"] == "failed"
    want = {(r.method, r.target): r.avg_rel for r in build_report(results).tables[0].rows}
    got = {(r.method, r.target): r.avg_rel for r in build_report(converted).tables[0].rows}
    assert got == want


def test_fetch_wandb_uses_the_public_api(results, monkeypatch):
    calls = []

    class Api:
        def runs(self, path, filters=None):
            calls.append((path, filters))
            return fake_runs(results)

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=Api))
    assert len(fetch_wandb("ent/proj", group="sweep1")) == len(results)
    assert calls == [("ent/proj", {"group": "sweep1"})]
