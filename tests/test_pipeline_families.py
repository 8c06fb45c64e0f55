"""The layer-wise pipeline on a tiny random model of every family (CPU, no download)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import fresh_tiny, logits

import tamp
from tamp.pipeline.engine import LayerwiseEngine

FAMILIES = ["llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen2_5_omni", "llama", "qwen2"]
PRUNERS = ["magnitude", "wanda", "sparsegpt"]


def _bundle_and_samples(family: str):
    bundle = fresh_tiny(family)
    samples = [bundle.example_sample(i) for i in range(len(bundle.examples()))]
    return bundle, samples


def _config(pruner: str, target: float, pattern: str = "unstructured", **extra) -> dict:
    return {
        "method": {"pruner": pruner},
        "sparsity": {"target": target, "pattern": pattern},
        "device": "cpu",
        "progress": False,
        **extra,
    }


def _targeted(bundle) -> set[str]:
    return {f"{name}.weight" for block in bundle.adapter.target_linears() for name in block}


@pytest.mark.parametrize("family", FAMILIES)
def test_captured_inputs_reproduce_hidden_states(family: str) -> None:
    bundle, samples = _bundle_and_samples(family)
    engine = LayerwiseEngine(bundle.model, bundle.adapter, samples, progress=False)
    store = engine.captured().copy()
    for i, sample in enumerate(samples):
        with torch.no_grad():
            expected = bundle.model(**sample.inputs, use_cache=False, output_hidden_states=True).hidden_states
        assert torch.equal(store.hidden[i], expected[0]), "block-0 input differs from the embedding output"
    num_blocks = len(engine.blocks)
    for index in range(num_blocks - 1):  # the model's last hidden state has the final norm applied
        engine.forward_block(index, store)
        for i, sample in enumerate(samples):
            with torch.no_grad():
                expected = bundle.model(**sample.inputs, use_cache=False, output_hidden_states=True).hidden_states
            torch.testing.assert_close(store.hidden[i], expected[index + 1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
@pytest.mark.parametrize("pruner", PRUNERS)
@pytest.mark.parametrize("family", FAMILIES)
def test_prune_hits_planned_sparsity_and_leaves_the_rest(family: str, pruner: str, pattern: str) -> None:
    bundle, samples = _bundle_and_samples(family)
    targeted = _targeted(bundle)
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    report = tamp.prune(bundle.model, samples, _config(pruner, 0.5, pattern), adapter=bundle.adapter)

    assert {f"{x.name}.weight" for x in report.linears} == targeted
    for linear in report.linears:
        assert linear.pruned == linear.planned_pruned, linear.name
    if pattern == "2:4":
        for block in bundle.adapter.target_linears():
            for name, module in block.items():
                groups = (module.weight == 0).reshape(module.out_features, -1, 4).sum(-1)
                assert torch.all(groups == 2), name
    after = bundle.model.state_dict()
    untouched = [k for k in before if k not in targeted]
    assert untouched, "nothing outside the decoder linears?"
    for key in untouched:
        assert torch.equal(before[key], after[key]), f"{key} changed but is not a pruning target"
    for name in bundle.adapter.protected_modules():
        assert any(k.startswith(name) for k in untouched), f"protected {name} has no parameters"
    assert torch.isfinite(logits(bundle.model, samples[0].inputs)).all()


@pytest.mark.parametrize("pruner", PRUNERS)
@pytest.mark.parametrize("family", FAMILIES)
def test_sparsity_zero_leaves_logits_bit_identical(family: str, pruner: str) -> None:
    bundle, samples = _bundle_and_samples(family)
    dense = [logits(bundle.model, s.inputs) for s in samples]
    report = tamp.prune(bundle.model, samples, _config(pruner, 0.0), adapter=bundle.adapter)
    assert report.achieved == 0.0
    for sample, expected in zip(samples, dense, strict=True):
        assert torch.equal(logits(bundle.model, sample.inputs), expected)


@pytest.mark.parametrize("pruner", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("family", ["llava_next", "qwen2_5_vl"])
def test_offload_gives_the_same_masks(family: str, pruner: str) -> None:
    masks = []
    for offload in (False, True):
        bundle, samples = _bundle_and_samples(family)
        report = tamp.prune(
            bundle.model, samples, _config(pruner, 0.5, offload=offload, keep_masks=True), adapter=bundle.adapter
        )
        masks.append(report.masks)
    assert masks[0].keys() == masks[1].keys()
    for name in masks[0]:
        assert torch.equal(masks[0][name], masks[1][name]), name
