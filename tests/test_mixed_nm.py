"""N:M with a layer-wise allocation does what its label says: N per allocation group, M fixed, recorded.

Before, `sparsity=nm_2_4 method=owl` (or tamp, das) planned every linear at 2:4 and recorded
`allocation: owl`: Wanda 2:4 under OWL's name. Now the allocation's per-linear sparsity becomes each
group's N (rounded down or up, the total meeting N/M), every linear's weights meet its own N:M, and
when the grid rounds every group to the same N the record and one log line say the run is uniform.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
from pathlib import Path

import pytest
import torch
from tiny_models import fresh_tiny

import tamp
from tamp.cli.run_command import run
from tamp.core.config import PruneConfig, SparsityConfig
from tamp.core.paths import CONF_DIR
from tamp.methods.composed import ComposedMethod, allocation_groups
from tamp.models.tiny import TinyBundle
from tamp.pipeline.engine import LayerwiseEngine
from tamp.reporting.runs import pattern_of
from tamp.sparsity.allocate import Group
from tamp.sparsity.mixed_nm import group_n, linear_n, summarise
from tamp.sparsity.registry import allocation_settings
from tamp.tracking.run_record import RunRecord
from tamp.tracking.wandb_keys import summary_metrics

ALLOCATIONS = ["owl", "das", "das_all_token", "das_block", "ecoflap"]


@functools.cache
def _pristine() -> TinyBundle:
    return fresh_tiny("llava_next")


def _copy() -> TinyBundle:
    base = _pristine()
    model = copy.deepcopy(base.model)
    return TinyBundle(model, base.processor, type(base.adapter)(model, base.processor), base.family, base.example)


def _method(allocation: dict, pattern: str, pruner: str = "wanda") -> ComposedMethod:
    n, m = map(int, pattern.split(":")) if pattern != "unstructured" else (1, 2)
    cfg = PruneConfig(sparsity=SparsityConfig(target=n / m, pattern=pattern), seed=0)
    cfg.method.pruner = pruner
    cfg.method.allocation = allocation_settings(allocation)
    return ComposedMethod.from_config(cfg)


def _zeros_per_group(weight: torch.Tensor, m: int) -> torch.Tensor:
    rows, cols = weight.shape
    return (weight == 0).reshape(rows, cols // m, m).sum(-1)


# ------------------------------------------------------------------------------------ the rounding
def _group(name: str, size: int) -> Group:
    return Group(name, {name: torch.nn.Linear(size, 1, bias=False)})


@pytest.mark.parametrize("m", [4, 8])
def test_rounding_is_floor_or_ceil_and_meets_the_total_exactly(m: int) -> None:
    gen = torch.Generator().manual_seed(0)
    for trial in range(200):
        n = int(torch.randint(1, m, (1,), generator=gen))
        count = int(torch.randint(2, 12, (1,), generator=gen))
        groups = [_group(f"g{i}", 16 * m) for i in range(count)]  # equal steps: exactness is reachable
        spread = torch.rand(count, generator=gen) * 2 - 1
        spread -= spread.mean()
        sparsity = {g.name: min(max(n / m + 0.3 * float(s), 0.0), 0.99) for g, s in zip(groups, spread, strict=True)}
        chosen = group_n(sparsity, groups, n, m)
        for g in groups:
            x = min(sparsity[g.name] * m, m - 1)
            assert chosen[g.name] in {math.floor(x + 1e-9), math.ceil(x - 1e-9)}, (trial, g.name, x, chosen)
            assert 0 <= chosen[g.name] <= m - 1
        floors = sum(math.floor(min(sparsity[g.name] * m, m - 1) + 1e-9) for g in groups)
        ceils = sum(math.ceil(min(sparsity[g.name] * m, m - 1) - 1e-9) for g in groups)
        if floors <= n * count <= ceils:
            assert sum(chosen.values()) == n * count, (trial, sparsity, chosen)


def test_a_spread_narrower_than_one_step_is_uniform_and_says_so() -> None:
    groups = [_group(f"g{i}", 64) for i in range(4)]
    owl_like = {"g0": 0.42, "g1": 0.47, "g2": 0.53, "g3": 0.58}  # 1.68 .. 2.32 of 4
    chosen = group_n(owl_like, groups, 2, 4)
    assert set(chosen.values()) == {2}
    summary = summarise({g: n / 4 for g, n in chosen.items()}, 2, 4, "owl")
    assert summary["mixed"] is False and "uniform" in summary["note"] and "owl" in summary["note"]
    assert summarise({"a": 0.5}, 2, 4, "uniform").get("note") is None  # uniform by name is no surprise


def test_a_linears_n_reads_back_from_its_plan() -> None:
    for m in (4, 8, 16):
        for n in range(m):
            assert linear_n(n / m, m) == n


# ------------------------------------------------------------------------------------ the plans
@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
@pytest.mark.parametrize("allocation", ALLOCATIONS)
def test_each_allocation_under_a_pattern_gives_n_from_its_own_plan(allocation: str, pattern: str, caplog) -> None:
    """Every preset's allocation x pattern: N of each group is its unstructured share at N/M, rounded."""
    n, m = map(int, pattern.split(":"))
    bundle = _copy()
    engine = LayerwiseEngine(bundle.model, bundle.adapter, [bundle.example_sample()], progress=False)
    torch.manual_seed(0)
    real = _method({"name": allocation}, "unstructured").allocation.plan(engine, n / m)
    torch.manual_seed(0)
    method = _method({"name": allocation}, pattern)
    with caplog.at_level(logging.INFO, logger="tamp"):
        plan = method.plan(engine)
    groups = allocation_groups(method.allocation, engine)
    assert {name for g in groups for name in g.linears} == set(plan)
    for g in groups:
        per_linear = {linear_n(plan[name], m) for name in g.linears}
        assert len(per_linear) == 1, f"{g.name}: one N per allocation group, got {per_linear}"
        x = min(real[next(iter(g.linears))] * m, m - 1)
        assert per_linear.pop() in {math.floor(x + 1e-9), math.ceil(x - 1e-9)}
    sizes = {name: lin.weight.numel() for linears in engine.linears for name, lin in linears.items()}
    pruned = sum(sizes[k] * plan[k] for k in plan)
    assert pruned == pytest.approx(sum(sizes.values()) * n / m), "the model's total meets N/M exactly"
    summary = summarise(plan, n, m, allocation)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sparsity:")]
    assert len(lines) == 1 and allocation in lines[0]
    level = next(r.levelno for r in caplog.records if r.getMessage().startswith("sparsity:"))
    if summary["mixed"]:
        assert "mixed" in lines[0] and level == logging.INFO
    else:  # never a uniform plan under the allocation's name without saying so
        assert "uniform" in lines[0] and "not an allocation" in lines[0] and "uniform" in summary["note"]
        assert level == logging.WARNING


