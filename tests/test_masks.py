"""Unit tests of tamp.pruning: masks, metrics, statistic accumulators, SparseGPT edge cases."""

from __future__ import annotations

import logging

import pytest
import torch

from tamp.pruning.magnitude import magnitude_metric, official_magnitude_sparsity
from tamp.pruning.masks import make_mask, nm_mask, parse_pattern, tensor_mask, unstructured_mask
from tamp.pruning.sparsegpt import HessianStats, SparseGPTError, sparsegpt_prune
from tamp.pruning.wanda import SquaredNormStats, wanda_metric

pytestmark = pytest.mark.fast  # the unit tier: make test-fast


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_unstructured_exact_count_per_row(sparsity: float) -> None:
    metric = torch.rand(7, 40, generator=_gen())
    mask = unstructured_mask(metric, sparsity)
    assert mask.dtype == torch.bool and mask.shape == metric.shape
    assert (mask.sum(dim=1) == int(40 * sparsity)).all()
    if 0 < sparsity < 1:
        # every pruned entry is below every kept entry of its row
        pruned_max = metric.masked_fill(~mask, -1).max(dim=1).values
        kept_min = metric.masked_fill(mask, 2).min(dim=1).values
        assert (pruned_max < kept_min).all()


def test_unstructured_truncates_like_original() -> None:
    mask = unstructured_mask(torch.rand(3, 10, generator=_gen()), 0.29)
    assert (mask.sum(dim=1) == int(10 * 0.29)).all()


