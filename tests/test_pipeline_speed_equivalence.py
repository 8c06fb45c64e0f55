"""The pipeline's fast paths give bit for bit what their straightforward forms give (issue 34).

Each fast path (selection instead of a sort for masks, SparseGPT's transposed column loop) is checked
against the plain form it replaced, written out here, on inputs chosen to hit ties, zeros of both signs,
infinities and NaN.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import fresh_tiny

from tamp.pruning import sparsegpt
from tamp.pruning.masks import lowest_mask, tensor_mask, unstructured_mask

pytestmark = pytest.mark.fast  # the unit tier: make test-fast


def _sorted_lowest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The straightforward form: the first k of a stable ascending sort of each row."""
    rows = values.reshape(-1, values.shape[-1])
    mask = torch.zeros(rows.shape, dtype=torch.bool)
    mask.scatter_(1, torch.sort(rows, dim=1, stable=True).indices[:, :k], True)
    return mask.view(values.shape)


def _awkward(rows: int, cols: int, kind: int, gen: torch.Generator) -> torch.Tensor:
    values = torch.rand(rows, cols, generator=gen)
    if kind == 1:  # a few distinct values: ties everywhere, also at the k-th place
        values = (values * 4).floor()
    elif kind == 2:  # zeros of both signs and infinities
        sign = torch.where(torch.rand(rows, cols, generator=gen) < 0.5, -1.0, 1.0)
        values = torch.where(values < 0.4, sign * 0.0, values)
        values[values > 0.9] = float("inf")
    elif kind == 3:
        values[values > 0.8] = float("nan")
    return values


@pytest.mark.parametrize("kind", [0, 1, 2, 3])
def test_lowest_mask_is_the_stable_sorts_first_k(kind: int) -> None:
    gen = torch.Generator().manual_seed(kind)
    for _ in range(12):
        rows, cols = torch.randint(1, 24, (2,), generator=gen).tolist()
        values = _awkward(rows, cols, kind, gen)
        for k in range(cols + 1):
            for v in (values, values.flatten(), values.to(torch.bfloat16)):
                assert torch.equal(lowest_mask(v, k), _sorted_lowest(v, k)), (kind, rows, cols, k)


def test_unstructured_and_tensor_masks_match_the_sorted_forms() -> None:
    gen = torch.Generator().manual_seed(7)
    metric = (torch.rand(64, 96, generator=gen) * 6).floor()  # tied metrics, as bf16 weights give
    for sparsity in (0.0, 0.3, 0.5, 0.77, 1.0):
        assert torch.equal(unstructured_mask(metric, sparsity), _sorted_lowest(metric, int(96 * sparsity)))
        flat = _sorted_lowest(metric.flatten(), int(metric.numel() * sparsity)).view(metric.shape)
        assert torch.equal(tensor_mask(metric, sparsity), flat)


def _plain_prune_block(w1, hinv1, sparsity, prune_n, prune_m):
    """SparseGPT's column loop as written in the original (the form _prune_block replaced)."""
    count = w1.shape[1]
    diag = torch.diagonal(hinv1)
    if prune_n == 0:
        score = (w1.square() / diag.square()[None, :]).flatten()
        k = min(int(score.numel() * sparsity), score.numel() - 1)
        lowest = torch.sort(score, stable=True).indices[: k + 1]
        mask = torch.zeros_like(score, dtype=torch.bool).scatter_(0, lowest, True).view_as(w1)
    else:
        mask = torch.zeros_like(w1, dtype=torch.bool)
    q1, err1 = torch.zeros_like(w1), torch.zeros_like(w1)
    for i in range(count):
        if prune_n != 0 and i % prune_m == 0:
            mask[:, i:i + prune_m] = sparsegpt._nm_group_mask(w1[:, i:i + prune_m], diag[i:i + prune_m], prune_n)
        w = w1[:, i]
        q = torch.where(mask[:, i], torch.zeros_like(w), w)
        q1[:, i] = q
        err = (w - q) / hinv1[i, i]
        w1[:, i:] -= err[:, None] * hinv1[i, i:][None, :]
        err1[:, i] = err
    return q1, err1