def test_das_at_2_4_really_mixes_and_owl_mixes_once_its_spread_is_wider_than_a_step() -> None:
    bundle = _copy()
    engine = LayerwiseEngine(bundle.model, bundle.adapter, [bundle.example_sample()], progress=False)
    das = summarise(_method({"name": "das"}, "2:4").plan(engine), 2, 4, "das")
    assert das["mixed"] and len(das["linears_per_n"]) > 1
    owl = summarise(_method({"name": "owl"}, "2:4").plan(engine), 2, 4, "owl")
    assert not owl["mixed"]  # lambda 0.08 spans 0.42-0.58: every block rounds to 2 of 4
    wide = summarise(_method({"name": "owl", "owl_lambda": 0.2}, "2:4").plan(engine), 2, 4, "owl")
    assert wide["mixed"] and set(wide["linears_per_n"]) == {"1", "3"}


# ------------------------------------------------------------------------------------ the masks
@pytest.mark.parametrize(("allocation", "pruner", "pattern"), [
    ({"name": "das"}, "wanda", "2:4"),
    ({"name": "das"}, "sparsegpt", "2:4"),
    ({"name": "owl", "owl_lambda": 0.2}, "wanda", "4:8"),
    ({"name": "das_block"}, "magnitude", "2:4"),
])
def test_every_linear_meets_its_own_n_m_and_the_report_says_which(allocation, pruner, pattern) -> None:
    n, m = map(int, pattern.split(":"))
    bundle = _copy()
    config = {"method": {"pruner": pruner, "allocation": allocation}, "sparsity": {"target": n / m, "pattern": pattern},
              "device": "cpu", "progress": False}
    report = tamp.prune(bundle.model, [bundle.example_sample()], config, adapter=bundle.adapter)
    linears = {name: lin for block in bundle.adapter.target_linears() for name, lin in block.items()}
    for x in report.linears:
        planned_n = int(x.planned_pattern.split(":")[0])
        assert x.planned_pattern == x.achieved_pattern, x
        zeros = _zeros_per_group(linears[x.name].weight, m)
        assert bool((zeros == planned_n).all()), f"{x.name}: groups of {m} with other than {planned_n} zeros"
        assert x.pruned == x.planned_pruned
    assert report.achieved == pytest.approx(n / m) and report.planned == pytest.approx(n / m)
    assert report.nm["allocation"] == allocation["name"] and report.nm["m"] == m
    assert report.nm["mixed"] == (len({x.planned_pattern for x in report.linears}) > 1)
    assert "| pattern | achieved pattern |" in report.summary()


