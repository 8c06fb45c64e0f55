"""Pruning masks beside a saved model, bit-packed: 1 bit per weight instead of torch.save's 8.

`masks.safetensors` holds one uint8 tensor per linear (numpy.packbits of the flattened bool mask,
True where pruned) and, in its metadata, each mask's shape; `load_masks` gives the bool masks back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

MASKS_FILE = "masks.safetensors"


def save_masks(masks: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write the masks packed 8 to a byte; the file is safetensors, loadable without tamp."""
    from safetensors.torch import save_file

    packed = {
        name: torch.from_numpy(np.packbits(mask.detach().cpu().numpy().astype(bool).reshape(-1)))
        for name, mask in masks.items()
    }
    shapes = {name: list(mask.shape) for name, mask in masks.items()}
    save_file(packed, str(path), metadata={"format": "packbits", "shapes": json.dumps(shapes)})
    return Path(path)


def load_masks(path: str | Path) -> dict[str, torch.Tensor]:
    """{linear name: bool mask shaped like its weight, True where pruned}."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        shapes = json.loads(f.metadata()["shapes"])
        out = {}
        for name, shape in shapes.items():
            numel = int(np.prod(shape))
            bits = np.unpackbits(f.get_tensor(name).numpy())[:numel]
            out[name] = torch.from_numpy(bits.astype(bool)).reshape(shape)
    return out
