"""Forward hooks that hand each targeted linear's input and output to an observer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from tamp.pipeline.context import LinearObserver, SampleContext


class LinearTap:
    """Hooks on a block's linears; `ctx` is set by the engine before each sample's forward."""

    def __init__(self, linears: dict[str, nn.Linear], observer: LinearObserver) -> None:
        self.linears = linears
        self.observer = observer
        self.ctx: SampleContext | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str):
        def hook(module: nn.Linear, inputs: tuple, output: torch.Tensor) -> None:
            assert self.ctx is not None, "LinearTap used without a sample context"
            x = inputs[0].reshape(-1, module.in_features)
            z = output.reshape(-1, module.out_features)
            self.observer.observe(name, x, z, self.ctx)

        return hook

    @contextmanager
    def attached(self) -> Iterator[LinearTap]:
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.linears.items()]
        try:
            yield self
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles = []
