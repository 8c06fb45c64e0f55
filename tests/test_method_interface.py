"""A layer-wise method that is not pruner x allocation x tokens, registered in this one file and run by
`method.kind` through `tamp.prune`: structured pruning of whole output rows by their activation-weighted
norm. The composed method stays the default, and a config that does not name a kind is unchanged."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tiny_models import fresh_tiny
from torch import nn

import tamp
from tamp.core.protocols import LayerwiseMethod, ScoringModel
from tamp.core.registries import METHODS, register_method
from tamp.methods.components import KindConfig, as_prune_config
from tamp.methods.composed import ComposedMethod, build_method
from tamp.methods.presets import prune_config

REPO = Path(__file__).resolve().parents[1]
QUIET = {"device": "cpu", "progress": False, "keep_masks": True}


@dataclass
class RowNormSettings(KindConfig):
    kind: str = "row_norm"
    power: float = 2.0  # the norm's order over each row's activation-weighted weights

    def check(self) -> None:
        if self.power <= 0:
            raise ValueError(f"method.power={self.power} is out of range; valid: > 0")


def row_scores(weight: torch.Tensor, sumsq: torch.Tensor, power: float) -> torch.Tensor:
    """Per output row: || W_i,: * ||X_:,j||_2 ||_power (Wanda's weight-activation product, summed per row)."""
    return (weight.float().abs() * sumsq.sqrt()).pow(power).sum(dim=1)


@register_method("row_norm", config=RowNormSettings)
class RowNorm(LayerwiseMethod):
    """Zeroes the round(s * rows) output rows of lowest activation-weighted norm in every targeted linear."""

    def __init__(self, cfg: tamp.PruneConfig) -> None:
        self.target, self.power = cfg.sparsity.target, cfg.method.power
        self.sumsq: dict[str, torch.Tensor] = {}

    def plan(self, engine: ScoringModel) -> dict[str, float]:
        return {name: self.target for linears in engine.linears for name in linears}

    def begin_block(self, index: int, linears: dict[str, nn.Linear]) -> None:
        self.sumsq = {name: torch.zeros(lin.in_features, device=lin.weight.device) for name, lin in linears.items()}

    def observe(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx) -> None:
        self.sumsq[name] += x.float().pow(2).sum(dim=0)

    def end_block(self, index, linears, plan, engine) -> dict[str, torch.Tensor]:
        engine.reduce_(list(self.sumsq.values()))
        masks = {}
        for name, linear in linears.items():
            rows = round(plan[name] * linear.out_features)
            pruned = row_scores(linear.weight, self.sumsq[name], self.power).argsort()[:rows]
            mask = torch.zeros_like(linear.weight, dtype=torch.bool)
            mask[pruned] = True
            linear.weight.data.masked_fill_(mask, 0)
            masks[name] = mask
        return masks

    def planned_pruned(self, linear: nn.Linear, planned: float, nm) -> int:
        return round(planned * linear.out_features) * linear.in_features


def _dense_block0_sumsq(bundle, samples) -> dict[str, torch.Tensor]:
    """Σ_t x_tj² of every block-0 linear's input over the samples, from forward hooks on the dense model."""
    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for name, linear in bundle.adapter.target_linears()[0].items():
        def hook(module, args, out, name=name):
            x = args[0].reshape(-1, args[0].shape[-1]).float()
            sums[name] = sums.get(name, 0) + x.pow(2).sum(dim=0)
        hooks.append(linear.register_forward_hook(hook))
    with torch.no_grad():
        for sample in samples:
            bundle.model(**sample.inputs, use_cache=False)
    for h in hooks:
        h.remove()
    return sums


def test_a_registered_method_prunes_whole_rows_through_tamp_prune() -> None:
    dense, pruned = fresh_tiny("llava_next"), fresh_tiny("llava_next")
    samples = [dense.example_sample(i % len(dense.examples())) for i in range(3)]
    expected_stats = _dense_block0_sumsq(dense, samples)
    weights = {n: lin.weight.detach().clone() for n, lin in dense.adapter.target_linears()[0].items()}

    summary = tamp.prune(pruned.model, samples, {"method": {"kind": "row_norm"}, "sparsity": {"target": 0.5}, **QUIET})

    assert (summary.method_name, summary.pruner, summary.allocation, summary.tokens) == (
        "row_norm", "row_norm", "uniform", "all")
    assert summary.linears and summary.masks.keys() == {x.name for x in summary.linears}
    for x in summary.linears:
        linear = pruned.model.get_submodule(x.name)
        rows = round(0.5 * linear.out_features)
        zero_rows = (linear.weight == 0).all(dim=1)
        assert int(zero_rows.sum()) == rows, x.name  # exactly half the rows, each entirely zero
        assert x.pruned == x.planned_pruned == rows * linear.in_features, x.name
        assert torch.equal(summary.masks[x.name], zero_rows[:, None].expand_as(linear.weight))
    for name, weight in weights.items():  # block 0: the lowest rows by the dense model's own statistics
        lowest = row_scores(weight, expected_stats[name], 2.0).argsort()[: round(0.5 * weight.shape[0])]
        got = summary.masks[name].all(dim=1).nonzero().view(-1)
        assert sorted(got.tolist()) == sorted(lowest.tolist()), name
    assert summary.achieved == summary.planned == pytest.approx(0.5, abs=0.01)


@pytest.mark.fast
def test_the_composed_method_is_the_default_and_a_config_without_kind_is_unchanged() -> None:
    assert {"composed", "row_norm"} <= set(METHODS.names())
    plain = prune_config({"method": {"pruner": "wanda"}})
    explicit = prune_config({"method": {"kind": "composed", "pruner": "wanda"}})
    assert explicit.to_dict() == plain.to_dict() and "kind" not in plain.to_dict()["method"]
    assert isinstance(build_method(prune_config("tamp")), ComposedMethod)
    assert isinstance(build_method(as_prune_config({"method": {"kind": "row_norm", "power": 1.0}})), RowNorm)


@pytest.mark.fast
@pytest.mark.parametrize(
    ("method", "message"),
    [
        ({"kind": "nope"}, r"^method.kind='nope' is unknown; valid: composed, .*row_norm"),
        ({"kind": "row_norm", "power": 0}, r"^method.power=0 is out of range; valid: > 0$"),
        ({"kind": "row_norm", "knn": 3}, r"knn"),
        ({"kind": "row_norm", "allocation": {"name": "uniform"}, "tokens": {"name": "amia"}},
         r"^method.tokens.name=amia: method.kind=row_norm computes its own statistics and masks"),
        ({"kind": "row_norm", "pruner": "wanda"}, r"^method.pruner=wanda: method.kind=row_norm is not pruner x "),
        ({"kind": "row_norm", "name": "tamp"}, r"method.name=tamp .*tamp is the preset of wanda x das x amia"),
    ],
)
def test_a_registered_methods_settings_are_checked(method: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        as_prune_config({"method": method})


def test_the_extending_page_registers_a_method_as_printed() -> None:
    """docs/extending.md's method block runs as printed: whole rows, exactly half of each linear's."""
    page = (REPO / "docs" / "extending.md").read_text()
    (block,) = [code for code in re.findall(r"```py\n(.*?)```", page, flags=re.S) if "register_method" in code]
    check = textwrap.dedent("""
        for x in summary.linears:
            weight = model.get_submodule(x.name).weight
            assert int((weight == 0).all(dim=1).sum()) * 2 == weight.shape[0], x.name
            assert x.pruned * 2 == weight.numel(), x.name
        print("rows", len(summary.linears))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-c", block + check], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("overall sparsity planned 0.5") and "achieved 0.5" in lines[0], proc.stdout
    assert lines[1] == "rows 14", proc.stdout  # 2 blocks x 7 linears


def test_a_registered_kind_is_chosen_on_the_command_line_with_its_own_settings(compose_cfg, tmp_path: Path) -> None:
    """`method=row_norm method.power=1`: the kind registered in this file is a `method` option of `tamp.run`,
    its settings are checked like a preset's, and the run (in-process, no evaluation) prunes with its code."""
    import json

    from tamp.cli.preflight import PreflightError, check_command
    from tamp.cli.run_command import run
    from tamp.models.mask_file import MASKS_FILE, load_masks

    quick = ["logger=none", "runner.progress=false", "calib.num_samples=2", "eval=none"]
    chosen = ["method=row_norm", "method.power=1", *quick]
    with pytest.raises(PreflightError) as bad_key:
        check_command(["method=row_norm", "method.knn=3", *quick])
    assert str(bad_key.value) == ("unknown config key 'method.knn' (given method.knn=3); valid under method for "
                                  "method.kind=row_norm: allocation, kind, name, power, pruner, tokens")
    with pytest.raises(PreflightError, match=r"^method.power=0.0 is out of range; valid: > 0$"):
        check_command(["method=row_norm", "method.power=0", *quick])
    with pytest.raises(PreflightError, match=r"method.kind.*chosen as method=KIND \(registered: .*row_norm"):
        check_command(["method.kind=row_norm", *quick])
    assert check_command(chosen) == 1

    save = tmp_path / "saved"
    record = run(compose_cfg([*chosen, f"runner.save_dir={save}", "runner.save_masks=true"]), tmp_path / "run")

    assert record["status"] == "completed", record.get("error")
    assert (record["method"]["name"], record["method"]["pruner"]) == ("row_norm", "row_norm")
    assert record["config"]["method"]["power"] == 1.0
    masks = load_masks(save / MASKS_FILE)
    assert masks and record["sparsity"]["achieved"] == pytest.approx(0.5, abs=0.01)
    for name, mask in masks.items():  # RowNorm's masks: whole output rows, half of each linear's
        rows = mask.all(dim=1)
        assert torch.equal(mask, rows[:, None].expand_as(mask)), name
        assert int(rows.sum()) == round(0.5 * mask.shape[0]), name
    assert json.loads((save / "sparsity_manifest.json").read_text())["method"] == "row_norm"