# ------------------------------------------------------------------------------------ the run record
@pytest.mark.parametrize("method", ["owl", "tamp", "das"])
def test_the_cli_records_the_plan_and_pattern_per_linear(compose_cfg, method: str, tmp_path: Path) -> None:
    """`sparsity=nm_2_4 method=owl|tamp|das`: results.json and prune_report.md say what each linear got."""
    cfg = compose_cfg([f"method={method}", "sparsity=nm_2_4", "logger=none", "runner.progress=false",
                       "calib.num_samples=2"])
    run(cfg, tmp_path)
    record = json.loads((tmp_path / "results.json").read_text())
    allocation = {"owl": "owl", "tamp": "das", "das": "das"}[method]
    assert record["method"]["allocation"] == allocation and record["allocation_scores"]
    nm = record["sparsity"]["nm"]
    assert nm["allocation"] == allocation and nm["m"] == 4 and nm["n"] == 2
    per_linear = record["sparsity_per_linear"]
    patterns = {v["pattern"] for v in per_linear.values()}
    assert all(v["pattern"] == v["achieved_pattern"] for v in per_linear.values())
    assert nm["mixed"] == (len(patterns) > 1)
    assert sum(nm["linears_per_n"].values()) == len(per_linear)
    if not nm["mixed"]:
        assert "uniform" in nm["note"]
    assert record["sparsity"]["achieved"] == pytest.approx(0.5)
    assert "| pattern | achieved pattern |" in (tmp_path / "prune_report.md").read_text()
    label = pattern_of(record)
    assert label == ("mixed 2:4" if nm["mixed"] else "2:4 uniform"), label
    assert summary_metrics(RunRecord.read(tmp_path / "results.json"))["sparsity/pattern"] == label  # W&B says it too


def test_the_report_labels_nm_rows_by_what_they_did() -> None:
    def result(allocation: str | None, nm: dict | None, pattern: str = "2:4") -> dict:
        sparsity = {"target": 0.5, "pattern": pattern, "achieved": 0.5, **({"nm": nm} if nm else {})}
        return {"method": {"name": "x", "pruner": "wanda", "allocation": allocation}, "sparsity": sparsity}

    assert pattern_of(result("das", {"mixed": True})) == "mixed 2:4"
    assert pattern_of(result("owl", {"mixed": False})) == "2:4 uniform"
    assert pattern_of(result("owl", None)) == "2:4 uniform"  # a run from before mixed N:M ignored its allocation
    assert pattern_of(result("uniform", {"mixed": False})) == "2:4"
    assert pattern_of(result(None, None)) == "2:4"
    assert pattern_of(result("das", None, "unstructured")) == "unstructured"


PRESETS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml")
                 if p.stem != "dense")


@pytest.mark.parametrize("preset", PRESETS)
def test_every_method_preset_with_a_pattern_does_what_its_label_says(compose_cfg, preset: str) -> None:
    """`method=PRESET sparsity=nm_2_4`: an allocation mixes N or says it is uniform; every linear meets its N:M."""
    from tamp.cli.schema import validate

    settings = validate(compose_cfg([f"method={preset}", "sparsity=nm_2_4"]))
    config = settings.prune_config()
    config.device, config.progress = "cpu", False
    bundle = _copy()
    report = tamp.prune(bundle.model, [bundle.example_sample(), bundle.example_sample()], config, adapter=bundle.adapter)
    allocation = settings.method.allocation.name
    assert report.nm is not None and report.nm["allocation"] == allocation
    patterns = {x.planned_pattern for x in report.linears}
    assert report.nm["mixed"] == (len(patterns) > 1)
    if allocation == "uniform":
        assert patterns == {"2:4"}
    elif not report.nm["mixed"]:
        assert allocation in report.nm["note"], report.nm
    assert all(x.planned_pattern == x.achieved_pattern and x.pruned == x.planned_pruned for x in report.linears)
    assert report.planned == pytest.approx(0.5) and report.achieved == pytest.approx(0.5)
