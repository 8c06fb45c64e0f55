"""Linears that read one input share one statistic, accumulated once, and SparseGPT factors it once:
the masks and pruned weights are bit for bit those of one statistic per linear.

The pipeline tests prune a tiny Llama (and LLaVA-NeXT for modality tokens) with sharing on and off (the
selector's `input_only` set False). The unit tests drive `ComposedMethod.observe` by hand: linears that
share an input for a sample and not for the next one, in-place writes, missing and repeated calls,
processes that do not share alike, and the factor kept by the SparseGPT pruner.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from tiny_models import fresh_tiny
from torch import nn

import tamp
from tamp.methods.composed import ComposedMethod
from tamp.pruning import sparsegpt
from tamp.pruning.sparsegpt import HessianStats, SparseGPTPruner, sparsegpt_prune
from tamp.pruning.wanda import SquaredNormStats, WandaPruner
from tamp.sparsity.registry import build_allocation
from tamp.tokens.all_tokens import AllTokens
from tamp.tokens.attention import AttentionSelector
from tamp.tokens.modality import ModalitySelector
from tamp.tokens.random_tokens import RandomSelector

pytestmark = pytest.mark.fast  # the pipeline tests below are marked integration

SELECTORS = {"all": AllTokens, "attention": AttentionSelector, "modality": ModalitySelector, "random": RandomSelector}


# ---------------------------------------------------------------------------------------------- pipeline
def _samples(family: str) -> list:
    """Two distinct samples of the tiny model `family` (the second: other token ids or another image)."""
    first = fresh_tiny(family).example_sample(0)
    if "pixel_values" in first.inputs:
        pixels = first.inputs["pixel_values"]
        noise = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(1)).to(pixels.dtype)
        return [first, dataclasses.replace(first, inputs={**first.inputs, "pixel_values": pixels + noise})]
    ids = first.inputs["input_ids"]
    return [first, dataclasses.replace(first, inputs={**first.inputs, "input_ids": torch.roll(ids, 3, dims=-1)})]


def _prune(monkeypatch: pytest.MonkeyPatch, family: str, method: dict, pattern: str, share: bool):
    """(masks, state dict, statistic adds, Hessian factorisations, blocks) of one prune at 50%."""
    counts = {"adds": 0, "factors": 0}
    with monkeypatch.context() as patch:
        if not share:
            patch.setattr(SELECTORS[method.get("tokens", {}).get("name", "all")], "input_only", False)
        stats = HessianStats if method["pruner"] == "sparsegpt" else SquaredNormStats  # OWL's scores: Wanda's
        patch.setattr(stats, "add", _counting(stats.add, counts, "adds"))
        patch.setattr(sparsegpt, "inverse_factor", _counting(sparsegpt.inverse_factor, counts, "factors"))
        bundle = fresh_tiny(family)
        config = {"method": method, "sparsity": {"target": 0.5, "pattern": pattern}, "device": "cpu",
                  "progress": False, "keep_masks": True}
        report = tamp.prune(bundle.model, _samples(family), config, adapter=bundle.adapter)
    weights = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    return report.masks, weights, counts, len(bundle.adapter.decoder_blocks())


def _counting(function: Callable, counts: dict[str, int], key: str) -> Callable:
    def counted(*args, **kwargs):
        counts[key] += 1
        return function(*args, **kwargs)

    return counted


CASES = {
    "sparsegpt": ("llama", {"pruner": "sparsegpt"}, "unstructured"),
    "sparsegpt_on_failure": ("llama", {"pruner": "sparsegpt", "damping": "on_failure"}, "unstructured"),
    "sparsegpt_2:4": ("llama", {"pruner": "sparsegpt"}, "2:4"),
    "sparsegpt_mixed_2:4": ("llama", {"pruner": "sparsegpt", "allocation": {"name": "owl"}}, "2:4"),
    "sparsegpt_random": ("llama", {"pruner": "sparsegpt", "tokens": {"name": "random", "num_random": 9}},
                         "unstructured"),
    "wanda": ("llama", {"pruner": "wanda"}, "unstructured"),
    "wanda_random": ("llama", {"pruner": "wanda", "tokens": {"name": "random", "num_random": 9}}, "unstructured"),
    "sparsegpt_modality": ("llava_next", {"pruner": "sparsegpt", "tokens": {"name": "modality",
                                                                               "multimodal_blocks": 1}},
                           "unstructured"),
    "sparsegpt_attention": ("llama", {"pruner": "sparsegpt", "tokens": {"name": "attention"}}, "unstructured"),
    "wanda_modality": ("llava_next", {"pruner": "wanda", "tokens": {"name": "modality", "modalities": ["text"]}},
                       "unstructured"),
}


@pytest.mark.integration(reason="prunes a tiny model twice")
@pytest.mark.parametrize("case", sorted(CASES))
def test_shared_statistics_give_the_unshared_masks_and_weights(monkeypatch, case: str) -> None:
    family, method, pattern = CASES[case]
    shared_masks, shared_weights, shared, blocks = _prune(monkeypatch, family, method, pattern, share=True)
    alone_masks, alone_weights, alone, _ = _prune(monkeypatch, family, method, pattern, share=False)
    assert shared_masks.keys() == alone_masks.keys()
    assert all(torch.equal(shared_masks[k], alone_masks[k]) for k in alone_masks)
    assert all(torch.equal(shared_weights[k], alone_weights[k]) for k in alone_weights)
    # q, k, v read one input, gate and up another: 4 statistics and Hessians per block, not 7
    assert alone["adds"] == 7 * 2 * blocks and shared["adds"] == 4 * 2 * blocks
    if method["pruner"] == "sparsegpt":
        assert alone["factors"] == 7 * blocks and shared["factors"] == 4 * blocks


@pytest.mark.integration(reason="prunes a tiny model")
def test_a_selector_reading_the_output_shares_nothing(monkeypatch) -> None:
    """AMIA selects per linear from its own output: every linear keeps its own statistic."""
    _, _, counts, blocks = _prune(monkeypatch, "llama", {"pruner": "sparsegpt", "tokens": {"name": "amia"}},
                                  "unstructured", share=True)
    assert counts["adds"] == 7 * 2 * blocks and counts["factors"] == 7 * blocks


# ---------------------------------------------------------------------------------------------- by hand
NAMES = ("q", "k", "v", "o")
IN = 16


class _Engine:
    """A fake engine: records every all-reduce; `scale` multiplies the tensors (2: two equal processes);
    `reducer` stands in for a real collective."""

    def __init__(self, scale: int = 1, reducer: Callable[[list[torch.Tensor]], None] | None = None) -> None:
        self.calls: list[list[torch.Tensor]] = []
        self.scale, self.reducer = scale, reducer

    def reduce_(self, tensors: list[torch.Tensor]) -> None:
        self.calls.append(tensors)
        if self.reducer is not None:
            self.reducer(tensors)
        for tensor in tensors:
            tensor.mul_(self.scale)


class _Recording(SparseGPTPruner):
    """SparseGPT that keeps a copy of each linear's statistic as `prune` receives it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, list[torch.Tensor]] = {}

    def prune(self, linear: nn.Linear, stats: HessianStats, sparsity: float, nm, name: str) -> torch.Tensor:
        self.seen[name] = [t.clone() for t in stats.tensors()]
        return super().prune(linear, stats, sparsity, nm, name)


