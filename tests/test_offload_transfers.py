"""Offload keeps the work on the device, and every host <-> device move is counted (CPU-simulated).

With `offload=True` the decoder blocks and the stored block inputs live in CPU memory. A pruning
step must be one visit of its block to the device (statistics, Hessians and masks computed there),
a scoring pass a visit that copies nothing back, and ECoFLaP must stream each later block once per
(scored block, sample), not once per perturbation. On CPU the copies are no-ops, so these tests
count the moves the engine makes through its one door (tamp.pipeline.transfer); the GPU node check
compares those counts with the copies the CUDA profiler sees.
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from tiny_models import fresh_tiny

import tamp
from tamp.methods.composed import ComposedMethod
from tamp.pipeline.engine import LayerwiseEngine

METHODS = {
    "wanda": {"pruner": "wanda"},
    "sparsegpt": {"pruner": "sparsegpt"},
    "tamp": {"pruner": "wanda", "allocation": {"name": "das"}, "tokens": {"name": "amia"}},
    "ecoflap": {"pruner": "wanda", "allocation": {"name": "ecoflap"}},
}
SAMPLES = 3


def _prune(name: str, offload: bool):
    bundle = fresh_tiny("llava_next")
    samples = [bundle.example_sample(0) for _ in range(SAMPLES)]
    config = {"method": METHODS[name], "sparsity": {"target": 0.5}, "device": "cpu", "offload": offload,
              "progress": False, "keep_masks": True}
    return bundle, tamp.prune(bundle.model, samples, config, adapter=bundle.adapter)


@pytest.mark.parametrize("name", ["wanda", "sparsegpt"])
def test_statistics_are_created_and_filled_while_the_block_is_on_the_device(name: str) -> None:
    engines: list[LayerwiseEngine] = []
    seen: list[tuple[str, bool]] = []
    init, begin, observe = LayerwiseEngine.__init__, ComposedMethod.begin_block, ComposedMethod.observe

    def keep(self, *args, **kwargs):
        init(self, *args, **kwargs)
        engines.append(self)

    def resident(index: int) -> bool:
        return engines[0].transfers.is_resident(engines[0].blocks[index])

    def begin_block(self, index, linears):
        seen.append(("begin", resident(index)))
        begin(self, index, linears)

    def observe_(self, name_, x, z, ctx):
        seen.append(("observe", resident(ctx.block_index)))
        observe(self, name_, x, z, ctx)

    with mock.patch.object(LayerwiseEngine, "__init__", keep), \
            mock.patch.object(ComposedMethod, "begin_block", begin_block), \
            mock.patch.object(ComposedMethod, "observe", observe_):
        _prune(name, offload=True)
    assert seen and all(on for _, on in seen), "statistics were made or filled while the block was in CPU memory"


def _block_moves(report) -> tuple[int, int]:
    block = report.transfers.get("block", {})
    return block.get("to_device", 0), block.get("to_host", 0)


def test_copy_counts_with_and_without_offload() -> None:
    blocks = 2  # the tiny LLaVA-NeXT
    table = {}
    for name in METHODS:
        _, plain = _prune(name, offload=False)
        bundle, off = _prune(name, offload=True)
        assert len(bundle.adapter.decoder_blocks()) == blocks
        assert "block" not in plain.transfers and "hidden" not in plain.transfers, "no offload: nothing streams"
        tensors_per_block = len(list(bundle.adapter.decoder_blocks()[0].parameters()))
        to_device, to_host = (n // tensors_per_block for n in _block_moves(off))
        table[name] = (to_device, to_host, off.transfers["total"]["bytes"] / plain.transfers["total"]["bytes"])
        assert to_host == blocks, f"{name}: only pruned blocks go back to the host, once each"
        scoring = {"wanda": 0, "sparsegpt": 0, "tamp": blocks, "ecoflap": blocks + SAMPLES * blocks * (blocks - 1) // 2}
        assert to_device == blocks + scoring[name], (name, to_device)
        for key in plain.masks:
            assert torch.equal(plain.masks[key], off.masks[key]), (name, key)
        assert plain.allocation_scores == off.allocation_scores, name
    assert all(ratio > 1 for *_, ratio in table.values()), table


def test_a_read_only_visit_copies_nothing_back_and_a_pruning_visit_does() -> None:
    bundle = fresh_tiny("llava_next")
    samples = [bundle.example_sample(0) for _ in range(2)]
    engine = LayerwiseEngine(bundle.model, bundle.adapter, samples, device="cpu", offload=True, progress=False)
    engine.captured()
    block = engine.blocks[0]
    before = list(block.parameters())
    moved_back = engine.transfers.kinds["block"].to_host
    with engine.on_device(block):
        with engine.on_device(block, writes=True):  # nested: already on the device, nothing moves
            assert engine.transfers.is_resident(block)
    assert engine.transfers.kinds["block"].to_host == moved_back, "a read-only visit copied the block back"
    with engine.on_device(block, writes=True):
        pass
    assert engine.transfers.kinds["block"].to_host == moved_back + len(before)


@pytest.mark.slow
def test_the_gpu_node_check_runs_end_to_end_on_the_cpu(tmp_path) -> None:
    """The script the GPU issue runs, with --device cpu: every check passes here (placement on the CPU)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "benchmarks/gpu_node_check.py", "--device", "cpu", "--out", str(tmp_path)],
                          cwd=repo, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_node_check.json").read_text())
    assert not summary["failed"] and not summary["skipped"], summary["failed"] + summary["skipped"]
    sections = {r["check"].split("/")[0] for r in summary["results"]}
    # every section reports on the CPU except processes (two GPUs)
    assert sections == {"scale", "sparse24", "study", "cuda_tests", "precision", "placement", "offload"}, sections
