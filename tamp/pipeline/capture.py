"""Record what the first decoder block receives, for every calibration sample.

The model runs its own forward (vision/audio towers, projector, embedding merge, rotary or M-RoPE
position embeddings, causal mask); a forward pre-hook on block 0 records the positional args and
every keyword argument, then stops the forward. Replaying `block(hidden, **kwargs)` block by block
therefore reproduces the model's own computation without knowing anything family-specific.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from tamp.data.sample import CalibSample
from tamp.pipeline.store import ActivationStore

_DROPPED_KWARGS = ("past_key_values", "past_key_value", "use_cache", "output_attentions")


class _StopForward(Exception):
    """Raised by the capture hook: nothing after block 0's inputs is needed."""


def capture_block_inputs(
    model: nn.Module,
    first_block: nn.Module,
    samples: Sequence[CalibSample],
    store: ActivationStore,
    progress: Any | None = None,
) -> ActivationStore:
    """Forward each sample (batch 1, no padding) up to block 0 and keep its inputs in `store`."""
    record: dict[str, Any] = {}

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        for key in _DROPPED_KWARGS:
            kwargs.pop(key, None)
        record["hidden"], record["kwargs"] = hidden, kwargs
        raise _StopForward

    handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for sample in samples:
            inputs = store.transfers.to_device(sample.inputs, "inputs")
            try:
                model(**inputs, use_cache=False)
            except _StopForward:
                pass
            else:
                raise RuntimeError("the model's forward never reached its first decoder block")
            hidden = record["hidden"]
            if hidden.shape[-2] != sample.num_tokens:
                raise RuntimeError(
                    f"block 0 saw {hidden.shape[-2]} positions but the sample has {sample.num_tokens} "
                    "modality ids: the adapter's modality ids do not match the model's sequence"
                )
            store.append(hidden, record["kwargs"])
            if progress is not None:
                progress.update(1)
    finally:
        handle.remove()
    return store


def shared_block_inputs(
    shared: Any, key: dict[str, str], samples: Sequence[CalibSample], store: ActivationStore,
    capture: Callable[[], ActivationStore],
) -> ActivationStore:
    """`store` filled from `shared`'s entry of `key` (tamp.pipeline.shared_inputs.InputStore), else by
    `capture()`, whose inputs are then stored for the next run of the key."""
    from tamp.pipeline.shared_inputs import BLOCK_INPUTS, block_inputs_check, store_tree

    tree = shared.fetch(BLOCK_INPUTS, key, lambda: store_tree(capture().hidden, store.kwargs),
                        block_inputs_check(samples))
    if len(store) == 0:  # read from the entry: host tensors, views of the one buffer that was read and checked
        for hidden, kwargs in zip(tree["hidden"], tree["kwargs"], strict=True):
            if store.storage_device.type == "cpu":  # small kwargs of their own: they must not pin the whole buffer
                kwargs = _cloned(kwargs)
            else:
                hidden, kwargs = store.transfers.to_device(hidden, "hidden"), store.transfers.to_device(kwargs, "kwargs")
            store.append(hidden, kwargs)
    return store


def _cloned(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: _cloned(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cloned(v) for v in obj)
    return obj


@torch.no_grad()
def run_block(block: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """Call a decoder block the way the model does and return its hidden-state output."""
    out = block(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out
