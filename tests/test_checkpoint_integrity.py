"""A checkpoint file damaged on disk with its size intact is found on resume, named, and recomputed.

Headers and sizes alone let a block whose tensor bytes were overwritten (a bad sector, a partial
copy over it) resume into a wrong model with exit 0. Each block file's SHA-256 is recorded in
progress.json when written, the scoring file carries a digest of its tensors: a resumed run names
the damaged file in one warning line and ends with the masks and weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import Preempted, prune_tiny

from tamp.pipeline.checkpoint import SCORING, PruneCheckpoint, check_checkpoint
from tamp.pipeline.engine import NonFiniteError

WANDA = {"pruner": "wanda"}
DAS = {"pruner": "wanda", "allocation": {"name": "das"}, "tokens": {"name": "amia"}}


def _interrupt_after(method: dict, checkpoint: Path, what: str, count: int) -> None:
    """Prune with a checkpoint and stop (as SIGTERM does) right after the `count`-th save of `what`."""
    original = getattr(PruneCheckpoint, what)
    seen: list[int] = []

    def save_then_preempt(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(1)
        if len(seen) == count:
            raise Preempted("signal SIGTERM")

    with mock.patch.object(PruneCheckpoint, what, save_then_preempt), pytest.raises(Preempted):
        prune_tiny(method, checkpoint)


def _damage(path: Path) -> None:
    """Overwrite 16 bytes inside the tensor data of a safetensors file; its header and size stay as they were."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    middle = start + (len(data) - start) // 3
    data[middle:middle + 16] = bytes(255 - b for b in data[middle:middle + 16])
    size = path.stat().st_size
    path.write_bytes(bytes(data))
    assert path.stat().st_size == size


def _assert_same(result, model, reference, reference_model) -> None:
    assert result.masks.keys() == reference.masks.keys()
    for key in reference.masks:
        assert torch.equal(result.masks[key], reference.masks[key]), key
    for (name, a), (_, b) in zip(model.state_dict().items(), reference_model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("damaged", [0, 1])
def test_a_damaged_block_is_named_in_one_line_and_recomputed(damaged: int, tmp_path: Path, caplog) -> None:
    reference, reference_model = prune_tiny(WANDA, None)
    checkpoint = tmp_path / "checkpoint"
    _interrupt_after(WANDA, checkpoint, "save_block", 2)
    block = checkpoint / f"block_{damaged:04d}.safetensors"
    _damage(block)
    check_checkpoint(checkpoint)  # the pre-run check does not refuse it: the resume recomputes it

    saved: list[int] = []
    original = PruneCheckpoint.save_block

    def record(self, index, *args):
        saved.append(index)
        original(self, index, *args)

    with caplog.at_level(logging.WARNING, logger="tamp"), mock.patch.object(PruneCheckpoint, "save_block", record):
        resumed, model = prune_tiny(WANDA, checkpoint)
    _assert_same(resumed, model, reference, reference_model)
    assert saved[0] == damaged, "the damaged block was not recomputed"
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(block) in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "digest" in lines[0], lines
    progress = json.loads((checkpoint / "progress.json").read_text())
    assert sorted(progress["digests"]) == [f"block_{i:04d}.safetensors" for i in range(len(reference.blocks_s))]


def test_a_damaged_scoring_file_is_named_and_its_pass_scored_again(tmp_path: Path, caplog) -> None:
    reference, reference_model = prune_tiny(DAS, None)
    checkpoint = tmp_path / "checkpoint"
    _interrupt_after(DAS, checkpoint, "save_scoring", 2)
    _damage(checkpoint / SCORING)
    check_checkpoint(checkpoint)  # header and size are whole

    saves: list[int] = []
    original = PruneCheckpoint.save_scoring

    def record(self, phase, completed, state):
        saves.append(completed)
        original(self, phase, completed, state)

    with caplog.at_level(logging.WARNING, logger="tamp"), mock.patch.object(PruneCheckpoint, "save_scoring", record):
        resumed, model = prune_tiny(DAS, checkpoint)
    assert saves[0] == 1, "the damaged statistics were used instead of scored again"
    assert resumed.allocation_scores == reference.allocation_scores
    _assert_same(resumed, model, reference, reference_model)
    lines = [r.getMessage() for r in caplog.records if str(checkpoint / SCORING) in r.getMessage()]
    assert len(lines) == 1 and "digest" in lines[0], lines


def test_nan_from_a_restored_block_blames_the_checkpoint_not_the_model(tmp_path: Path) -> None:
    """A checkpoint from before digests (none recorded) whose block holds NaN: the error says so."""
    checkpoint = tmp_path / "checkpoint"
    _interrupt_after(WANDA, checkpoint, "save_block", 2)
    block = checkpoint / "block_0000.safetensors"
    tensors = load_file(str(block))
    name = next(k for k in tensors if k.endswith(".weight"))
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(block))
    progress = json.loads((checkpoint / "progress.json").read_text())
    progress.pop("digests")
    (checkpoint / "progress.json").write_text(json.dumps(progress))
    with pytest.raises(NonFiniteError, match=r"restored from the checkpoint .*block_0000\.safetensors: the "
                                             r"checkpoint is damaged, not the model"):
        prune_tiny(WANDA, checkpoint)


def test_checkpoint_files_get_the_umask_mode(tmp_path: Path) -> None:
    """safetensors writes 0600; a checkpoint is as readable as the rest of the run folder (0666 less umask)."""
    import os

    old = os.umask(0o022)
    try:
        _interrupt_after(DAS, tmp_path / "a", "save_scoring", 1)
        _interrupt_after(WANDA, tmp_path / "b", "save_block", 1)
    finally:
        os.umask(old)
    for path in (tmp_path / "a" / SCORING, tmp_path / "b" / "block_0000.safetensors", tmp_path / "b" / "progress.json"):
        assert path.stat().st_mode & 0o777 == 0o644, path
