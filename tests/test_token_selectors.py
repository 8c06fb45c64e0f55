"""Token selectors (amia, attention, random, modality) through `tamp.prune` on tiny models."""

from __future__ import annotations

import re

import pytest
import torch
from omegaconf import OmegaConf
from tiny_models import fresh_tiny

import tamp
from tamp.data.sample import TEXT
from tamp.methods.composed import ComposedMethod
from tamp.models.tiny.llava import text_example
from tamp.tokens.attention import above_mean
from tamp.tokens.random_tokens import draw_seed, random_tokens
from tamp.tokens.registry import build_selector


@pytest.fixture(scope="module")
def llava_next_samples():
    """An image sample (text + image tokens) and a text-only one; they do not depend on the weights."""
    bundle = fresh_tiny("llava_next")
    text = text_example()
    return [bundle.example_sample(0), bundle.adapter.encode(text.messages)]


def _prune(samples, tokens: dict, pruner: str = "wanda", family: str = "llava_next", seed: int = 42):
    bundle = fresh_tiny(family)  # fresh weights every run: pruning is in place
    config = {
        "method": {"pruner": pruner, "tokens": tokens},
        "sparsity": {"target": 0.5},
        "device": "cpu",
        "progress": False,
        "keep_masks": True,
        "seed": seed,
    }
    return tamp.prune(bundle.model, samples, config, adapter=bundle.adapter)


def _assert_planned(report) -> None:
    for linear in report.linears:
        assert linear.pruned == linear.planned_pruned, linear.name
    assert report.achieved == report.planned


def _same_masks(a, b) -> bool:
    return a.masks.keys() == b.masks.keys() and all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks)


@pytest.fixture(scope="module")
def wanda_report(llava_next_samples):
    return _prune(llava_next_samples, {"name": "all"})


@pytest.mark.parametrize(
    "tokens",
    [
        {"name": "amia"},
        {"name": "amia", "variant": "reference"},
        {"name": "attention"},
        {"name": "random", "num_random": 20},
        {"name": "modality", "modalities": ["text"]},
        {"name": "modality", "multimodal_blocks": 1},
    ],
    ids=["amia", "amia_reference", "attention", "random", "modality_l", "modality_vl1_l"],
)
def test_selector_hits_plan_and_changes_statistics(llava_next_samples, wanda_report, tokens: dict) -> None:
    report = _prune(llava_next_samples, tokens)
    assert report.tokens == tokens["name"]
    _assert_planned(report)
    assert not _same_masks(report, wanda_report), "the selection left every mask as all-token Wanda's"


def test_modality_with_every_modality_is_wanda(llava_next_samples, wanda_report) -> None:
    report = _prune(llava_next_samples, {"name": "modality"})
    _assert_planned(report)
    assert _same_masks(report, wanda_report)


def test_random_is_reproducible_and_seeded(llava_next_samples) -> None:
    first = _prune(llava_next_samples, {"name": "random", "num_random": 20})
    again = _prune(llava_next_samples, {"name": "random", "num_random": 20})
    other = _prune(llava_next_samples, {"name": "random", "num_random": 20, "seed": 1})
    assert _same_masks(first, again)
    assert not _same_masks(first, other)


def test_random_draw_follows_the_run_seed(llava_next_samples) -> None:
    """A seed sweep (the run's `seed`) redraws the random tokens; an explicit tokens.seed pins them."""
    tokens = {"name": "random", "num_random": 20}
    seed_1 = _prune(llava_next_samples, tokens, seed=1)
    assert _same_masks(seed_1, _prune(llava_next_samples, tokens, seed=1))
    assert not _same_masks(seed_1, _prune(llava_next_samples, tokens, seed=2))
    pinned = {**tokens, "seed": 7}
    assert _same_masks(_prune(llava_next_samples, pinned, seed=1), _prune(llava_next_samples, pinned, seed=2))


def test_random_draw_is_deterministic_and_bounded() -> None:
    seed = draw_seed(0, 3, 1)
    assert seed == draw_seed(0, 3, 1) and seed != draw_seed(0, 1, 3) and 0 <= seed < 2**63
    index = random_tokens(50, 10, seed)
    assert index is not None and torch.equal(index, random_tokens(50, 10, seed))
    assert index.numel() == 10 and index.unique().numel() == 10 and int(index.max()) < 50
    assert random_tokens(10, 10, seed) is None  # T <= num_random: every token


def test_attention_above_mean() -> None:
    assert above_mean(torch.tensor([0.1, 0.5, 0.2, 0.2])).tolist() == [1]
    assert above_mean(torch.full((4,), 0.25)).tolist() == [0, 1, 2, 3]  # uniform: nobody stands out


