"""Run the decoder blocks, final norm and LM head in float32 for a while, then restore them bit-exactly.

Why: a zeroth-order score divides a loss difference by 2 * eps (eps = 1e-3). In bfloat16 (8 bits of
mantissa) both the perturbed weights and every activation after them are rounded far more coarsely
than the change eps causes, so L+ - L- is mostly rounding noise. Upcasting only for the scoring pass
keeps the model's own dtype everywhere else.

Restoring casts each tensor back to the dtype it had: a bfloat16 or float16 value is exactly
representable in float32, so the round trip is exact as long as the scoring pass leaves the weights
equal to their upcast values (it restores them by copy). Tensors that were float32 already (rotary
`inv_freq` buffers, for example) are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from tamp.pipeline.engine import LayerwiseEngine


def cast_floating(obj: Any, dtype: torch.dtype) -> Any:
    """Floating tensors nested in tuples, lists and dicts cast to `dtype`; everything else unchanged."""
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, tuple):
        return tuple(cast_floating(o, dtype) for o in obj)
    if isinstance(obj, list):
        return [cast_floating(o, dtype) for o in obj]
    if isinstance(obj, dict):
        return {k: cast_floating(v, dtype) for k, v in obj.items()}
    return obj


def _tensors(modules: list[nn.Module]) -> list[torch.Tensor]:
    """Parameters and buffers of `modules`, each once (a tied LM head is the embedding's parameter)."""
    seen: dict[int, torch.Tensor] = {}
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            seen.setdefault(id(tensor), tensor)
    return list(seen.values())


def scoring_modules(engine: LayerwiseEngine) -> list[nn.Module]:
    """What a loss from a block's input runs through: the decoder blocks, the final norm, the LM head."""
    return [engine.blocks, engine.adapter.final_norm(), engine.adapter.lm_head()]


@contextmanager
def upcast(modules: list[nn.Module], dtype: torch.dtype = torch.float32) -> Iterator[bool]:
    """Floating parameters and buffers of `modules` in `dtype` inside the block; yields whether any changed."""
    changed = [(t, t.dtype) for t in _tensors(modules) if t.is_floating_point() and t.dtype != dtype]
    for tensor, _ in changed:
        tensor.data = tensor.data.to(dtype)
    try:
        yield bool(changed)
    finally:
        for tensor, original in changed:
            tensor.data = tensor.data.to(original)
