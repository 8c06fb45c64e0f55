"""Pruning masks beside a saved model, bit-packed: 1 bit per weight instead of torch.save's 8.

`masks.safetensors` holds one uint8 tensor per linear (numpy.packbits of the flattened bool mask,
True where pruned) and, in its metadata, each mask's shape; `load_masks` gives the bool masks back.
The same masks give the same bytes: safetensors orders the metadata of its header at random (a Rust
hash map), so the header is written again with its keys sorted (`_sorted_header`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

MASKS_FILE = "masks.safetensors"


def save_masks(masks: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write the masks packed 8 to a byte; the file is safetensors, loadable without tamp."""
    from safetensors.torch import save

    packed = {
        name: torch.from_numpy(np.packbits(mask.detach().cpu().numpy().astype(bool).reshape(-1)))
        for name, mask in masks.items()
    }
    shapes = {name: list(mask.shape) for name, mask in sorted(masks.items())}
    data = save(packed, metadata={"format": "packbits", "shapes": json.dumps(shapes, sort_keys=True)})
    header, body = _sorted_header(data)
    with Path(path).open("wb") as handle:  # a plain open: the umask's mode, as every other file of the save
        handle.write(header)
        handle.write(body)
    return Path(path)


def _sorted_header(data: bytes) -> tuple[bytes, memoryview]:
    """(length prefix + header with every key sorted, padded to 8 bytes as safetensors pads it, the tensor data)."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text, memoryview(data)[8 + length:]


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