def test_unstructured_stable_ties() -> None:
    metric = torch.zeros(2, 8)
    mask = unstructured_mask(metric, 0.5)
    assert mask[:, :4].all() and not mask[:, 4:].any()


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4)])
def test_nm_group_counts(n: int, m: int) -> None:
    metric = torch.rand(5, 32, generator=_gen(1))
    mask = nm_mask(metric, n, m)
    groups = mask.reshape(5, 32 // m, m)
    assert (groups.sum(dim=-1) == n).all()
    values = metric.reshape(5, 32 // m, m)
    pruned_max = values.masked_fill(~groups, -1).max(dim=-1).values
    kept_min = values.masked_fill(groups, 2).min(dim=-1).values
    assert (pruned_max < kept_min).all()


def test_nm_stable_ties() -> None:
    mask = nm_mask(torch.ones(2, 8), 2, 4)
    expected = torch.tensor([True, True, False, False] * 2).expand(2, 8)
    assert torch.equal(mask, expected)


def test_nm_indivisible_names_in_features() -> None:
    with pytest.raises(ValueError, match="in_features=10"):
        make_mask(torch.rand(2, 10), 0.5, "2:4")


def test_parse_pattern() -> None:
    assert parse_pattern("unstructured") is None
    assert parse_pattern("2:4") == (2, 4)
    assert parse_pattern(" 4:8 ") == (4, 8)
    for bad in ["4:4", "5:4", "0:4", "2-4", "abc", "2:", ""]:
        with pytest.raises(ValueError, match="valid|N < M") as info:
            parse_pattern(bad)
        assert repr(bad) in str(info.value) and "\n" not in str(info.value)


def test_make_mask_dispatch() -> None:
    metric = torch.rand(4, 16, generator=_gen(2))
    assert torch.equal(make_mask(metric, 0.25), unstructured_mask(metric, 0.25))
    assert torch.equal(make_mask(metric, 0.9, "2:4"), nm_mask(metric, 2, 4))


def test_magnitude_and_wanda_metrics() -> None:
    weight = torch.tensor([[-3.0, 1.0], [2.0, -0.5]], dtype=torch.float16)
    assert torch.equal(magnitude_metric(weight), torch.tensor([[3.0, 1.0], [2.0, 0.5]]))
    assert torch.equal(magnitude_metric(weight, compat_official=True), weight.float())
    assert official_magnitude_sparsity(0.3) == pytest.approx(0.7)
    metric = wanda_metric(weight, torch.tensor([4.0, 9.0]))
    assert metric.dtype == torch.float32
    assert torch.equal(metric, torch.tensor([[6.0, 3.0], [4.0, 1.5]]))


def _samples() -> list[torch.Tensor]:
    gen = _gen(3)
    return [torch.randn(t, 6, generator=gen).to(torch.bfloat16) for t in (5, 0, 3, 7)]


def _merged(cls: type, parts: list[list[torch.Tensor]]) -> object:
    accs = []
    for part in parts:
        acc = cls(6, "cpu")
        for x in part:
            acc.add(x)
        accs.append(acc)
    for others in accs[1:]:  # what all-reduce(sum) does
        for mine, theirs in zip(accs[0].tensors(), others.tensors(), strict=True):
            mine += theirs
    return accs[0]


def test_squared_norm_stats_split_equals_single() -> None:
    xs = _samples()
    single = _merged(SquaredNormStats, [xs])
    split = _merged(SquaredNormStats, [xs[:2], xs[2:]])
    assert single.n_samples == split.n_samples == 4  # the empty sample counts, as in the original
    assert single.n_tokens == split.n_tokens == 15
    for norm in ("samples", "tokens"):
        torch.testing.assert_close(split.scaler_row(norm), single.scaler_row(norm))
    total = sum((x.float() ** 2).sum(0) for x in xs)
    torch.testing.assert_close(single.scaler_row("samples"), total / 4)
    torch.testing.assert_close(single.scaler_row("tokens"), total / 15)


def test_hessian_stats_split_equals_single() -> None:
    xs = _samples()
    single = _merged(HessianStats, [xs])
    split = _merged(HessianStats, [xs[:1], xs[1:3], xs[3:]])
    assert single.n_samples == split.n_samples == 4
    torch.testing.assert_close(split.hessian(), single.hessian())
    total = sum(x.float().T @ x.float() for x in xs)
    torch.testing.assert_close(single.hessian(), 2 / 4 * total)


def test_empty_stats_read_as_zeros() -> None:
    assert torch.equal(SquaredNormStats(3).scaler_row(), torch.zeros(3))
    assert torch.equal(HessianStats(3).hessian(), torch.zeros(3, 3))


def _layer(seed: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = _gen(seed)
    weight = torch.randn(8, 16, generator=gen)
    x = torch.randn(64, 16, generator=gen)
    return weight, 2 / 64 * x.T @ x


def test_sparsegpt_zero_sparsity_is_identity() -> None:
    weight, hessian = _layer()
    weight = weight.to(torch.bfloat16)
    pruned = sparsegpt_prune(weight, hessian, 0.0)
    assert pruned.dtype == torch.bfloat16 and torch.equal(pruned, weight)
    assert pruned.data_ptr() != weight.data_ptr()


def test_sparsegpt_dead_column_and_inputs_untouched() -> None:
    weight, hessian = _layer()
    hessian[3, :] = 0
    hessian[:, 3] = 0
    w0, h0 = weight.clone(), hessian.clone()
    pruned = sparsegpt_prune(weight, hessian, 0.5, blocksize=8)
    assert (pruned[:, 3] == 0).all()
    assert torch.equal(weight, w0) and torch.equal(hessian, h0)
    nm = sparsegpt_prune(weight, hessian, 0.5, prune_n=2, prune_m=4)
    assert ((nm == 0).reshape(8, 4, 4).sum(-1) >= 2).all()


def test_sparsegpt_non_pd_retries(caplog: pytest.LogCaptureFixture) -> None:
    # eigenvalue -0.05 with mean(diag) ~ 1: damping 0.01 fails, 0.1 succeeds
    v = torch.ones(16) / 4
    hessian = torch.eye(16) - 1.05 * torch.outer(v, v)
    weight, _ = _layer()
    with caplog.at_level(logging.WARNING, logger="tamp.pruning.sparsegpt"):
        pruned = sparsegpt_prune(weight, hessian, 0.5, name="blk.0.q_proj")
    assert torch.isfinite(pruned).all()
    assert "blk.0.q_proj" in caplog.text and "retrying" in caplog.text


def test_sparsegpt_nan_hessian_raises_naming_layer() -> None:
    weight, _ = _layer()
    hessian = torch.full((16, 16), float("nan"))
    with pytest.raises(SparseGPTError, match="blk.3.mlp.down_proj") as info:
        sparsegpt_prune(weight, hessian, 0.5, name="blk.3.mlp.down_proj")
    assert "damping" in str(info.value) and "\n" not in str(info.value)


def test_sparsegpt_prunes_exactly_its_plan_when_scores_tie() -> None:
    """bf16 weights tie often; the block still prunes int(numel * p) + 1, never every tied entry."""
    weight = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 2.0, 2.0]] * 4)
    hessian = torch.eye(4)
    pruned = sparsegpt_prune(weight, hessian, 0.25, blocksize=4)
    assert int((pruned == 0).sum()) == int(weight.numel() * 0.25) + 1
    assert bool(((pruned == 0) <= (weight == 1.0)).all()), "only the lowest scores are pruned"


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_tensor_mask_prunes_the_smallest_over_the_whole_tensor(sparsity: float) -> None:
    metric = torch.rand(7, 40, generator=_gen(4)) * torch.linspace(0.1, 1.0, 7)[:, None]  # rows differ in scale
    mask = tensor_mask(metric, sparsity)
    assert int(mask.sum()) == int(metric.numel() * sparsity)
    if 0 < sparsity < 1:
        assert metric[mask].max() < metric[~mask].min()
        assert len(set(mask.sum(dim=1).tolist())) > 1  # one threshold, not a per-row count


def test_tensor_mask_stable_ties() -> None:
    mask = tensor_mask(torch.zeros(2, 4), 0.5)
    assert mask[0].all() and not mask[1].any()
