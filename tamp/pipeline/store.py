"""Per-sample decoder-block inputs, kept on the compute device or offloaded to CPU."""

from __future__ import annotations

from typing import Any

import torch


def move(obj: Any, device: torch.device | str) -> Any:
    """Move tensors nested in tuples, lists and dicts; leave everything else as it is."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, tuple):
        return tuple(move(o, device) for o in obj)
    if isinstance(obj, list):
        return [move(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: move(v, device) for k, v in obj.items()}
    return obj


class ActivationStore:
    """Hidden states entering the current block plus the block kwargs, one entry per sample.

    With `offload=True` everything lives on CPU and each sample visits the device only while its
    forward runs, so device memory holds one block and one sample's activations.
    """

    def __init__(self, device: torch.device, offload: bool) -> None:
        self.compute_device = torch.device(device)
        self.storage_device = torch.device("cpu") if offload else self.compute_device
        self.hidden: list[torch.Tensor] = []
        self.kwargs: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.hidden)

    def append(self, hidden: torch.Tensor, kwargs: dict[str, Any]) -> None:
        self.hidden.append(hidden.detach().to(self.storage_device))
        self.kwargs.append(move(kwargs, self.storage_device))

    def get(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return move(self.hidden[index], self.compute_device), move(self.kwargs[index], self.compute_device)

    def replace_hidden(self, index: int, hidden: torch.Tensor) -> None:
        self.hidden[index] = hidden.detach().to(self.storage_device)

    def copy(self) -> ActivationStore:
        """A store with its own hidden states (kwargs are shared: they never change across blocks)."""
        other = ActivationStore(self.compute_device, self.storage_device.type == "cpu")
        other.storage_device = self.storage_device
        other.hidden = [h.clone() for h in self.hidden]
        other.kwargs = self.kwargs
        return other

    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.hidden)
