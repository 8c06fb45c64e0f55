"""Per-block checkpoints so a pre-empted pruning run continues where it stopped.

Before the plan, a scoring pass (DAS, OWL, ECoFLaP's zeroth-order scores: hours to days on an 8B
model) saves its statistics after every block it completes (`scoring.safetensors`, one file written
atomically with its phase and block count; the statistics are summed over processes, so any number of
processes can resume them); a rerun replays the completed
blocks' dense forwards (a fraction of the scoring) and goes on from the next block.
After the plan and after every block, the run directory gets (each file written under a temporary
name and renamed): the plan, the block's pruned linear weights with their packed masks, and the
progress marker with the RNG state. The next block's inputs are not stored: on resume they are
recomputed by forwarding the captured block-0 inputs through the already-pruned blocks, which is
exact and costs a fraction of the pruning. A checkpoint made with another configuration is refused.
progress.json lists the files the checkpoint wrote; `clear()` removes those and nothing else.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from tamp.io import first_line, safetensors_problem, write_atomic

PROGRESS = "progress.json"
SCORING = "scoring.safetensors"


def has_checkpoint(directory: str | Path) -> bool:
    """Whether a checkpoint directory holds progress to resume: a plan with blocks, or a scoring pass."""
    directory = Path(directory)
    return (directory / PROGRESS).is_file() or (directory / SCORING).is_file()


class CheckpointMismatchError(ValueError):
    """The directory holds a checkpoint of a different run configuration."""


class CheckpointCorruptError(ValueError):
    """A checkpoint file is not what tamp wrote (cut short, overwritten); the message names the file."""


_START_OVER = "the run cannot continue from it: move {dir} away to prune from the start"


def _check_block(path: Path, directory: Path) -> None:
    if not path.is_file():
        raise CheckpointCorruptError(f"checkpoint block {path} is missing; {_START_OVER.format(dir=directory)}")
    problem = safetensors_problem(path)
    if problem is not None:
        raise CheckpointCorruptError(f"checkpoint block {path} is unreadable: {problem}; "
                                     f"{_START_OVER.format(dir=directory)}")


def read_progress(directory: str | Path) -> dict[str, Any] | None:
    """A checkpoint's progress marker, None when there is none; one line naming the file when it is garbage."""
    directory = Path(directory)
    path = directory / PROGRESS
    if not path.exists():
        return None
    try:
        progress = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointCorruptError(f"checkpoint progress file {path} is unreadable ({first_line(err)}); "
                                     f"{_START_OVER.format(dir=directory)}") from None
    fields = {"fingerprint": str, "plan": dict, "completed_blocks": int}
    bad = next((k for k, kind in fields.items() if not isinstance(progress, dict) or not isinstance(progress.get(k), kind)), None)
    if bad is not None:
        raise CheckpointCorruptError(f"checkpoint progress file {path} has no valid '{bad}'; "
                                     f"{_START_OVER.format(dir=directory)}")
    return progress


def check_checkpoint(directory: str | Path) -> None:
    """Before a run continues from `directory`: its progress marker parses and its completed blocks are whole.

    Headers only (milliseconds): a cut-off block file is named before the model loads, not by
    safetensors' `incomplete metadata` after it.
    """
    progress = read_progress(directory)
    scoring = Path(directory) / SCORING
    if progress is None and scoring.is_file():  # an interrupted scoring pass: its statistics must read
        problem = safetensors_problem(scoring)
        if problem is not None:
            raise CheckpointCorruptError(f"checkpoint scoring file {scoring} is unreadable: {problem}; "
                                         f"{_START_OVER.format(dir=directory)}")
    if progress is None:
        return
    for index in range(progress["completed_blocks"]):
        _check_block(Path(directory) / f"block_{index:04d}.safetensors", Path(directory))


def _pack(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.detach().cpu().numpy().reshape(-1)))


