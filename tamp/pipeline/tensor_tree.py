"""Nested tensors and plain values as one safetensors file plus a JSON skeleton, and back.

What a sweep shares between cells (encoded calibration samples, block-0 inputs) is a tree of dicts,
lists, tuples, tensors and plain values (None, bool, int, float, str). `flatten` splits it into the
tensors (safetensors holds them with their dtype, bfloat16 included) and a JSON skeleton that names
each tensor and keeps the rest; `unflatten` rebuilds the same tree. Anything else (a cache object, a
custom class) is `Unstorable`: such a tree is computed each time rather than stored half.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class Unstorable(TypeError):
    """A value in the tree that neither safetensors nor JSON can hold."""


def flatten(tree: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(skeleton, tensors): every tensor moved to the CPU, contiguous, with a storage of its own."""
    tensors: dict[str, torch.Tensor] = {}
    named: dict[int, str] = {}  # the same tensor object twice is stored once
    storages: set[int] = set()

    def own(tensor: torch.Tensor) -> torch.Tensor:
        t = tensor.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        if storage.data_ptr() in storages or storage.nbytes() != t.numel() * t.element_size():
            t = t.clone()  # a view into a larger or shared buffer: safetensors wants each tensor alone
        storages.add(t.untyped_storage().data_ptr())
        return t

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, torch.Tensor):
            if id(node) not in named:
                named[id(node)] = f"t{len(tensors)}"
                tensors[named[id(node)]] = own(node)
            return {"t": named[id(node)]}
        if node is None or isinstance(node, (bool, int, float, str)):
            return {"v": node}
        if isinstance(node, dict):
            if not all(isinstance(k, str) for k in node):
                raise Unstorable(f"{where}: a dict with non-string keys")
            return {"d": {k: walk(v, f"{where}.{k}") for k, v in node.items()}}
        if isinstance(node, (list, tuple)):
            return {"l" if isinstance(node, list) else "u": [walk(v, f"{where}[{i}]") for i, v in enumerate(node)]}
        raise Unstorable(f"{where}: a {type(node).__module__}.{type(node).__qualname__}")

    return walk(tree, "root"), tensors


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The tree `flatten` split; a skeleton that does not fit `tensors` is a ValueError."""
    if not isinstance(skeleton, dict) or len(skeleton) != 1:
        raise ValueError(f"a skeleton node must be one tagged value, got {str(skeleton)[:80]}")
    (tag, value), = skeleton.items()
    if tag == "t":
        if value not in tensors:
            raise ValueError(f"the skeleton names tensor {value!r}, which the file lacks")
        return tensors[value]
    if tag == "v":
        if not (value is None or isinstance(value, (bool, int, float, str))):
            raise ValueError(f"a plain value of type {type(value).__name__}")
        return value
    if tag == "d" and isinstance(value, dict):
        return {k: unflatten(v, tensors) for k, v in value.items()}
    if tag in ("l", "u") and isinstance(value, list):
        items = [unflatten(v, tensors) for v in value]
        return items if tag == "l" else tuple(items)
    raise ValueError(f"unknown skeleton tag {tag!r}")


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def tensors_from_buffer(buffer: bytearray) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file read whole into `buffer`, as views of it (no copy).

    The caller has checked the buffer's digest: loading from the very bytes that were checked leaves no
    moment in which the file could change between the check and the load (as reading it again would).
    """
    import json

    base = torch.frombuffer(buffer, dtype=torch.uint8) if buffer else torch.empty(0, dtype=torch.uint8)
    length = int.from_bytes(bytes(buffer[:8]), "little")
    if len(buffer) < 8 or length > len(buffer) - 8:
        raise ValueError("not a safetensors file (header past its end)")
    header = json.loads(bytes(buffer[8:8 + length]))
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"tensor {name!r} has dtype {info['dtype']}, which tamp does not store")
        start, end = (8 + length + int(x) for x in info["data_offsets"])
        shape = [int(x) for x in info["shape"]]
        size = torch.empty(0, dtype=dtype).element_size()
        if end > len(buffer) or end - start != size * math.prod(shape):
            raise ValueError(f"tensor {name!r}'s byte range does not fit its shape")
        raw = base[start:end]
        if start % size:  # not aligned for a view of this dtype: a copy
            raw = raw.clone()
        out[name] = raw.view(dtype).reshape(shape) if end > start else torch.empty(shape, dtype=dtype)
    return out