def _linears() -> dict[str, nn.Linear]:
    torch.manual_seed(0)
    return {name: nn.Linear(IN, 8, bias=False) for name in NAMES}


def _ctx(index: int) -> Any:
    return SimpleNamespace(index=index, block_index=0, cache={})


#: one call: (linear, input); one sample: its calls in order
Calls = list[list[tuple[str, torch.Tensor]]]


def _run(calls: Calls | Callable[[], Calls], share: bool, engine: _Engine | None = None,
         before_end: Callable[[ComposedMethod], None] | None = None) -> tuple[dict, dict, _Engine]:
    """Statistics (as prune saw them) and pruned weights after observing `calls` in block 0."""
    method = ComposedMethod(_Recording(), build_allocation({"name": "uniform"}), AllTokens(), 0.5, "unstructured")
    method.tokens.input_only = share
    linears, engine = _linears(), engine or _Engine()
    method.begin_block(0, linears)
    for index, sample in enumerate(calls() if callable(calls) else calls):
        ctx = _ctx(index)
        for name, x in sample:
            x = _reached(x)
            method.observe(name, x, linears[name](x), ctx)
    if before_end is not None:
        before_end(method)
    method.end_block(0, linears, {name: 0.5 for name in NAMES}, engine)
    return method.pruner.seen, {n: lin.weight.detach().clone() for n, lin in linears.items()}, engine


