"""results.json as tamp.tracking.run_record.RunRecord: round trips, older files, failures, and the report reading it back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tamp.cli.run_command import record_failure
from tamp.core.io import first_line, write_json_atomic
from tamp.reporting import build_report, load_results
from tamp.tracking.results import ResultsFile
from tamp.tracking.run_record import (
    COMPLETED,
    FIELDS,
    LinearEntry,
    MethodId,
    ModelId,
    RunRecord,
    RunRecordError,
    Sparsity,
    block_index,
)
from tamp.tracking.wandb_keys import summary_metrics

pytestmark = pytest.mark.fast  # the unit tier: make test-fast

FIXTURE = Path(__file__).parent / "data" / "report" / "sweep" / "1" / "results.json"
Q = "model.language_model.layers.1.self_attn.q_proj"


def started(method: str = "wanda", target: float = 0.5, config: dict | None = None) -> RunRecord:
    """What the runner records before any work: the cell's identity."""
    return RunRecord(
        experiment="unit",
        model=ModelId("tiny:llava", "llava"),
        method=MethodId(method, "wanda" if method != "dense" else "none", "uniform", "all"),
        sparsity=Sparsity(target if method != "dense" else 0.0, "unstructured"),
        config=config or {"method": {"name": method}, "seed": 0},
    )


def measured(score: float, achieved: float = 0.5) -> dict:
    """What the runner records once the cell completes (RunRecord field names)."""
    return {
        "sparsity": Sparsity(0.5, "unstructured", achieved=achieved, planned=0.5),
        "sparsity_per_linear": {Q: LinearEntry.of(Q, 0.5, achieved, 64)},
        "timings": {"prune_s": 1.0, "eval_s": 2.0, "total_s": 3.0},
        "scores": {"mc": {"acc,none": score, "acc_stderr,none": 0.01}},
        "primary_metric": {"mc": "acc,none"},
    }


def test_a_record_survives_json_unchanged() -> None:
    record = started().completed(**measured(0.25), allocation_scores={Q: 0.3}, versions={"torch": "2"})
    record.extra["note"] = "kept"
    text = json.dumps(record.to_json())
    again = RunRecord.from_json(json.loads(text))
    assert again == record
    assert again.to_json() == record.to_json()
    assert list(record.to_json())[: len(FIELDS)] == list(FIELDS)
    assert record.sparsity_per_linear[Q].block == 1 and record.sparsity_per_linear[Q].kind == "q_proj"


def test_the_shipped_example_file_reads_and_writes_back_the_same(tmp_path: Path) -> None:
    data = json.loads(FIXTURE.read_text())
    record = RunRecord.read(FIXTURE)
    assert record.to_json() == data
    record.write(tmp_path / "results.json")
    assert json.loads((tmp_path / "results.json").read_text()) == data


def test_an_older_file_without_the_newer_keys_reads_with_defaults(tmp_path: Path) -> None:
    old = {  # hand-made or from an older tamp: no status, run_dir, block or kind; a key tamp does not know
        "model": {"name": "m"},
        "method": {"name": "wanda"},
        "sparsity": {"target": 0.5},
        "scores": {"mc": {"acc,none": 0.5}},
        "sparsity_per_linear": {"model.layers.3.mlp.up_proj": {"achieved": 0.5, "numel": 8}},
        "seed_note": 1,
    }
    write_json_atomic(tmp_path / "run" / "results.json", old)
    record = RunRecord.read(tmp_path / "run" / "results.json")
    assert record.status == COMPLETED and record.run_dir == str(tmp_path / "run")
    assert record.sparsity.pattern == "unstructured" and record.primary_metric == {}
    entry = record.sparsity_per_linear["model.layers.3.mlp.up_proj"]
    assert (entry.block, entry.kind, entry.planned) == (3, "up_proj", None)
    assert record.to_json()["seed_note"] == 1 and record.missing() is None
    assert RunRecord.from_json({"model": {"name": "m"}}).missing() == "method.name"


@pytest.mark.parametrize(
    ("content", "says"),
    [("{not json", "malformed JSON"), ("[1, 2]", "expected a JSON object, got list"), (None, "cannot read")],
)
def test_an_unreadable_file_is_one_line_naming_it(tmp_path: Path, content: str | None, says: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RunRecordError) as err:
        RunRecord.read(path)
    assert str(path) in str(err.value) and says in str(err.value) and len(str(err.value).splitlines()) == 1


def test_failed_and_completed_records_have_the_same_fields(tmp_path: Path) -> None:
    done = ResultsFile(tmp_path / "done", started())
    done.start()
    completed = done.complete(**measured(0.25))
    cfg = OmegaConf.create({"experiment": "unit", "model": {"name": "tiny:llava"},
                            "method": {"name": "wanda", "pruner": "wanda"}, "sparsity": {"target": 1.5}})
    record_failure(cfg, tmp_path / "bad", ValueError("sparsity.target=1.5 is out of range\nmore"))
    failed = json.loads((tmp_path / "bad" / "results.json").read_text())
    interrupted = ResultsFile(tmp_path / "int", started()).fail(KeyboardInterrupt("signal SIGTERM"))
    assert set(completed) == set(failed) == set(interrupted) == set(FIELDS)
    for part in ("model", "method"):
        assert set(completed[part]) == set(failed[part]) == set(interrupted[part])
    assert failed["status"] == "failed" and failed["error"] == "ValueError: sparsity.target=1.5 is out of range"
    assert interrupted["status"] == "interrupted" and completed["versions"]
    assert (failed["method"]["allocation"], failed["method"]["tokens"]) == (None, None)  # not guessed


def test_the_report_reads_what_the_writer_wrote(tmp_path: Path) -> None:
    for i, (method, score) in enumerate([("dense", 0.5), ("wanda", 0.25)]):
        results = ResultsFile(tmp_path / str(i), started(method))
        results.start()
        results.complete(**measured(score, achieved=0.0 if method == "dense" else 0.5))
    ResultsFile(tmp_path / "2", started("owl")).fail(RuntimeError("CUDA out of memory"))
    runs = load_results([tmp_path])
    assert [r["status"] for r in runs] == ["completed", "completed", "failed"]
    assert runs[1] == RunRecord.read(tmp_path / "1" / "results.json").to_json()
    rows = {(row.method, row.target): row for row in build_report(runs).tables[0].rows}
    assert rows[("wanda", 0.5)].avg_rel == pytest.approx(50.0)
    assert rows[("owl", 0.5)].status == "failed"


def test_wandb_keys_read_a_record_like_its_json() -> None:
    record = started().completed(**measured(0.25))
    assert summary_metrics(record) == summary_metrics(record.to_json())
    assert summary_metrics(record)["sparsity/achieved"] == 0.5 and summary_metrics(record)["score/mc"] == 0.25


def test_one_block_index_for_writer_and_report() -> None:
    assert block_index(Q) == 1
    assert block_index("model.layers.12.mlp.down_proj") == 12
    assert block_index("transformer.h.7.attn.c_proj") == 7  # hand-made names without `layers`
    assert block_index("lm_head") is None


def test_atomic_writes_leave_no_temporary_file_and_errors_shorten_to_one_line(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "a" / "x.json", {"v": 1})
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]
    assert first_line(ValueError("one\ntwo")) == "one" and first_line(KeyError()) == "KeyError"
