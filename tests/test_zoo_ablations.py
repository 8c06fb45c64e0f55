"""The toy Table 4 says something in every row: each ablation's masks differ from the row it ablates.

On the micro_next recipe (the default zoo model's kind: LLaVA-NeXT samples of 134 tokens, 120 of
them image tokens), every method of experiments/toy_ablations.yaml is composed as `make ablations`
composes it and pruned at 50% on the micro_next calibration split. On the v1 zoo model (a LLaVA-1.5 on
the first world, the default until 2026-12) two rows were copies of Wanda by construction (Random kept
all of a sample's < 100 tokens; block-wise DAS snapped every block to 50% on a 1/32 grid); here none may be.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import tamp
from tamp.cli.schema import validate
from tamp.data.sources import calibration_samples
from tamp.models.named import load_named_model
from tamp.zoo import cache as zoo_cache

#: the micro zoo recipes this module builds in the session's zoo_cache_dir (started early: conftest.py)
ZOO_BUILDS = ("micro_next",)

#: Table 4 row -> the rows it is an ablation of (what it adds or swaps must change the masks)
BASES: dict[str, tuple[str, ...]] = {
    "das": ("wanda",),
    "amia": ("wanda",),
    "tamp": ("das", "amia"),
    "ecoflap": ("wanda",),
    "owl": ("wanda",),
    "das_all_token": ("wanda", "das"),
    "das_block": ("wanda", "das"),
    "random_tokens": ("wanda",),
    "attention_tokens": ("wanda", "amia"),
    "das_sparsegpt": ("sparsegpt",),
    "tamp_sparsegpt": ("sparsegpt", "das_sparsegpt"),
}


@pytest.fixture(scope="module")
def cache_dir(zoo_cache_dir: Path) -> Path:
    zoo_cache.ensure_zoo("micro_next", zoo_cache_dir, progress=False)
    return zoo_cache_dir


def _compose(compose_cfg, cache_dir: Path, method: str):
    return compose_cfg(["+experiment=toy_ablations", f"method={method}", "sparsity.target=0.5",
                        "model.name=zoo:micro_next", f"paths.cache_dir={cache_dir}", "calib.num_samples=32",
                        "logger=none", "runner.progress=false"])


@pytest.fixture(scope="module")
def masks(compose_cfg, cache_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{method: {linear: pruned mask}} for every method of the toy ablations at 50%."""
    base_cfg = None
    loaded = None
    samples = None
    out: dict[str, dict[str, torch.Tensor]] = {}
    methods = sorted({m for pair in BASES.items() for m in (pair[0], *pair[1])})
    for method in methods:
        settings = validate(_compose(compose_cfg, cache_dir, method))
        if loaded is None:
            base_cfg = settings
            loaded = load_named_model(settings.model_settings())
            samples = calibration_samples(settings.calib_settings(), loaded.adapter, loaded.examples)
        assert settings.calib == base_cfg.calib and settings.model == base_cfg.model
        model = copy.deepcopy(loaded.model)
        adapter = type(loaded.adapter)(model, loaded.processor)
        tamp.prune(model, samples, settings.prune_config(), adapter=adapter)
        out[method] = {name: (linear.weight == 0).clone() for block in adapter.target_linears()
                       for name, linear in block.items()}
    return out


def test_the_calibration_samples_are_in_the_papers_regime(compose_cfg, cache_dir: Path) -> None:
    from tamp.data.sample import IMAGE

    settings = validate(_compose(compose_cfg, cache_dir, "wanda"))
    loaded = load_named_model(settings.model_settings())
    samples = calibration_samples(settings.calib_settings(), loaded.adapter, loaded.examples)
    lengths = [s.modality_ids.numel() for s in samples]
    shares = [(s.modality_ids == IMAGE).float().mean().item() for s in samples]
    assert min(lengths) > 100 and min(shares) >= 0.8, (min(lengths), min(shares))
    assert max(lengths) > 100 + 25, "Random's 100 tokens are a real subset of a sample"


@pytest.mark.parametrize("method", sorted(BASES))
def test_every_ablation_row_prunes_other_weights_than_its_base(masks, method: str) -> None:
    for base in BASES[method]:
        differing = sum(int((masks[method][n] != masks[base][n]).sum()) for n in masks[method])
        assert differing > 0, f"{method} pruned exactly the weights {base} pruned"


def test_block_wise_das_does_not_snap_every_block_to_the_target(masks) -> None:
    per_block: dict[str, list[torch.Tensor]] = {}
    for name, mask in masks["das_block"].items():
        per_block.setdefault(name.split(".mlp")[0].split(".self_attn")[0], []).append(mask)
    sparsity = {block: sum(int(m.sum()) for m in ms) / sum(m.numel() for m in ms) for block, ms in per_block.items()}
    assert len(sparsity) >= 2 and len({round(s, 6) for s in sparsity.values()}) > 1, sparsity
