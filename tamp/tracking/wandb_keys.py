"""What a W&B run of a cell is called and which keys it logs, so a sweep's project reads like the paper.

lmms-eval's metric keys are `metric,filter` (`exact_match,none`): a comma is awkward in W&B's
panels and filters, so logged keys are `metric` (filter `none`) or `metric_filter`. Runs are named
by model, method, sparsity and seed (tamp.tracking.run_names: names no longer collide across models, sweeps or seeds) and grouped by the
experiment or, in an ad-hoc multirun, by the sweep. Rel.% needs the dense scores of the same
model and eval settings; the runner hands them in when the sweep already scored its dense cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tamp.eval.columns import column_scores
from tamp.eval.rel import avg_rel, rel_columns
from tamp.tracking.run_names import (
    NO_DATA_PRUNERS,
    SAVED,
    SEED,
    RunName,
    model_label,
    seed_items,
    variant_items,
)
from tamp.tracking.run_record import RunRecord, pattern_label

#: a run's results: its record, or anything results.json-shaped (the dense scores cached by a sweep)
Results = RunRecord | Mapping[str, Any]


def clean_metric(key: str) -> str:
    """'exact_match,none' -> 'exact_match'; 'acc,flexible-extract' -> 'acc_flexible-extract'."""
    metric, _, filter_name = key.partition(",")
    return metric if filter_name in ("", "none") else f"{metric}_{filter_name}"


def run_name(model: str, method: str, target: float, pattern: str = "unstructured", dense: bool = False,
             seed: Any = None) -> str:
    """'llama3-llava-next-8b-hf/tamp/50%/seed42' ('.../dense' for the reference, '.../50%-2:4/...' for N:M).

    The runner names a cell from its whole config (tamp.tracking.run_names.name_of_config), which also names a
    swapped component (`das+tokens=random`) and a saved checkpoint (`wanda-saved`); this spells the
    same rule from its parts.
    """
    return RunName(method, None if dense else float(target), pattern, seed).wandb(model)


def run_tags(name: RunName, config: Mapping[str, Any], model: str) -> list[str]:
    """W&B tags that filter runs by what tells them apart: the method and what it ran (`pruner=wanda`,
    `tokens=amia`, a variant such as `calib.draw=official`), `sparsity=` and `pattern=` as results.json
    records them (0.0 for the dense reference; a saved checkpoint's measured sparsity), the model, and
    every seed the run drew with (`seed=1`, `calib.seed=7`; the dense reference draws nothing but `seed`)."""
    method = config.get("method") if isinstance(config.get("method"), Mapping) else {}
    seeds = seed_items(config)
    top = [f"{SEED}={seeds[SEED]}"] if SEED in seeds else []
    if name.saved:  # a pruned checkpoint evaluated as is: by its own method, never `dense`
        return [name.method, f"{SAVED}-checkpoint", f"sparsity={name.target}", f"pattern={name.pattern}",
                model_label(model), *top]
    if name.dense:
        return [name.method, "sparsity=0.0", model_label(model), *top]
    parts = {key: method.get(key) for key in ("pruner", "allocation", "tokens")}
    parts = {k: v.get("name") if isinstance(v, Mapping) else v for k, v in parts.items()}
    components = [f"{k}={v}" for k, v in parts.items() if isinstance(v, str)]
    variants = [f"{k}={v}" for k, v in variant_items(config, parts["pruner"], parts["allocation"]).items()
                if f"{k}={v}" in name.method]
    reads_data = parts["pruner"] not in NO_DATA_PRUNERS or parts["allocation"] not in (None, "uniform")
    drawn = [f"{k}={v}" for k, v in sorted(seeds.items()) if k != SEED and (reads_data or not k.startswith("calib."))]
    return [str(method.get("name") or name.method), *components, *variants, f"sparsity={name.target}",
            f"pattern={name.pattern}", model_label(model), *top, *drawn]


def group_name(configured: str | None, sweep_dir: str | Path | None) -> str | None:
    """The configured group (the experiment by default), else the multirun's sweep folder, else none."""
    if configured:
        return configured
    if sweep_dir is None:
        return None
    parts = Path(sweep_dir).resolve().parts
    return "/".join(parts[-2:])  # outputs/multirun/<date>/<time> -> '<date>/<time>'


def as_record(results: Results) -> RunRecord:
    return results if isinstance(results, RunRecord) else RunRecord.from_json(dict(results), "results")


def primary_scores(results: Results, columns: list[dict[str, Any]] | None = None) -> dict[str, float]:
    """{column: score} as the report's columns: a paper suite's columns as recorded (tamp.eval.columns),
    else the task's name for a one-column task, the paper's column names where it has several (MME).
    `columns` (another run's, same eval settings) read a record that holds none, e.g. cached dense scores."""
    record = as_record(results)
    return column_scores(record.primary_metric, record.scores, record.columns or columns)


def rel_metrics(results: Results, dense: Results) -> dict[str, float]:
    """{'rel/<column>': Rel.%, 'rel/avg': Avg Rel.%} as the report computes them (tamp.eval.rel): a column
    the dense run scored (not 0) and this run too; the average only when this run has every such column."""
    columns = as_record(results).columns
    rels = rel_columns(primary_scores(results), primary_scores(dense, columns))
    out = {f"rel/{column}": value for column, value in rels.items() if value is not None}
    average = avg_rel(rels)
    if average is not None:
        out["rel/avg"] = average
    return out


def summary_metrics(results: Results, dense: Results | None = None) -> dict[str, Any]:
    """The flat, comma-free keys a cell logs: scores, primary score per task, Rel.%, sparsity, timings."""
    record = as_record(results)
    out: dict[str, Any] = {"status": record.status}
    for task, scores in record.scores.items():
        for metric, value in scores.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"scores/{task}/{clean_metric(metric)}"] = value
    out.update({f"score/{task}": value for task, value in primary_scores(record).items()})
    if dense is not None:
        out.update(rel_metrics(record, dense))
    sparsity = record.sparsity.to_json()
    out.update({f"sparsity/{k}": v for k, v in sparsity.items() if isinstance(v, (int, float))})
    if record.sparsity.nm is not None:  # what the N:M plan did: `mixed 2:4`, or `2:4 uniform` under an allocation
        out["sparsity/pattern"] = pattern_label(record.sparsity.pattern, record.sparsity.nm, record.method.allocation)
    if record.calibration.get("truncated"):
        out["calibration/truncated"] = record.calibration["truncated"]
    out.update({f"timings/{k}": v for k, v in record.timings.items()})
    return out
