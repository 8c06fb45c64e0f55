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

Every block file's SHA-256 is recorded in progress.json when it is written (and each block file
carries the RNG state after it), the scoring file carries a digest of its tensors in its own
metadata: a file damaged on disk with its size intact (a bad sector, a partial overwrite) is found on
resume, named in one warning line, and recomputed: the run rewinds to the first damaged block.
A block or scoring file whose header or size is wrong is refused before any work, as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from tamp.core.io import write_atomic
from tamp.models.disk import naming_path, sha256_file
from tamp.pipeline.checkpoint_files import (
    _START_OVER,
    DIGESTS,
    PROGRESS,
    RNG_AFTER,
    SCORING,
    CheckpointCorruptError,
    CheckpointMismatchError,
    _check_block,
    _digest_problem,
    _recorded_digests,
    check_checkpoint,  # noqa: F401 - the checkpoint's checks, where callers have always found them
    has_checkpoint,  # noqa: F401
    read_progress,
)

log = logging.getLogger("tamp")


def _tensors_digest(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    """SHA-256 of a scoring file's metadata and tensors (names, dtypes, shapes, bytes), in name order."""
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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
        self._digests: dict[str, str] = {}  # block file name -> SHA-256, recorded in progress.json
        self._listed: set[str] = set()  # every block file this checkpoint has written (for clear())
        self._rng_start: list[int] | None = None  # the RNG state before block 0 (a rewind to 0 restores it)

    def block_path(self, index: int) -> Path:
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
        self._digests = _recorded_digests(progress)
        files = progress.get("files")
        self._listed = {name for name in files if isinstance(name, str)} if isinstance(files, list) else set()
        rng_start = progress.get("rng_start")
        self._rng_start = rng_start if isinstance(rng_start, list) else None
        self.plan_state = progress.get("plan_state") or {}
        for index in range(progress["completed_blocks"]):  # every block whole before any is restored
            path = self.block_path(index)
            recorded = self._digests.get(path.name)
            if recorded is None:  # written by a tamp that recorded no digests: headers and sizes only
                _check_block(path, self.dir)
                continue
            problem = _digest_problem(path, recorded)
            if problem is not None:
                log.warning("checkpoint block %s %s; recomputing from block %d (blocks before it are restored "
                            "from %s)", path, problem, index, self.dir)
                return self._rewind(progress, index)
        return progress

    def _rewind(self, progress: dict[str, Any], index: int) -> dict[str, Any]:
        """The progress as it was when block `index` had not yet been pruned: it and the blocks after are redone."""
        rng = self._rng_start if index == 0 else self._rng_after(index - 1)
        if rng is None:  # pragma: no cover - a tamp that records digests also records these
            rng = progress.get("rng")
        self._digests = {k: v for k, v in self._digests.items()
                         if not (k.startswith("block_") and k[6:10].isdigit() and int(k[6:10]) >= index)}
        rewound = {**progress, "completed_blocks": index, "rng": rng}
        if self.writer:  # the marker says what is whole now: a second interruption does not warn again
            self._write_progress({k: float(v) for k, v in progress["plan"].items()}, index, rng)
        return rewound

    def _rng_after(self, index: int) -> list[int] | None:
        """The RNG state block `index`'s file recorded (the state after that block), None if it has none."""
        with safe_open(str(self.block_path(index)), framework="pt") as f:
            text = (f.metadata() or {}).get(RNG_AFTER)
        return list(bytes.fromhex(text)) if isinstance(text, str) else None

    def _write_progress(self, plan: dict[str, float], completed: int, rng: list[int] | None = None) -> None:
        state = torch.get_rng_state().tolist() if rng is None else rng
        names = [self.block_path(i).name for i in range(completed)]
        self._listed |= set(names)  # what clear() may remove: blocks of a rewound run included
        data = {"fingerprint": self.fingerprint, "plan": plan, "plan_state": self.plan_state,
                "completed_blocks": completed, "rng": state, "rng_start": self._rng_start,
                DIGESTS: {name: self._digests[name] for name in names if name in self._digests},
                "files": sorted(self._listed)}
        with naming_path("checkpoint progress file", self.dir / PROGRESS):
            write_atomic(self.dir / PROGRESS, lambda p: p.write_text(json.dumps(data)))

    def start(self, plan: dict[str, float], plan_state: dict[str, Any] | None = None) -> None:
        self.plan_state = plan_state or {}
        self._rng_start = torch.get_rng_state().tolist()
        self._digests, self._listed = {}, set()
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
        meta["digest"] = _tensors_digest(tensors, meta)

        def write(tmp: Path) -> None:
            save_file(tensors, str(tmp), metadata=meta)  # write_atomic gives it a plain file's mode

        with naming_path("checkpoint scoring file", self.dir / SCORING):
            write_atomic(self.dir / SCORING, write)

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
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        recorded = meta.pop("digest", None)
        if recorded is not None and _tensors_digest(tensors, meta) != recorded:
            log.warning("checkpoint scoring file %s does not match the digest recorded when it was written (damaged "
                        "on disk or overwritten); recomputing its %s from block 0", path, phase)
            return None
        return int(meta["completed_blocks"]), tensors

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
        path = self.block_path(index)
        meta = {RNG_AFTER: bytes(torch.get_rng_state().tolist()).hex()}  # a rewind to the next block restores it

        def write(tmp: Path) -> None:
            save_file(tensors, str(tmp), metadata=meta)  # write_atomic gives it a plain file's mode
            self._digests[path.name] = sha256_file(tmp)  # the bytes on disk, read back

        with naming_path("checkpoint block", path):
            write_atomic(path, write)
        self._write_progress(plan, index + 1)

    def load_block(self, index: int, linears: dict[str, nn.Linear]) -> dict[str, torch.Tensor]:
        """Restore a completed block's pruned weights in place and return its masks."""
        path = self.block_path(index)
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
