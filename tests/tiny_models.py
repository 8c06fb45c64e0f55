"""The tests' one source of tiny random models: each family built once per test process.

`shared_tiny` hands out the cached bundle (read-only use: forward passes, encoding, comparisons);
`fresh_tiny` a private copy for a test that prunes or otherwise changes the model. Building a tiny model
takes seconds for the Qwen families; copying a cached one takes milliseconds.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import torch

from tamp.data.sample import AUDIO, IMAGE, VIDEO, CalibSample
from tamp.models.tiny import TinyBundle, build_tiny

#: the LLaVA families and plain decoder LMs, and the Qwen families (M-RoPE, audio)
LLAVA_NAMES = ("llava", "llava_next", "llava_onevision", "llama", "qwen2")
QWEN_NAMES = ("qwen2_vl", "qwen2_5_vl", "qwen2_5_omni")
NAMES = LLAVA_NAMES + QWEN_NAMES


@functools.cache
def shared_tiny(name: str, seed: int = 0) -> TinyBundle:
    """The cached tiny model `name`: never modify it (use fresh_tiny)."""
    return build_tiny(name, seed=seed)


def fresh_tiny(name: str, seed: int = 0) -> TinyBundle:
    """A private copy of the tiny model `name`, free to prune."""
    return copy.deepcopy(shared_tiny(name, seed))


@functools.cache
def tiny_sample(name: str, index: int = 0) -> CalibSample:
    """The index-th example of the tiny model `name`, encoded by its adapter (read-only)."""
    return shared_tiny(name).example_sample(index)


def expected_counts(b: TinyBundle, inputs: dict) -> dict[int, int]:
    """Media positions implied by the processor's outputs: grids / merge^2, audio frames after the tower."""
    merge = b.model.config.vision_config.spatial_merge_size
    counts = {}
    for code, key in ((IMAGE, "image_grid_thw"), (VIDEO, "video_grid_thw")):
        if key in inputs:
            counts[code] = int((inputs[key].prod(-1) // merge**2).sum())
    if "feature_attention_mask" in inputs:
        tower = b.model.model.audio_tower
        _, lengths = tower._get_feat_extract_output_lengths(inputs["feature_attention_mask"].sum(-1))
        counts[AUDIO] = int(lengths.sum())
    return counts


def logits(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """A tiny model's logits without a KV cache (no state carried between calls)."""
    with torch.no_grad():
        return model(**inputs, use_cache=False).logits


class Preempted(KeyboardInterrupt):
    """What SIGTERM becomes in tamp's CLI (tamp.cli.run_command): the checkpoint tests interrupt with it."""


def prune_tiny(method: dict, checkpoint_dir: Path | None):
    """(summary, model) of `tamp.prune` on a fresh tiny LLaVA-NeXT, 3 samples, 50%, masks kept, checkpointed
    into `checkpoint_dir` when given: the checkpoint tests' interrupted, resumed and reference runs."""
    import tamp

    bundle = fresh_tiny("llava_next")
    samples = [bundle.example_sample(0) for _ in range(3)]
    config = {"method": method, "sparsity": {"target": 0.5}, "device": "cpu", "progress": False,
              "keep_masks": True, "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None}
    return tamp.prune(bundle.model, samples, config, adapter=bundle.adapter), bundle.model
