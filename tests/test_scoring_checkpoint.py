"""Scoring passes (DAS, OWL, ECoFLaP) checkpoint block by block: a pre-empted run resumes its scoring.

ECoFLaP's zeroth-order scoring of LLaVA-NeXT-8B takes hours; before, a pre-emption during it lost
all of it (only the plan and the pruned blocks were checkpointed). Here a run is interrupted right
after its scoring pass saved its first block, rerun with the same checkpoint directory, and must
score only the remaining blocks and end with the allocation scores and masks of an uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch
from tiny_models import Preempted, prune_tiny

from tamp.pipeline.checkpoint import SCORING, CheckpointMismatchError, PruneCheckpoint

METHODS = {
    "ecoflap": {"pruner": "wanda", "allocation": {"name": "ecoflap"}},
    "das": {"pruner": "wanda", "allocation": {"name": "das"}, "tokens": {"name": "amia"}},
    "owl": {"pruner": "wanda", "allocation": {"name": "owl", "owl_lambda": 0.02}},
}


@pytest.mark.parametrize("name", list(METHODS))
def test_a_preempted_scoring_pass_resumes_after_its_last_block(name: str, tmp_path: Path) -> None:
    method = METHODS[name]
    reference, _ = prune_tiny(method, None)
    checkpoint = tmp_path / "checkpoint"
    original = PruneCheckpoint.save_scoring
    saved: list[int] = []

    def save_then_preempt(self, phase, completed, state):
        original(self, phase, completed, state)
        saved.append(completed)
        raise Preempted("signal SIGTERM")

    with mock.patch.object(PruneCheckpoint, "save_scoring", save_then_preempt), pytest.raises(Preempted):
        prune_tiny(method, checkpoint)
    assert saved == [1] and (checkpoint / SCORING).is_file() and not (checkpoint / "progress.json").exists()

    resumed_saves: list[int] = []

    def record(self, phase, completed, state):
        resumed_saves.append(completed)
        original(self, phase, completed, state)

    with mock.patch.object(PruneCheckpoint, "save_scoring", record):
        resumed, _ = prune_tiny(method, checkpoint)
    blocks = len(reference.blocks_s)
    assert resumed_saves == list(range(2, blocks + 1)), "the resumed pass scored block 0 again"
    assert resumed.allocation_scores == reference.allocation_scores
    assert resumed.masks.keys() == reference.masks.keys()
    for key in reference.masks:
        assert torch.equal(resumed.masks[key], reference.masks[key]), key
    assert not (checkpoint / SCORING).exists(), "the plan replaces the scoring checkpoint"


def test_a_scoring_checkpoint_of_another_configuration_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint"
    PruneCheckpoint(checkpoint, "another-run").save_scoring("das scoring", 1, {"x": torch.zeros(1)})
    with pytest.raises(CheckpointMismatchError, match="holds a checkpoint of a different configuration"):
        prune_tiny(METHODS["das"], checkpoint)


def test_a_cut_off_scoring_file_is_named_before_any_work(tmp_path: Path) -> None:
    from tamp.pipeline.checkpoint import CheckpointCorruptError, check_checkpoint

    checkpoint = tmp_path / "checkpoint"
    PruneCheckpoint(checkpoint, "run").save_scoring("ecoflap scoring", 1, {"totals": torch.zeros(14)})
    check_checkpoint(checkpoint)  # whole: fine
    data = (checkpoint / SCORING).read_bytes()
    (checkpoint / SCORING).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointCorruptError, match=r"checkpoint scoring file .*scoring.safetensors is unreadable"):
        check_checkpoint(checkpoint)