@pytest.mark.parametrize("pattern", [(0, 0), (2, 4), (4, 8)])
@pytest.mark.parametrize("rounded", [False, True])
def test_sparsegpt_block_loop_is_bitwise_the_originals(monkeypatch, pattern, rounded: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(40, 96, generator=gen)
    if rounded:  # bf16-like weights: tied scores inside a block
        weight = weight.to(torch.bfloat16).float()
    x = torch.randn(300, 96, generator=gen)
    hessian = 2 * x.T @ x / 300
    n, m = pattern
    fast = sparsegpt.sparsegpt_prune(weight, hessian, 0.5, n, m, blocksize=32)
    monkeypatch.setattr(sparsegpt, "_prune_block", _plain_prune_block)
    plain = sparsegpt.sparsegpt_prune(weight, hessian, 0.5, n, m, blocksize=32)
    assert torch.equal(fast.view(torch.int32), plain.view(torch.int32))  # every bit, signs of zero too


_PLANNED = {
    "tamp": {"pruner": "wanda", "allocation": {"name": "das"}, "tokens": {"name": "amia"}},
    "das_sparsegpt": {"pruner": "sparsegpt", "allocation": {"name": "das"}},
    "owl_wanda": {"pruner": "wanda", "allocation": {"name": "owl"}},
}


def _prune_counting(method: dict, offload: bool) -> tuple[dict, dict, int]:
    """(masks, weights, block-0 forwards) of a tiny LLaVA-NeXT pruned at 50% from two samples."""
    import tamp
    from tamp.pipeline import engine as engine_module

    bundle = fresh_tiny("llava_next")
    first_block = bundle.adapter.decoder_blocks()[0]
    first = bundle.example_sample(0)
    pixels = first.inputs["pixel_values"]  # a second sample: the same prompt, another image
    noise = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(1)).to(pixels.dtype)
    samples = [first, dataclasses.replace(first, inputs={**first.inputs, "pixel_values": pixels + noise})]
    calls = {"block0": 0}
    run_block = engine_module.run_block

    def counting(block, hidden, kwargs):
        calls["block0"] += block is first_block
        return run_block(block, hidden, kwargs)

    engine_module.run_block = counting
    try:
        config = {"method": method, "sparsity": {"target": 0.5}, "device": "cpu", "progress": False,
                  "keep_masks": True, "offload": offload}
        report = tamp.prune(bundle.model, samples, config, adapter=bundle.adapter)
    finally:
        engine_module.run_block = run_block
    weights = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    return report.masks, weights, calls["block0"]


@pytest.mark.integration(reason="prunes a tiny model three times")
@pytest.mark.parametrize("name", sorted(_PLANNED))
def test_block0_statistics_from_the_scoring_pass_change_nothing(monkeypatch, name: str) -> None:
    """The dense scoring pass's forward of block 0 also feeds the method's block-0 statistics: one forward
    of block 0 per sample less, and the same masks and weights as the separate statistics pass."""
    from tamp.methods.composed import ComposedMethod

    offload = name == "das_sparsegpt"  # the block visits of offloading take the same path
    shared_masks, shared_weights, shared_calls = _prune_counting(_PLANNED[name], offload)
    monkeypatch.setattr(ComposedMethod, "stats_need_no_plan", False)
    alone_masks, alone_weights, alone_calls = _prune_counting(_PLANNED[name], offload)
    assert shared_calls == alone_calls - 2  # two samples: block 0's statistics forward skipped
    assert shared_masks.keys() == alone_masks.keys()
    assert all(torch.equal(shared_masks[k], alone_masks[k]) for k in alone_masks)
    assert all(torch.equal(shared_weights[k], alone_weights[k]) for k in alone_weights)
