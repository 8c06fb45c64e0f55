"""Models that accelerate dispatched with a `device_map`: which devices they span, and the refusal to prune them.

`from_pretrained(..., device_map="auto")` may spread a model over several GPUs or keep some modules
in CPU memory or on disk (their weights on the meta device, loaded by hooks at each forward). The
pipeline moves blocks between the host and the device itself (`runner.offload=true`), which such a
model forbids ("You can't move a model that has some modules offloaded"), and pruning a weight that
a hook reloads from disk would be lost. So tamp refuses such a model in one line before any work.
"""

from __future__ import annotations

from typing import Any

from torch import nn

#: devices of an hf_device_map whose weights are not in memory where the module runs
_OFFLOADED = ("disk", "meta")


def dispatched_devices(model: nn.Module) -> list[str]:
    """The devices of the model's `hf_device_map` (sorted strings: cuda:0, cpu, disk); empty without one."""
    device_map: dict[str, Any] | None = getattr(model, "hf_device_map", None)
    if not device_map:
        return []
    return sorted({f"cuda:{d}" if isinstance(d, int) else str(d) for d in device_map.values()})


def is_dispatched(model: nn.Module) -> bool:
    """Spread over several devices, or with modules offloaded to disk, by a device_map."""
    devices = dispatched_devices(model)
    return len(devices) > 1 or any(d in _OFFLOADED for d in devices)


def refuse_dispatched(model: nn.Module) -> None:
    """One line, before any work, for a model tamp cannot prune block by block where it is."""
    if is_dispatched(model):
        raise ValueError(
            f"the model was loaded with a device_map over {', '.join(dispatched_devices(model))} "
            "(hf_device_map): tamp moves decoder blocks itself; load the model without device_map "
            "(into CPU memory) and prune with offload=True (runner.offload=true) to hold one block at a "
            "time on the device"
        )
