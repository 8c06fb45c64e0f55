"""Nested tensors and plain values as one safetensors file plus a JSON skeleton, and back.

What a sweep shares between cells (encoded calibration samples, block-0 inputs) is a tree of dicts,
lists, tuples, tensors and plain values (None, bool, int, float, str). `flatten` splits it into the
tensors (safetensors holds them with their dtype, bfloat16 included) and a JSON skeleton that names
each tensor and keeps the rest; `unflatten` rebuilds the same tree. Anything else (a cache object, a
custom class) is `Unstorable`: such a tree is computed each time rather than stored half.
"""

from __future__ import annotations

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
