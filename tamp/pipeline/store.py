"""Per-sample decoder-block inputs, kept on the compute device or offloaded to CPU."""

from __future__ import annotations

from typing import Any

import torch

from tamp.pipeline.transfer import Transfers, move

__all__ = ["ActivationStore", "move"]


class ActivationStore:
    """Hidden states entering the current block plus the block kwargs, one entry per sample.

    With `offload=True` everything lives on CPU and each sample visits the device only while its
    forward runs (through `transfers`, which counts the copies), so device memory holds one block
    and one sample's activations.
    """

    def __init__(self, device: torch.device, offload: bool, transfers: Transfers | None = None) -> None:
        self.compute_device = torch.device(device)
        self.offload = offload
        self.storage_device = torch.device("cpu") if offload else self.compute_device
        self.transfers = transfers or Transfers(self.compute_device)
        self.hidden: list[torch.Tensor] = []
        self.kwargs: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.hidden)

    def _store(self, obj: Any, kind: str) -> Any:
        return self.transfers.to_host(obj, kind) if self.offload else obj

    def append(self, hidden: torch.Tensor, kwargs: dict[str, Any]) -> None:
        self.hidden.append(self._store(hidden.detach(), "hidden"))
        self.kwargs.append(self._store(kwargs, "kwargs"))

    def get(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        if not self.offload:
            return self.hidden[index], self.kwargs[index]
        t = self.transfers
        return t.to_device(self.hidden[index], "hidden"), t.to_device(self.kwargs[index], "kwargs")

    def replace_hidden(self, index: int, hidden: torch.Tensor) -> None:
        self.hidden[index] = self._store(hidden.detach(), "hidden")

    def empty_like(self) -> ActivationStore:
        """A store on the same devices (and transfer count) with no entries."""
        return ActivationStore(self.compute_device, self.offload, self.transfers)

    def copy(self) -> ActivationStore:
        """A store with its own hidden states (kwargs are shared: they never change across blocks)."""
        other = self.empty_like()
        other.hidden = [h.clone() for h in self.hidden]
        other.kwargs = self.kwargs
        return other

    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.hidden)
