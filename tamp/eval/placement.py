"""Where a model is evaluated: decided from the runner's settings, applied to the whole model, checked.

A pruned model comes out of the pipeline wherever the pruning left it: on the device without offload,
split (towers, embeddings and head on the device, decoder blocks in CPU memory) with offload; a dense
model has not moved from where it was loaded (CPU). lmms-eval's `generate()` needs one device, so the
runner decides it (`runner.eval_device`; `auto` is the process's own Fabric device, `cuda:LOCAL_RANK`
on a GPU node), moves the whole model there and records it in results.json. A model dispatched by
`device_map` over several devices (an `hf_device_map` naming more than one) is left as accelerate
placed it: its hooks move activations between the devices.
"""

from __future__ import annotations

import torch
from torch import nn

from tamp.models.dispatch import is_dispatched

EVAL_DEVICES_HELP = "auto (the process's Fabric device), cpu, cuda or cuda:N"


def check_eval_device(setting: str) -> None:
    """One line for a value `runner.eval_device` cannot take (CUDA availability is the runner check's)."""
    if setting in ("auto", "cpu", "cuda"):
        return
    if setting.startswith("cuda:") and setting[5:].isdigit():
        return
    raise ValueError(f"runner.eval_device='{setting}' is not valid; valid: {EVAL_DEVICES_HELP}")


def eval_device(setting: str, fabric_device: torch.device | str) -> torch.device:
    """The device this process evaluates on: `auto` is the Fabric device; `cuda` is this rank's GPU."""
    check_eval_device(setting)
    world = torch.device(fabric_device)
    if setting == "auto":
        return world
    if setting == "cuda":  # each rank of a multi-GPU world its own GPU, one GPU alone cuda:0
        return world if world.type == "cuda" else torch.device("cuda", 0)
    return torch.device(setting)


def model_devices(model: nn.Module) -> set[torch.device]:
    """The devices of the model's parameters and buffers."""
    return {t.device for t in (*model.parameters(), *model.buffers())}


def place_for_eval(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """Move the whole model to `device` (None: where it is, if that is one device); return the device.

    A dispatched model stays as dispatched (its input device is where its embeddings are). Anything
    else on more than one device after this is an error naming the devices, before any generate().
    """
    if is_dispatched(model):
        return model.get_input_embeddings().weight.device
    if device is not None:
        model.to(torch.device(device))
    found = model_devices(model)
    if len(found) != 1:
        names = ", ".join(sorted(str(d) for d in found))
        raise ValueError(
            f"the model's parameters are on {names}: evaluation needs one device; "
            f"set runner.eval_device ({EVAL_DEVICES_HELP}) or pass device= to move the whole model"
        )
    return next(iter(found))
