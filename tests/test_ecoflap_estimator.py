"""ECoFLaP's zeroth-order estimator on a tiny LLaVA-NeXT: the original per-tensor scores and their
attention / MLP group sums against brute-force finite differences of the whole model, the joint option
against the numbers it gave before it became an option, seeds, and the bf16 path's ranking.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from scipy.stats import spearmanr
from tiny_models import fresh_tiny

from tamp.models.tiny import TinyBundle
from tamp.pipeline.engine import LayerwiseEngine
from tamp.sparsity.ecoflap import EcoFlapAllocation, _seed, sample_key
from tamp.sparsity.registry import allocation_settings, build_allocation

FAMILY = "llava_next"
TARGET = 0.5


@functools.cache
def _pristine() -> TinyBundle:
    return fresh_tiny(FAMILY)


def _model(dtype: torch.dtype = torch.float32):
    """(model, adapter, samples): a fresh copy of the tiny model in `dtype` and its examples."""
    base = _pristine()
    model = copy.deepcopy(base.model).to(dtype)
    adapter = type(base.adapter)(model, base.processor)
    samples = [base.example_sample(i) for i in range(len(base.examples()))]
    return model, adapter, samples


def _scored(settings: dict, dtype: torch.dtype = torch.float32, seed: int = 42):
    """(allocation after plan(), engine, model) for ecoflap `settings` on a fresh tiny model."""
    model, adapter, samples = _model(dtype)
    torch.manual_seed(seed)
    allocation = build_allocation({"name": "ecoflap", **settings})
    engine = LayerwiseEngine(model, adapter, samples, progress=False)
    allocation.plan(engine, TARGET)
    return allocation, engine, model


def _full_loss(model, sample) -> float:
    with torch.no_grad():
        return model(**sample.inputs, labels=sample.labels, use_cache=False).loss.item()


def test_default_is_per_tensor_attention_and_mlp_groups_summed() -> None:
    """Each tensor's score is |L(w_t + eps z_t) - L(w_t - eps z_t)| / (2 eps) of the whole model with
    only that tensor perturbed; a group's score is the sum of its tensors' scores."""
    allocation, engine, model = _scored({})
    cfg = allocation_settings({"name": "ecoflap"})
    assert (cfg.estimator, cfg.granularity, cfg.precision) == ("per_tensor", "module", "float32")
    sample = engine.samples[0]
    names = [name for linears in engine.linears for name in linears]
    expected = {}
    for index, (name, weight) in enumerate((n, lin.weight) for ls in engine.linears for n, lin in ls.items()):
        gen = torch.Generator().manual_seed(_seed(42, index, sample_key(sample)))
        z = torch.randn(weight.shape, generator=gen)
        original = weight.data.clone()
        losses = []
        for sign in (1.0, -1.0):
            weight.data.copy_(original + sign * cfg.eps * z)
            losses.append(_full_loss(model, sample))
        weight.data.copy_(original)
        expected[name] = abs(losses[0] - losses[1]) / (2 * cfg.eps)
    assert list(allocation.tensor_scores) == names
    # a float32 loss near 2 moves in steps of 2.4e-7: a step of L+ - L- is 1.2e-4 of score (abs: ~8 steps)
    for name in names:
        assert allocation.tensor_scores[name] == pytest.approx(expected[name], rel=1e-2, abs=1e-3), name
    for group, score in allocation.scores.items():
        members = [n for n in names if n.startswith(group + ".")]
        assert len(members) in (3, 4)  # q k v o | gate up down
        assert score == pytest.approx(sum(expected[n] for n in members), rel=1e-2, abs=4e-3), group


def test_module_groups_are_a_blocks_attention_and_mlp() -> None:
    allocation, engine, _ = _scored({})
    path = engine.adapter.blocks_path
    assert path.endswith("layers")
    blocks = range(len(engine.blocks))
    assert list(allocation.scores) == [f"{path}.{i}.{child}" for i in blocks for child in ("self_attn", "mlp")]
    groups = allocation.groups(engine)
    assert [sorted(n.rsplit(".", 1)[1] for n in g.linears) for g in groups[:2]] == [
        ["k_proj", "o_proj", "q_proj", "v_proj"],
        ["down_proj", "gate_proj", "up_proj"],
    ]
    assert set(allocation.group_sparsity) == set(allocation.scores)
    assert max(allocation.group_sparsity.values()) <= TARGET + 0.1 + 1e-9


def test_joint_block_option_gives_the_numbers_of_the_former_default() -> None:
    """Recorded from the whole-block joint estimator before per_tensor became the default (commit 64a1358)."""
    allocation, engine, _ = _scored({"estimator": "joint", "granularity": "block"})
    path = engine.adapter.blocks_path
    assert allocation.scores == pytest.approx(
        {f"{path}.0": 2.4025440216064453, f"{path}.1": 1.3332366943359375}, rel=1e-6
    )
    assert allocation.tensor_scores == {}


def test_per_tensor_and_joint_coincide_on_single_linears_and_differ_on_groups() -> None:
    per_tensor, _, _ = _scored({"granularity": "layer"})
    joint, _, _ = _scored({"granularity": "layer", "estimator": "joint"})
    assert joint.scores == per_tensor.scores
    summed, _, _ = _scored({"granularity": "block"})
    together, _, _ = _scored({"granularity": "block", "estimator": "joint"})
    assert summed.scores.keys() == together.scores.keys()
    for name in summed.scores:  # |sum of projections| <= sum of |projections|, far below on these blocks
        assert together.scores[name] < summed.scores[name]


def test_scores_are_deterministic_per_run_seed() -> None:
    first, _, _ = _scored({}, seed=42)
    again, _, _ = _scored({}, seed=42)
    other, _, _ = _scored({}, seed=43)
    assert first.scores == again.scores and first.tensor_scores == again.tensor_scores
    assert all(first.tensor_scores[n] != other.tensor_scores[n] for n in first.tensor_scores)


def test_bf16_model_scored_in_float32_ranks_like_the_float32_model_and_is_restored_bit_exactly() -> None:
    reference, _, _ = _scored({})
    model, adapter, samples = _model(torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(42)
    allocation = EcoFlapAllocation(allocation_settings({"name": "ecoflap"}))
    scores = allocation.importance(LayerwiseEngine(model, adapter, samples, progress=False))
    names = list(reference.tensor_scores)
    rho = spearmanr([reference.tensor_scores[n] for n in names], [allocation.tensor_scores[n] for n in names])
    assert rho.statistic >= 0.99
    assert sorted(scores, key=scores.get) == sorted(reference.scores, key=reference.scores.get)
    after = model.state_dict()
    for key, value in before.items():
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), key


@pytest.mark.parametrize("key", ["estimator", "granularity", "precision"])
def test_an_unknown_choice_names_the_key_and_the_valid_values(key: str) -> None:
    with pytest.raises(ValueError, match=rf"method\.allocation\.{key}='nope'; valid: "):
        allocation_settings({"name": "ecoflap", key: "nope"})
