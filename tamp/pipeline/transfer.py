"""The engine's one door between host memory and the compute device, and a count of what crosses it.

Everything the layer-wise engine moves goes through `Transfers`: the model's placement, each
sample's inputs at capture, stored block inputs with offload (to the device for a forward, back to
the host after), decoder blocks visiting the device, per-sample modality ids and labels. The count
(tensors and bytes, each direction) is what offload costs; `benchmarks/bench_offload.py` reports it.

Counting rule: every tensor handed to the door counts, except one already on a (non-CPU) target
device, which `.to` does not copy. On CPU-simulated offload (`device=cpu, offload=True`) the copies
are no-ops but count the same: the numbers are what a GPU run would copy (the GPU node check compares
them with the copies the CUDA profiler sees).

A block that only reads its weights (scoring passes, ECoFLaP's tail, the forward that advances the
store) goes back to the host for free: its host tensors are kept while it visits the device and put
back, so only the way in is a copy. A block that was pruned goes back by copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

HOST = torch.device("cpu")


@dataclass
class TransferCount:
    """Tensors and bytes moved host -> device and device -> host, and how many objects (`moves`) carried them."""

    to_device: int = 0
    to_device_bytes: int = 0
    to_host: int = 0
    to_host_bytes: int = 0
    moves: int = 0  # objects handed to the door (a block, a sample's hidden states, its kwargs ...)

    @property
    def copies(self) -> int:
        return self.to_device + self.to_host

    @property
    def bytes(self) -> int:
        return self.to_device_bytes + self.to_host_bytes

    def add(self, to_device: bool, copies: int, size: int) -> None:
        self.moves += 1
        if to_device:
            self.to_device += copies
            self.to_device_bytes += size
        else:
            self.to_host += copies
            self.to_host_bytes += size

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "copies": self.copies, "bytes": self.bytes}


#: what crosses the door: the model's placement, block visits, capture inputs, stored hidden states
#: and block kwargs, and small per-sample tensors (modality ids, labels)
KINDS = ("model", "block", "inputs", "hidden", "kwargs", "ids")


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def move(obj: Any, device: torch.device | str) -> Any:
    """Tensors nested in tuples, lists and dicts moved to `device`; everything else as it is."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, tuple):
        return tuple(move(o, device) for o in obj)
    if isinstance(obj, list):
        return [move(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: move(v, device) for k, v in obj.items()}
    return obj


class Transfers:
    """Moves between the host and `device`, counted by kind (see the module docstring for what counts)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.count = TransferCount()
        self.kinds: dict[str, TransferCount] = {kind: TransferCount() for kind in KINDS}
        self._resident: dict[int, int] = {}  # id(module) -> nesting depth of its visit to the device

    def _record(self, kind: str, obj: Any, to_device: bool) -> None:
        target = self.device if to_device else HOST
        copies = size = 0
        for tensor in _tensors(obj):
            if tensor.device == target and target.type != "cpu":
                continue
            copies += 1
            size += tensor.numel() * tensor.element_size()
        self.count.add(to_device, copies, size)
        self.kinds[kind].add(to_device, copies, size)

    def to_device(self, obj: Any, kind: str = "ids") -> Any:
        self._record(kind, obj, True)
        return move(obj, self.device)

    def to_host(self, obj: Any, kind: str = "hidden") -> Any:
        self._record(kind, obj, False)
        return move(obj, HOST)

    def module_to_device(self, module: nn.Module, kind: str = "model") -> None:
        """The whole module onto the device (parameters and buffers), counted."""
        self._record(kind, [*module.parameters(), *module.buffers()], True)
        module.to(self.device)

    def summary(self) -> dict[str, dict[str, int]]:
        """{"total": counts, kind: counts, ...}: what results.json and the offload benchmark report."""
        return {"total": self.count.as_dict(), **{k: c.as_dict() for k, c in self.kinds.items() if c.moves}}

    @contextmanager
    def visiting(self, module: nn.Module, writes: bool = True) -> Iterator[nn.Module]:
        """`module` on the device inside the block, back in host memory after; nested visits are free.

        `writes=False` promises the visit leaves the weights as they were: their host tensors are kept
        and put back, so only the way in is a copy.
        """
        key = id(module)
        if key in self._resident:  # already on the device for an enclosing visit
            self._resident[key] += 1
            try:
                yield module
            finally:
                self._resident[key] -= 1
            return
        kept = _host_tensors(module) if not writes else None
        self._resident[key] = 1
        self.module_to_device(module, kind="block")
        try:
            yield module
        finally:
            del self._resident[key]
            if kept is None:
                self._record("block", [*module.parameters(), *module.buffers()], False)
                module.to(HOST)
            else:
                _restore(kept)

    def is_resident(self, module: nn.Module) -> bool:
        return id(module) in self._resident


def _host_tensors(module: nn.Module) -> list[tuple[nn.Module, str, bool, torch.Tensor]]:
    """(owner, name, is_parameter, host tensor) of every parameter and buffer, to put back after a visit."""
    kept = []
    for owner in module.modules():
        for name, param in owner.named_parameters(recurse=False):
            kept.append((owner, name, True, param.data))
        for name, buf in owner.named_buffers(recurse=False):
            kept.append((owner, name, False, buf))
    return kept


def _restore(kept: list[tuple[nn.Module, str, bool, torch.Tensor]]) -> None:
    for owner, name, is_param, tensor in kept:
        if is_param:
            owner._parameters[name].data = tensor  # type: ignore[union-attr]
        else:
            owner._buffers[name] = tensor
