"""ECoFLaP allocator and OWL layer-wise sparsity: official-code fixtures and invariants."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from official_data import load_official, official_cases

from tamp.sparsity.allocate import allocate
from tamp.sparsity.owl import outlier_ratio, owl_sparsity

pytestmark = pytest.mark.fast  # the unit tier: make test-fast


def _cases(kind: str) -> list[dict]:
    return official_cases(kind)


def _kept(sparsity: dict[str, float], num_params: dict[str, int]) -> dict[str, int]:
    return {k: round((1 - p) * num_params[k]) for k, p in sparsity.items()}


def _as_official_float32(keep: int, n: int) -> float:
    """The fixture stores 1 - keep / n computed in float32 by the official code."""
    return float(np.float32(1.0) - np.float32(keep) / np.float32(n))


@pytest.mark.parametrize("official", [False, True])
@pytest.mark.parametrize("index", range(len(_cases("allocator"))))
def test_allocator_fixture(index: int, official: bool) -> None:
    case = _cases("allocator")[index]
    key = "expected_sparsity_official_code" if official else "expected_sparsity"
    result = allocate(
        case["scores"],
        case["num_params"],
        case["target_sparsity"],
        case["max_sparsity_per_layer"],
        case["aggregation"],
        official_overshoot=official,
    )
    sizes = case["num_params"]
    kept = _kept(result, sizes)
    assert kept == _kept(case[key], sizes)
    for name, expected in case[key].items():
        assert _as_official_float32(kept[name], sizes[name]) == pytest.approx(expected, abs=1e-9)
        assert result[name] == pytest.approx(expected, abs=1e-7)  # float32 rounding of the fixture
    budget = int(sum(sizes.values()) * (1 - case["target_sparsity"]))
    assert (sum(kept.values()) > budget) if official else (sum(kept.values()) == budget)


def _random_groups(rng: random.Random) -> tuple[dict[str, float], dict[str, int]]:
    count = rng.randint(1, 30)
    sizes, scores = {}, {}
    for g in range(count):
        kind = rng.random()
        n = (
            rng.randint(1, 9)
            if kind < 0.2
            else rng.randint(10, 300)
            if kind < 0.6
            else rng.randint(1000, 60000)
        )
        sizes[f"g{g}"] = n
        scores[f"g{g}"] = 0.0 if rng.random() < 0.1 else rng.lognormvariate(0.0, 2.0)
    return scores, sizes


@pytest.mark.parametrize("aggregation", ["sum", "avg"])
def test_allocator_budget_and_cap_on_random_inputs(aggregation: str) -> None:
    rng = random.Random(1234)
    checked = 0
    for _ in range(400):
        scores, sizes = _random_groups(rng)
        target = rng.uniform(0.05, 0.9)
        cap = min(1.0, target + rng.choice([0.0, 0.02, 0.1, 0.3]))
        budget = int(sum(sizes.values()) * (1 - target))
        floors = sum(min(n, math.ceil(n * (1 - cap))) for n in sizes.values())
        if floors > budget:
            with pytest.raises(ValueError, match="too tight"):
                allocate(scores, sizes, target, cap, aggregation)
            continue
        result = allocate(scores, sizes, target, cap, aggregation)
        kept = _kept(result, sizes)
        assert sum(kept.values()) == budget
        for name, p in result.items():
            assert -1e-12 <= p <= cap + 1e-12
            assert abs((1 - p) * sizes[name] - kept[name]) < 1e-6
        checked += 1
    assert checked > 250


def test_allocator_prefers_high_scores_and_avg_divides_by_size() -> None:
    sizes = {"a": 1000, "b": 1000, "c": 4000}
    scores = {"a": 3.0, "b": 1.0, "c": 1.0}
    result = allocate(scores, sizes, 0.5, 0.6)
    assert result["a"] < result["b"]
    per_weight = {k: scores[k] / sizes[k] for k in scores}
    assert allocate(scores, sizes, 0.5, 0.6, aggregation="avg") == allocate(per_weight, sizes, 0.5, 0.6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target": 1.0}, "target"),
        ({"target": -0.1}, "target"),
        ({"max_sparsity": 0.4}, "max_sparsity"),
        ({"max_sparsity": 1.2}, "max_sparsity"),
        ({"aggregation": "mean"}, "aggregation"),
    ],
)
def test_allocator_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"scores": {"a": 1.0}, "num_params": {"a": 10}, "target": 0.5, "max_sparsity": 0.6} | kwargs
    with pytest.raises(ValueError, match=match):
        allocate(**args)


def test_allocator_rejects_mismatched_keys_and_nan() -> None:
    with pytest.raises(ValueError, match="same keys"):
        allocate({"a": 1.0}, {"b": 10}, 0.5, 0.6)
    with pytest.raises(ValueError, match="not finite"):
        allocate({"a": float("nan")}, {"a": 10}, 0.5, 0.6)


@pytest.mark.parametrize("case", _cases("owl"), ids=lambda c: c["file"])
def test_owl_fixture(case: dict) -> None:
    data = load_official(case["file"])
    blocks = len(case["outlier_ratio_percent"])
    ratios = [outlier_ratio(data[f"block{b}.metric"], case["M"]) for b in range(blocks)]
    assert ratios == pytest.approx(case["outlier_ratio_percent"], abs=1e-9)
    args = (case["outlier_ratio_percent"], case["target_sparsity"], case["lambda"])
    assert owl_sparsity(*args) == pytest.approx(case["owl_sparsity"], abs=1e-9)
    assert owl_sparsity(*args, compat="tamp_repository") == pytest.approx(
        case["tamp_repository_sparsity"], abs=1e-9
    )


def test_owl_properties() -> None:
    ratios = [0.5, 2.0, 1.0, 3.5]
    sparsity = owl_sparsity(ratios, 0.6, 0.08)
    assert sum(sparsity) / 4 == pytest.approx(0.6, abs=1e-12)
    assert max(sparsity) - min(sparsity) == pytest.approx(0.16, abs=1e-12)
    assert sparsity.index(min(sparsity)) == ratios.index(max(ratios))  # more outliers, less pruning
    assert owl_sparsity([1.0, 1.0], 0.5, 0.08) == [0.5, 0.5]
    with pytest.raises(ValueError, match="compat"):
        owl_sparsity(ratios, 0.5, 0.08, compat="owl2")


def test_outlier_ratio_of_parts_is_of_the_concatenation() -> None:
    gen = torch.Generator().manual_seed(0)
    parts = [torch.rand(8, 16, generator=gen) ** 4, torch.rand(4, 16, generator=gen) ** 4]
    whole = torch.cat([p.flatten() for p in parts])
    expected = 100.0 * int((whole > 3 * whole.mean()).sum()) / whole.numel()
    assert outlier_ratio(parts, 3) == pytest.approx(expected, abs=1e-12)
    assert outlier_ratio(whole, 3) == pytest.approx(expected, abs=1e-12)