def _unpack(packed: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    bits = np.unpackbits(packed.numpy())[: like.numel()]
    return torch.from_numpy(bits.astype(bool)).reshape(like.shape)


class PruneCheckpoint:
    """The checkpoint directory of one pruning run; only the writer process writes."""

    def __init__(self, directory: str | Path, fingerprint: str, writer: bool = True) -> None:
        self.dir = Path(directory)
        self.fingerprint = fingerprint
        self.writer = writer
        self.plan_state: dict[str, Any] = {}  # what the plan was made from (allocation scores), kept with it

    def _block_path(self, index: int) -> Path:
        return self.dir / f"block_{index:04d}.safetensors"

    def load(self) -> dict[str, Any] | None:
        """The saved progress, or None for a fresh run; refuses a checkpoint of another config."""
        progress = read_progress(self.dir)
        if progress is None:
            return None
        if progress.get("fingerprint") != self.fingerprint:
            raise CheckpointMismatchError(
                f"{self.dir} holds a checkpoint of a different configuration; "
                "resume with the same config, or use a new run directory"
            )
        for index in range(progress["completed_blocks"]):  # every block whole before any is restored
            _check_block(self._block_path(index), self.dir)
        self.plan_state = progress.get("plan_state") or {}
        return progress

    def _write_progress(self, plan: dict[str, float], completed: int) -> None:
        state = torch.get_rng_state().tolist()
        files = [self._block_path(i).name for i in range(completed)]  # what clear() may remove
        data = {"fingerprint": self.fingerprint, "plan": plan, "plan_state": self.plan_state,
                "completed_blocks": completed, "rng": state, "files": files}
        write_atomic(self.dir / PROGRESS, lambda p: p.write_text(json.dumps(data)))

    def start(self, plan: dict[str, float], plan_state: dict[str, Any] | None = None) -> None:
        self.plan_state = plan_state or {}
        if self.writer:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._write_progress(plan, 0)
            (self.dir / SCORING).unlink(missing_ok=True)  # the plan holds what scoring was for

    # ------------------------------------------------------------------ scoring passes
    def save_scoring(self, phase: str, completed: int, state: dict[str, torch.Tensor]) -> None:
        """A scoring pass's statistics after its first `completed` blocks (tensors summed over processes)."""
        if not self.writer:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        meta = {"fingerprint": self.fingerprint, "phase": phase, "completed_blocks": str(completed)}
        write_atomic(self.dir / SCORING, lambda p: save_file(tensors, str(p), metadata=meta))

    def load_scoring(self, phase: str) -> tuple[int, dict[str, torch.Tensor]] | None:
        """(completed blocks, statistics) of an interrupted scoring pass `phase` of this run, else None."""
        path = self.dir / SCORING
        if not path.exists():
            return None
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("fingerprint") != self.fingerprint:
                raise CheckpointMismatchError(
                    f"{self.dir} holds a checkpoint of a different configuration; "
                    "resume with the same config, or use a new run directory"
                )
            if meta.get("phase") != phase:
                return None
            return int(meta["completed_blocks"]), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118

    def save_block(
        self, index: int, linears: dict[str, nn.Linear], masks: dict[str, torch.Tensor], plan: dict[str, float]
    ) -> None:
        """The block's pruned weights and masks, then the marker that says the block is done."""
        if not self.writer:
            return
        tensors = {}
        for name, linear in linears.items():
            tensors[f"{name}.weight"] = linear.weight.detach().cpu().contiguous()
            tensors[f"{name}.mask"] = _pack(masks[name])
        write_atomic(self._block_path(index), lambda p: save_file(tensors, str(p)))
        self._write_progress(plan, index + 1)

    def load_block(self, index: int, linears: dict[str, nn.Linear]) -> dict[str, torch.Tensor]:
        """Restore a completed block's pruned weights in place and return its masks."""
        path = self._block_path(index)
        _check_block(path, self.dir)
        tensors = load_file(str(path))
        missing = [f"{name}.weight" for name in linears if f"{name}.weight" not in tensors or f"{name}.mask" not in tensors]
        if missing:
            raise CheckpointCorruptError(f"checkpoint block {path} lacks {missing[0]}; {_START_OVER.format(dir=self.dir)}")
        masks = {}
        for name, linear in linears.items():
            linear.weight.data.copy_(tensors[f"{name}.weight"].to(linear.weight.device))
            masks[name] = _unpack(tensors[f"{name}.mask"], linear.weight)
        return masks

    @staticmethod
    def restore_rng(progress: dict[str, Any]) -> None:
        torch.set_rng_state(torch.tensor(progress["rng"], dtype=torch.uint8))

    def written(self) -> list[str]:
        """The files this checkpoint wrote (as progress.json lists them, progress.json last); [] if none."""
        try:
            progress = json.loads((self.dir / PROGRESS).read_text())
        except (OSError, ValueError):
            return []
        files = progress.get("files") if isinstance(progress, dict) else None
        if not isinstance(files, list):
            return []
        ours = re.compile(r"block_\d{4}\.safetensors")
        return [name for name in files if isinstance(name, str) and ours.fullmatch(name)] + [PROGRESS]

    def clear(self) -> None:
        """Remove the files the checkpoint wrote (and its unfinished temporaries); the folder if then empty.

        progress.json goes last, so a clear cut short still lists what is left.
        """
        if not self.writer or not self.dir.is_dir():
            return
        names = self.written()
        temporary = re.compile(r"\.(block_\d{4}\.safetensors|" + re.escape(PROGRESS) + "|" + re.escape(SCORING)
                               + r")\.\d+\.tmp")
        for path in self.dir.iterdir():
            if (path.name in names and path.name != PROGRESS) or temporary.fullmatch(path.name):
                path.unlink(missing_ok=True)
        if names:
            (self.dir / PROGRESS).unlink(missing_ok=True)
        try:
            os.rmdir(self.dir)
        except OSError:  # something tamp did not write is in it: it stays
            pass
