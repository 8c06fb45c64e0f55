"""The magnitude baseline as the originals define it: one |W| threshold per weight tensor by default."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tamp.methods.components import resolve_method
from tamp.pruning.magnitude import MagnitudePruner
from tamp.pruning.masks import unstructured_mask
from tamp.pruning.registry import build_pruner

pytestmark = pytest.mark.fast  # the unit tier: make test-fast


def _linear(seed: int = 0) -> nn.Linear:
    linear = nn.Linear(24, 6, bias=False)
    gen = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.1, 2.0, 6)[:, None]  # rows of different scale: tensor and row groups differ
    linear.weight.data = torch.randn(6, 24, generator=gen) * scale
    return linear


def _prune(method: dict, sparsity: float, linear: nn.Linear) -> tuple[torch.Tensor, int]:
    pruner = build_pruner(resolve_method(method))
    planned = pruner.planned_pruned(linear, sparsity, None)
    return pruner.prune(linear, None, sparsity, None, "w"), planned


def test_default_prunes_the_smallest_magnitudes_of_the_whole_tensor() -> None:
    linear = _linear()
    weight = linear.weight.detach().clone()
    mask, planned = _prune({"pruner": "magnitude"}, 0.5, linear)
    assert planned == int(weight.numel() * 0.5) == int(mask.sum())
    assert weight.abs()[mask].max() < weight.abs()[~mask].min()
    assert mask[0].sum() > mask[-1].sum()  # the small-scale row loses more than the large one
    assert torch.equal(linear.weight == 0, mask)


def test_per_tensor_plan_truncates_over_the_whole_tensor() -> None:
    linear = _linear()
    mask, planned = _prune({"pruner": "magnitude"}, 0.3, linear)
    assert planned == int(144 * 0.3) == int(mask.sum()) == 43  # per row it would be 6 * int(24 * 0.3) = 42


def test_row_option_is_the_per_row_mask() -> None:
    linear = _linear()
    weight = linear.weight.detach().clone()
    mask, planned = _prune({"pruner": "magnitude", "magnitude_group": "row"}, 0.5, linear)
    assert torch.equal(mask, unstructured_mask(weight.abs(), 0.5))
    assert planned == 6 * 12 == int(mask.sum())


def test_official_magnitude_ranks_signed_weights_per_tensor_and_prunes_one_minus_p() -> None:
    linear = _linear()
    weight = linear.weight.detach().clone()
    mask, planned = _prune({"pruner": "magnitude", "compat_magnitude": True}, 0.7, linear)
    assert planned == int(weight.numel() * (1 - 0.7)) == int(mask.sum())
    assert weight[mask].max() < weight[~mask].min()  # the most negative weights, over the whole tensor


def test_magnitude_group_is_checked() -> None:
    with pytest.raises(ValueError, match=r"method.magnitude_group='column'.*valid: tensor, row"):
        resolve_method({"pruner": "magnitude", "magnitude_group": "column"})
    with pytest.raises(ValueError, match=r"method.magnitude_group='column'.*valid: tensor, row"):  # the same check
        MagnitudePruner(group="column")
