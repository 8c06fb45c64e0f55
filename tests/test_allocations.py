"""Allocations on tiny random models: targets, caps, plans, scores against independent recomputations.

DAS, DAS all-token, block-wise DAS, OWL (both mappings) and ECoFLaP (layer and block) run on a tiny
LLaVA-NeXT (image + text) and, for three modalities and for sample-wise averaging, on a tiny
Qwen2.5-Omni thinker (audio + video + text, then image + text).
"""

from __future__ import annotations

import copy
import functools
import logging
from collections import defaultdict

import pytest
import torch
from tiny_models import fresh_tiny
from torch import nn

from tamp.data.sample import CalibSample
from tamp.methods.composed import ComposedMethod
from tamp.models.tiny import TinyBundle
from tamp.pipeline.engine import LayerwiseEngine
from tamp.pipeline.tail import tail_loss
from tamp.pruning.registry import build_pruner
from tamp.pruning.wanda import wanda_metric
from tamp.sparsity.das import diversity
from tamp.sparsity.owl import outlier_ratio, owl_sparsity
from tamp.sparsity.registry import allocation_settings, build_allocation
from tamp.tokens.registry import build_selector

TARGET = 0.5
CASES = {
    "das": allocation_settings({"name": "das"}),
    "das_reference": allocation_settings({"name": "das", "variant": "reference"}),
    "das_avg": allocation_settings({"name": "das", "aggregation": "avg"}),
    "das_all_token": allocation_settings({"name": "das_all_token"}),
    "das_block": allocation_settings({"name": "das_block"}),
    "owl": allocation_settings({"name": "owl"}),
    "owl_tamp_repository": allocation_settings({"name": "owl", "owl_compat": "tamp_repository"}),
    "ecoflap_block": allocation_settings({"name": "ecoflap", "granularity": "block"}),
    "ecoflap_layer": allocation_settings({"name": "ecoflap", "granularity": "layer", "num_samples": 1}),
}


@functools.cache
def _pristine(family: str) -> TinyBundle:
    return fresh_tiny(family)


def _bundle(family: str) -> TinyBundle:
    """A fresh copy of the tiny model (building once per family keeps the tests fast)."""
    base = _pristine(family)
    return TinyBundle(
        copy.deepcopy(base.model), base.processor, None, base.family, base.example, base.extra_examples
    )


def _setup(family: str) -> tuple[TinyBundle, list[CalibSample]]:
    bundle = _bundle(family)
    bundle.adapter = type(_pristine(family).adapter)(bundle.model, bundle.processor)
    return bundle, [bundle.example_sample(i) for i in range(len(bundle.examples()))]


def _engine(bundle: TinyBundle, samples: list[CalibSample], reducer=None) -> LayerwiseEngine:
    return LayerwiseEngine(bundle.model, bundle.adapter, samples, progress=False, reducer=reducer)


def _prune(family: str, cfg, target: float = TARGET):
    """(engine, allocation, plan) after planning and pruning with Wanda through the engine."""
    bundle, samples = _setup(family)
    torch.manual_seed(42)
    allocation = build_allocation(cfg)
    method = ComposedMethod(
        build_pruner("wanda"), allocation, build_selector({"name": "all"}), target, "unstructured"
    )
    engine = _engine(bundle, samples)
    plan, _ = engine.prune(method)
    return engine, allocation, plan


