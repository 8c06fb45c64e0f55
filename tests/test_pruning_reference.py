"""tamp.pruning against data recorded from the official Wanda and SparseGPT code (tests/data/official)."""

from __future__ import annotations

import pytest
import torch
from official_data import load_official, official_cases

from tamp.pruning.masks import nm_mask, unstructured_mask
from tamp.pruning.sparsegpt import HessianStats, sparsegpt_prune
from tamp.pruning.wanda import SquaredNormStats, wanda_metric

pytestmark = pytest.mark.fast  # the unit tier: make test-fast


def _manifest(section: str) -> list[dict]:
    return official_cases(section)


def _load(case: dict) -> dict[str, torch.Tensor]:
    return load_official(case["file"])


def _rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def _scaler_row(inputs: torch.Tensor, normalize: str) -> torch.Tensor:
    stats = SquaredNormStats(inputs.shape[-1], "cpu")
    for sample in inputs:
        stats.add(sample)
    return stats.scaler_row(normalize)


@pytest.mark.parametrize("case", _manifest("wanda"), ids=lambda c: c["file"])
def test_wanda_scaler_row_is_mean_over_samples(case: dict) -> None:
    data = _load(case)
    expected = data["expected.scaler_row"]
    got = _scaler_row(data["inputs"], "samples")
    assert ((got - expected).abs() / expected.abs()).max().item() < 1e-5
    # The other convention differs by exactly the tokens-per-sample factor, so it is not the reference.
    tokens = _scaler_row(data["inputs"], "tokens")
    assert not torch.allclose(tokens, expected, rtol=1e-3)


@pytest.mark.parametrize("case", _manifest("wanda"), ids=lambda c: c["file"])
def test_wanda_masks_match_reference(case: dict) -> None:
    data = _load(case)
    metric = wanda_metric(data["weight"], _scaler_row(data["inputs"], "samples"))
    assert torch.equal(unstructured_mask(metric, case["sparsity"]), data["expected.pruned_unstructured"])
    assert torch.equal(nm_mask(metric, 2, 4), data["expected.pruned_2_4"])
    assert torch.equal(nm_mask(metric, 4, 8), data["expected.pruned_4_8"])


def _hessian(data: dict[str, torch.Tensor], source: str) -> torch.Tensor:
    if source == "fixture":
        return data["hessian"]
    stats = HessianStats(data["inputs"].shape[-1], "cpu")
    for sample in data["inputs"]:
        stats.add(sample)
    return stats.hessian()


@pytest.mark.parametrize("source", ["fixture", "rebuilt"])
@pytest.mark.parametrize("case", _manifest("sparsegpt"), ids=lambda c: c["file"])
def test_sparsegpt_matches_reference(case: dict, source: str) -> None:
    data = _load(case)
    weight = data["weight"]
    hessian = _hessian(data, source)
    weight_before, hessian_before = weight.clone(), hessian.clone()
    pruned = sparsegpt_prune(
        weight, hessian, case["sparsity"], prune_n=case["prune_n"], prune_m=case["prune_m"],
        blocksize=case["blocksize"], percdamp=case["percdamp"], name=case["file"],
    )
    expected = data["expected.pruned_weight"]
    assert pruned.dtype == weight.dtype and pruned.shape == weight.shape
    assert torch.equal(pruned == 0, expected == 0)
    assert _rel_err(pruned, expected) < 1e-3
    assert torch.equal(weight, weight_before) and torch.equal(hessian, hessian_before)


@pytest.mark.parametrize("case", _manifest("sparsegpt"), ids=lambda c: c["file"])
def test_rebuilt_hessian_matches_fixture(case: dict) -> None:
    data = _load(case)
    assert _rel_err(_hessian(data, "rebuilt"), data["hessian"]) < 1e-5