class _StatsSpy:
    """Wraps ComposedMethod to record, per linear, the inputs of every sample and the final statistics."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.stats: dict[str, tuple[torch.Tensor, int]] = {}
        observe, end_block = ComposedMethod.observe, ComposedMethod.end_block
        spy = self

        def spy_observe(method, name, x, z, ctx):
            spy.inputs.setdefault(name, []).append((x.clone(), ctx.modality_ids.clone()))
            return observe(method, name, x, z, ctx)

        def spy_end_block(method, index, linears, plan, engine):
            for name, stats in method.stats.items():
                spy.stats[name] = (stats.sum.clone(), stats.n_tokens)
            return end_block(method, index, linears, plan, engine)

        monkeypatch.setattr(ComposedMethod, "observe", spy_observe)
        monkeypatch.setattr(ComposedMethod, "end_block", spy_end_block)


def _block_of(name: str) -> int:
    return int(name.split(".layers.")[1].split(".")[0])


@pytest.mark.parametrize("multimodal_blocks", [None, 1])
def test_modality_l_counts_text_tokens_only(llava_next_samples, monkeypatch, multimodal_blocks) -> None:
    spy = _StatsSpy(monkeypatch)
    tokens = {"name": "modality", "multimodal_blocks": multimodal_blocks}
    if multimodal_blocks is None:
        tokens["modalities"] = ["text"]
    _prune(llava_next_samples, tokens)
    assert any(bool((s.modality_ids != TEXT).any()) for s in llava_next_samples)
    assert spy.stats
    for name, (sq_sum, n_tokens) in spy.stats.items():
        text_only = multimodal_blocks is None or _block_of(name) >= multimodal_blocks
        expected = torch.zeros_like(sq_sum)
        count = 0
        for x, ids in spy.inputs[name]:
            kept = x[ids == TEXT] if text_only else x
            expected += kept.float().square().sum(0)
            count += kept.shape[0]
        assert n_tokens == count, name
        torch.testing.assert_close(sq_sum, expected)


def test_modality_empty_selection_does_not_crash(llava_next_samples) -> None:
    """`modalities: [image]`: the text-only sample selects nothing in every block."""
    report = _prune(llava_next_samples, {"name": "modality", "modalities": ["image"]})
    _assert_planned(report)


def test_amia_selects_a_subset_on_a_text_only_decoder(monkeypatch) -> None:
    bundle = fresh_tiny("llama")
    samples = [bundle.example_sample(0)]
    spy = _StatsSpy(monkeypatch)
    report = _prune(samples, {"name": "amia"}, family="llama")
    _assert_planned(report)
    counts = [n for _, n in spy.stats.values()]
    assert all(1 <= n <= samples[0].num_tokens for n in counts)
    assert min(counts) < samples[0].num_tokens


def test_amia_with_sparsegpt(llava_next_samples) -> None:
    report = _prune(llava_next_samples, {"name": "amia"}, pruner="sparsegpt")
    _assert_planned(report)
    dense = _prune(llava_next_samples, {"name": "all"}, pruner="sparsegpt")
    assert not _same_masks(report, dense)


def test_tamp_sparsegpt_preset(llava_next_samples, compose_cfg) -> None:
    """conf/method/tamp_sparsegpt.yaml (SparseGPT + DAS + AMIA) as Hydra composes it from its preset files."""
    method = OmegaConf.to_container(compose_cfg(["method=tamp_sparsegpt"]).method)
    assert method["pruner"] == "sparsegpt" and method["tokens"]["name"] == "amia"
    bundle = fresh_tiny("llava_next")
    config = {"method": method, "sparsity": {"target": 0.5}, "device": "cpu", "progress": False}
    report = tamp.prune(bundle.model, llava_next_samples, config, adapter=bundle.adapter)
    _assert_planned(report)
    assert abs(report.planned - 0.5) < 0.01


@pytest.mark.parametrize(
    ("tokens", "key"),
    [
        ({"name": "amia", "variant": "x"}, "method.tokens.variant='x'"),
        ({"name": "amia", "knn": 0}, "method.tokens.knn=0"),
        ({"name": "random", "num_random": 0}, "method.tokens.num_random=0"),
        ({"name": "modality", "modalities": ["text", "smell"]}, "method.tokens.modalities"),
        ({"name": "modality", "modalities": []}, "method.tokens.modalities"),
        ({"name": "modality", "multimodal_blocks": -1}, "method.tokens.multimodal_blocks=-1"),
        ({"name": "nope"}, "method.tokens.name='nope'"),
    ],
)
def test_invalid_token_config_names_the_key(tokens: dict, key: str) -> None:
    with pytest.raises(ValueError, match=re.escape(key)) as err:
        build_selector(tokens)
    assert "\n" not in str(err.value)