def _named(engine: LayerwiseEngine) -> dict[str, nn.Linear]:
    return {name: linear for linears in engine.linears for name, linear in linears.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_allocation_hits_target_plan_and_cap(case: str) -> None:
    cfg = CASES[case]
    engine, allocation, plan = _prune("llava_next", cfg)
    linears = _named(engine)
    assert set(plan) == set(linears)
    total = sum(lin.weight.numel() for lin in linears.values())
    pruned = 0
    for name, linear in linears.items():
        count = int((linear.weight == 0).sum())
        assert count == linear.out_features * int(linear.in_features * plan[name]), name
        assert count / linear.weight.numel() == pytest.approx(plan[name], abs=1e-9), f"{name} is off its grid"
        pruned += count
    assert abs(pruned / total - TARGET) <= 0.005
    cap = TARGET + cfg.max_sparsity_delta if cfg.name != "owl" else max(allocation.block_sparsity.values())
    assert max(plan.values()) <= cap + 1e-9
    assert min(plan.values()) >= 0.0
    assert allocation.scores and all(isinstance(v, float) for v in allocation.scores.values())
    assert len(set(plan.values())) > 1, "a non-uniform allocation gave every linear the same sparsity"


def _outputs_and_inputs(bundle: TinyBundle, samples: list[CalibSample], names: list[str]):
    """Every named linear's input and output per sample, from the model's own full forward."""
    modules = dict(bundle.model.named_modules())
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = defaultdict(list)
    handles = []
    for name in names:

        def hook(module, args, out, name=name):
            seen[name].append((args[0].reshape(-1, module.in_features), out.reshape(-1, module.out_features)))

        handles.append(modules[name].register_forward_hook(hook))
    with torch.no_grad():
        for sample in samples:
            bundle.model(**sample.inputs, use_cache=False)
    for handle in handles:
        handle.remove()
    return seen


@pytest.mark.parametrize("family", ["llava_next", "qwen2_5_omni"])
def test_das_scores_equal_an_independent_recomputation(family: str) -> None:
    bundle, samples = _setup(family)
    blocks = bundle.adapter.blocks_path
    names = [f"{blocks}.1.mlp.down_proj", f"{blocks}.0.self_attn.k_proj"]
    seen = _outputs_and_inputs(bundle, samples, names)
    allocation = build_allocation({"name": "das"})
    allocation.plan(_engine(bundle, samples), TARGET)
    for name in names:
        per_term: dict = defaultdict(list)
        for sample, (_x, z) in zip(samples, seen[name], strict=True):
            terms = diversity(z, sample.modality_ids)
            for key, value in (*terms.intra.items(), *terms.inter.items()):
                per_term[key].append(value)
        means = [sum(v) / len(v) for v in per_term.values()]
        assert allocation.scores[name] == pytest.approx(sum(means) / len(means), abs=1e-6), name
    if family == "qwen2_5_omni":  # text, image, video, audio: 4 intra + 4 inter terms seen
        assert len(per_term) == 8


def test_das_block_is_uniform_inside_each_block() -> None:
    engine, allocation, plan = _prune("llava_next", {"name": "das_block"})
    for index, linears in enumerate(engine.linears):
        block = f"{engine.adapter.blocks_path}.{index}"
        assert {plan[name] for name in linears} == {allocation.block_sparsity[block]}
        mean = sum(allocation.layer_scores[n] for n in linears) / len(linears)
        assert allocation.scores[block] == pytest.approx(mean)


@pytest.mark.parametrize("compat", ["owl", "tamp_repository"])
def test_owl_block_sparsity_equals_independent_ratios(compat: str) -> None:
    bundle, samples = _setup("llava_next")
    per_block = bundle.adapter.target_linears()
    seen = _outputs_and_inputs(bundle, samples, [n for block in per_block for n in block])
    ratios = []
    for linears in per_block:
        metrics = []
        for name, linear in linears.items():
            sq = sum(x.float().square().sum(0) for x, _ in seen[name]) / len(samples)
            metrics.append(wanda_metric(linear.weight, sq))
        ratios.append(outlier_ratio(metrics, 5.0))
    expected = owl_sparsity(ratios, TARGET, 0.08, compat=compat)

    allocation = build_allocation({"name": "owl", "owl_compat": compat})
    plan = allocation.plan(_engine(bundle, samples), TARGET)
    assert list(allocation.scores.values()) == pytest.approx(ratios, abs=1e-9)
    assert list(allocation.block_sparsity.values()) == pytest.approx(expected, abs=1e-12)
    for (block, p), linears in zip(allocation.block_sparsity.items(), per_block, strict=True):
        for name in linears:  # on the row grid: within one weight per row of OWL's sparsity
            assert abs(plan[name] - p) <= 1 / 64 + 1e-12, (block, name)
        assert len({plan[name] for name in linears}) == 1


@pytest.mark.parametrize("granularity", ["block", "layer"])
def test_ecoflap_scoring_restores_the_weights_bit_exactly(granularity: str) -> None:
    bundle, samples = _setup("llava_next")
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    allocation = build_allocation({"name": "ecoflap", "granularity": granularity})
    allocation.plan(_engine(bundle, samples), TARGET)
    after = bundle.model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert all(v > 0 for v in allocation.scores.values())


@pytest.mark.parametrize("family", ["llava_next", "llava_onevision", "qwen2_5_vl", "qwen2_5_omni", "llama"])
def test_tail_loss_equals_the_models_own_loss(family: str) -> None:
    bundle, samples = _setup(family)
    sample = samples[0]
    with torch.no_grad():
        expected = bundle.model(**sample.inputs, labels=sample.labels, use_cache=False).loss.item()
    engine = _engine(bundle, samples)
    store = engine.captured().copy()
    hidden, kwargs = store.get(0)
    assert tail_loss(engine, 0, hidden, kwargs, sample.labels) == pytest.approx(expected, abs=1e-5)
    engine.forward_block(0, store)  # from block 1's input: the same loss
    hidden, kwargs = store.get(0)
    assert tail_loss(engine, 1, hidden, kwargs, sample.labels) == pytest.approx(expected, abs=1e-5)


class _TwoProcessReducer:
    """Simulates all-reduce(sum) over two processes run one after the other.

    Phase "record": process 0 keeps a copy of what it would send at each call. Phase "sum": process 1
    adds process 0's tensors of the same call in place, so process 1 ends with the global statistics.
    """

    def __init__(self) -> None:
        self.calls: list[list[torch.Tensor]] = []
        self.phase = "record"
        self.index = 0

    def __call__(self, tensors: list[torch.Tensor]) -> None:
        if self.phase == "record":
            self.calls.append([t.clone() for t in tensors])
            return
        for tensor, other in zip(tensors, self.calls[self.index], strict=True):
            tensor += other
        self.index += 1


@pytest.mark.parametrize("name", ["das", "owl", "ecoflap"])
def test_plans_do_not_depend_on_the_number_of_processes(name: str) -> None:
    cfg = (
        {"name": name, "granularity": "layer"} if name == "ecoflap" else {"name": name}
    )
    bundle, samples = _setup("qwen2_5_omni")
    torch.manual_seed(42)
    single = build_allocation(cfg).plan(_engine(bundle, samples), TARGET)
    reducer = _TwoProcessReducer()
    torch.manual_seed(42)
    build_allocation(cfg).plan(_engine(bundle, samples[1:], reducer), TARGET)
    reducer.phase = "sum"
    torch.manual_seed(42)
    merged = build_allocation(cfg).plan(_engine(bundle, samples[:1], reducer), TARGET)
    assert merged == single


def test_das_on_three_modalities_hits_the_target() -> None:
    engine, allocation, plan = _prune("qwen2_5_omni", {"name": "das"})
    linears = _named(engine)
    pruned = sum(int((lin.weight == 0).sum()) for lin in linears.values())
    assert abs(pruned / sum(lin.weight.numel() for lin in linears.values()) - TARGET) <= 0.005
    assert max(plan.values()) <= TARGET + 0.1 + 1e-9


def test_das_on_text_only_calibration_warns_and_works(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tamp.sparsity.das"):
        engine, allocation, plan = _prune("llama", {"name": "das"})
    assert any("no non-text tokens" in r.getMessage() for r in caplog.records)
    linears = _named(engine)
    pruned = sum(int((lin.weight == 0).sum()) for lin in linears.values())
    assert abs(pruned / sum(lin.weight.numel() for lin in linears.values()) - TARGET) <= 0.005
    assert all(torch.isfinite(torch.tensor(v)) for v in allocation.scores.values())


def test_ecoflap_score_equals_full_model_finite_difference() -> None:
    """One sample, one linear of block 1: the score is |L(w + eps z) - L(w - eps z)| / (2 eps) of the model."""
    from tamp.sparsity.ecoflap import _seed, sample_key

    bundle, samples = _setup("llava_next")
    sample = samples[0]
    torch.manual_seed(42)
    cfg = allocation_settings({"name": "ecoflap", "granularity": "layer"})
    allocation = build_allocation(cfg)
    engine = _engine(bundle, samples)
    allocation.plan(engine, TARGET)
    names = [name for linears in engine.linears for name in linears]
    name = f"{bundle.adapter.blocks_path}.1.mlp.down_proj"
    weight = _named(engine)[name].weight
    gen = torch.Generator().manual_seed(_seed(42, names.index(name), sample_key(sample)))
    z = torch.randn(weight.shape, generator=gen)
    original = weight.data.clone()
    losses = []
    with torch.no_grad():
        for sign in (1.0, -1.0):
            weight.data.copy_(original + sign * cfg.eps * z)
            losses.append(bundle.model(**sample.inputs, labels=sample.labels, use_cache=False).loss.item())
    weight.data.copy_(original)
    expected = abs(losses[0] - losses[1]) / (2 * cfg.eps)
    assert allocation.scores[name] == pytest.approx(expected, rel=1e-2, abs=1e-4)