def _rand(seed: int, tokens: int = 12) -> torch.Tensor:
    return torch.randn(tokens, IN, generator=torch.Generator().manual_seed(seed))


def _assert_same(calls: Callable[[], Calls]) -> None:
    """Shared and unshared accumulation of the same calls: equal statistics and weights, every bit."""
    shared_stats, shared_weights, _ = _run(calls, share=True)
    alone_stats, alone_weights, _ = _run(calls, share=False)
    for name in NAMES:
        assert all(torch.equal(a, b) for a, b in zip(shared_stats[name], alone_stats[name], strict=True)), name
        assert torch.equal(shared_weights[name], alone_weights[name]), name


def _qkv(x: torch.Tensor, o: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    return [("q", x), ("k", x), ("v", x), ("o", o)]


def test_linears_reading_one_input_share_one_statistic() -> None:
    def shared(method: ComposedMethod) -> None:
        assert method.stats["q"] is method.stats["k"] is method.stats["v"]
        assert method.stats["o"] is not method.stats["q"]

    calls = [_qkv(_rand(2 * i), _rand(2 * i + 1)) for i in range(3)]
    _run(calls, share=True, before_end=shared)
    _assert_same(lambda: [_qkv(_rand(2 * i), _rand(2 * i + 1)) for i in range(3)])


def test_reshaped_views_of_one_tensor_count_as_one_input() -> None:
    """The hooks hand each linear its own `reshape` of the input: same address, shape and strides."""
    def calls() -> Calls:
        samples = []
        for i in range(2):
            hidden = _rand(i).view(1, 12, IN)
            samples.append([(name, hidden.reshape(-1, IN)) for name in ("q", "k", "v")] + [("o", _rand(9 + i))])
        return samples

    def shared(method: ComposedMethod) -> None:
        assert method.stats["q"] is method.stats["k"]

    _run(calls, share=True, before_end=shared)
    _assert_same(calls)


@pytest.mark.parametrize("case", ["other_input", "missing", "twice", "leader_twice", "follower_first",
                                  "written_in_place", "written_after_the_last", "leader_missing"])
def test_a_follower_that_stops_sharing_keeps_exactly_its_own_statistic(case: str) -> None:
    """k shares q's input for sample 0 and not for sample 1 (or repeats, or comes first): the statistics
    are those of one statistic per linear, every bit."""
    def calls() -> Calls:
        x0, x1, x2 = _rand(0), _rand(1), _rand(2)
        samples = [_qkv(x0, _rand(10)), []]
        if case == "other_input":
            samples[1] = [("q", x1), ("k", x2), ("v", x1)]
        elif case == "missing":
            samples[1] = [("q", x1), ("v", x1)]
        elif case == "twice":
            samples[1] = [("q", x1), ("k", x1), ("v", x1), ("k", x1)]
        elif case == "leader_twice":
            samples[1] = [("q", x1), ("k", x1), ("q", x1), ("v", x1)]
        elif case == "follower_first":
            samples[1] = [("k", x1), ("q", x1), ("v", x1)]
        elif case == "leader_missing":
            samples[1] = [("k", x1), ("v", x1)]
        elif case == "written_in_place":  # q's input changes before k reads it: q keeps what it saw
            samples[1] = [("q", x1), ("v", x1), _then(lambda: x1.mul_(3), ("k", x1))]
        else:  # k never comes; the leader's input is written after everyone read it
            samples[1] = [("q", x1), ("v", x1), _then(lambda: x1.add_(1), ("o", x2))]
        samples.append(_qkv(_rand(3), _rand(11)))  # and a third sample, one input for q, k and v again
        return samples

    _assert_same(calls)


def _then(action: Callable[[], Any], call: tuple[str, torch.Tensor]) -> tuple[str, torch.Tensor]:
    """A call that runs `action` first (an in-place write between two linears' calls)."""
    return call[0], _Deferred(action, call[1])  # type: ignore[return-value]


class _Deferred:
    def __init__(self, action: Callable[[], Any], x: torch.Tensor) -> None:
        self.action, self.x = action, x


def _reached(x: Any) -> torch.Tensor:
    """The input of a call, after the in-place write `_then` put before it."""
    if isinstance(x, _Deferred):
        x.action()
        return x.x
    return x


def test_a_linear_first_seen_later_does_not_join_an_older_statistic() -> None:
    """v first appears in sample 1 with q's input: q's statistic holds sample 0 too, so v cannot share it."""
    def calls() -> Calls:
        x0, x1 = _rand(0), _rand(1)
        return [[("q", x0), ("k", x0), ("o", _rand(5))], [("q", x1), ("k", x1), ("v", x1), ("o", _rand(6))]]

    _assert_same(calls)


def test_a_shared_statistic_is_reduced_once() -> None:
    """Two equal processes (the reducer doubles): k's Hessian is twice the local one, not 2^3 times."""
    calls = [_qkv(_rand(2 * i), _rand(2 * i + 1)) for i in range(2)]
    local, _, _ = _run(calls, share=False)
    doubled, _, engine = _run(calls, share=True, engine=_Engine(scale=2))
    for name in NAMES:
        assert torch.equal(doubled[name][0], 2 * local[name][0]), name
        assert int(doubled[name][1]) == 2 * int(local[name][1]) == 4, name
    layout, *statistics = engine.calls
    assert len(statistics) == 2  # q's (with k and v) and o's
    assert layout[0].dtype == torch.int64  # the layouts compared first


class _AllReduce:
    """All-reduce(sum) between two processes played by two threads: each call waits for the other
    process's call, checks that the tensors line up and leaves both with the sum."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(2, timeout=20)  # a call the other process never makes: broken
        self.sent: list[list[torch.Tensor]] = [[], []]
        self.rank = threading.local()

    def __call__(self, tensors: list[torch.Tensor]) -> None:
        rank = self.rank.value
        self.sent[rank] = [t.clone() for t in tensors]
        self.barrier.wait()
        first, second = self.sent
        lined_up = len(first) == len(second) and all(
            a.shape == b.shape and a.dtype == b.dtype for a, b in zip(first, second, strict=True))
        sums = [a + b for a, b in zip(first, second, strict=True)] if lined_up else None
        self.barrier.wait()
        if sums is None:
            self.barrier.abort()
            raise AssertionError("the processes' collectives do not line up")
        for tensor, total in zip(tensors, sums, strict=True):
            tensor.copy_(total)


@pytest.mark.parametrize("first_shares", [True, False])
def test_processes_that_share_differently_reduce_the_same_tensors(first_shares: bool) -> None:
    """One process's q, k and v read one input, the other's do not all (or it has no samples): both
    all-reduce the same tensors in the same order, and end with the sums of unshared statistics."""
    x = _rand(2)
    shared = [_qkv(_rand(0), _rand(1))]
    apart = [[("q", x), ("k", _rand(3)), ("v", x), ("o", _rand(4))]]  # only q and v share
    work = [shared, apart] if first_shares else [apart, []]
    reducer, results, errors = _AllReduce(), [None, None], []

    def process(rank: int) -> None:
        reducer.rank.value = rank
        try:
            results[rank] = _run(work[rank], share=True, engine=_Engine(reducer=reducer))[0]
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)
            reducer.barrier.abort()

    threads = [threading.Thread(target=process, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    expected = {name: HessianStats(IN) for name in NAMES}
    for sample in work[0] + work[1]:
        for name, x in sample:
            expected[name].add(x)
    for seen in results:
        for name in NAMES:
            assert torch.equal(seen[name][0], expected[name].sum), name
            assert torch.equal(seen[name][1], expected[name].counts), name


# ---------------------------------------------------------------------------------------------- factor
def test_sparsegpt_factors_a_shared_hessian_once_per_block(monkeypatch) -> None:
    counts = {"factors": 0}
    monkeypatch.setattr(sparsegpt, "inverse_factor", _counting(sparsegpt.inverse_factor, counts, "factors"))
    pruner, linears, weights = SparseGPTPruner(blocksize=4), _linears(), _linears()
    stats = HessianStats(IN)
    stats.add(_rand(0, tokens=40))
    nm = {"q": None, "k": (2, 4), "v": (1, 4)}  # unstructured, N:M and another N (mixed) from one factor
    expected = {name: sparsegpt_prune(weights[name].weight.data, stats.hessian(), 0.5, *(nm[name] or (0, 0)),
                                      blocksize=4) for name in nm}
    counts["factors"] = 0  # the expected weights' factorisations left out
    for name in nm:
        pruner.prune(linears[name], stats, 0.5, nm[name], name)
    assert counts["factors"] == 1
    assert all(torch.equal(linears[name].weight.data, expected[name]) for name in nm)
    stats.add(_rand(1, tokens=3))  # the statistic changed (more samples, an all-reduce): a new factor
    pruner.prune(linears["o"], stats, 0.5, None, "o")
    assert counts["factors"] == 2
    assert torch.equal(linears["o"].weight.data,
                       sparsegpt_prune(weights["o"].weight.data, stats.hessian(), 0.5, blocksize=4))
    counts["factors"] = 2
    pruner.block_done()  # the block is over: nothing kept for the next one
    assert pruner._kept is None
    pruner.prune(nn.Linear(IN, 8, bias=False), stats, 0.5, None, "o")
    assert counts["factors"] == 3


def test_another_statistic_gets_its_own_factor(monkeypatch) -> None:
    counts = {"factors": 0}
    monkeypatch.setattr(sparsegpt, "inverse_factor", _counting(sparsegpt.inverse_factor, counts, "factors"))
    pruner, linears, weights = SparseGPTPruner(blocksize=4), _linears(), _linears()
    first, second = HessianStats(IN), HessianStats(IN)
    first.add(_rand(0, tokens=40))
    second.add(_rand(1, tokens=40))
    pruner.prune(linears["q"], first, 0.5, None, "q")
    pruner.prune(linears["k"], second, 0.5, None, "k")
    assert counts["factors"] == 2
    monkeypatch.undo()
    expected = sparsegpt_prune(weights["k"].weight.data, second.hessian(), 0.5, blocksize=4)
    assert torch.equal(linears["k"].weight.data, expected)


def test_wanda_statistics_are_shared_too() -> None:
    """The sharing is the method's, not SparseGPT's: Wanda's squared norms are accumulated once as well."""
    method = ComposedMethod(WandaPruner(), build_allocation({"name": "uniform"}), AllTokens(), 0.5, "unstructured")
    linears, ctx, x = _linears(), _ctx(0), _rand(0)
    method.begin_block(0, linears)
    for name in ("q", "k"):
        method.observe(name, x, linears[name](x), ctx)
    assert method.stats["q"] is method.stats["k"]
    assert method.stats["k"].n_tokens == 12


def test_a_pruner_whose_statistic_may_depend_on_the_linear_shares_nothing() -> None:
    """Only a pruner declaring `input_only_stats` gets shared statistics (a new pruner's may read the linear)."""
    class OwnStats(WandaPruner):
        input_only_stats = False

    method = ComposedMethod(OwnStats(), build_allocation({"name": "uniform"}), AllTokens(), 0.5, "unstructured")
    linears, ctx, x = _linears(), _ctx(0), _rand(0)
    method.begin_block(0, linears)
    for name in ("q", "k"):
        method.observe(name, x, linears[name](x), ctx)
    assert method.stats["q"] is not method.stats["k"]
    assert torch.equal(method.stats["q"].sum, method.stats["k"].sum)
