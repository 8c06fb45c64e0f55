"""Start a zoo model from another zoo model's trained weights (a recipe's `train.init`).

LLaVA-NeXT was not trained from nothing: it reuses LLaVA-1.5's recipe, vision tower and language
model. The zoo's default LLaVA-NeXT does the same at toy scale: its tower, projector and decoder
start as the trained `v1` LLaVA-1.5's (same sizes), so the LLaVA stage teaches it only what is new
(six tiles, a base view and image-newline tokens instead of one 16-patch image). From random
weights the same model had not learned its questions after 40 minutes of training; started from v1
it learns them in minutes.

Parameters are matched by name. The two vocabularies differ (each world has its own word list), so
the token embeddings and the output head are copied row by row, by token string; a word the source
never saw keeps its seeded random row, as does LLaVA-NeXT's `image_newline` (LLaVA-1.5 has none).

The decoder's MLP may be wider than the source's (v1's 352 intermediate units become 384, so that a
block's linears share a 1/128 sparsity grid and block-wise allocations are not all rounded to the
target; tamp.sparsity.allocate.snap). The source's units are copied into the first rows of
gate_proj / up_proj and the first columns of down_proj; the new units keep their seeded input rows
and get zero output columns, so the started model computes exactly what the source computed (as in
Net2Net's function-preserving widening) and training puts the new units to use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers as tf

#: parameters with one row per token id
VOCAB_PARAMS = ("model.language_model.embed_tokens.weight", "lm_head.weight")
#: the decoder MLP's linears, by the dimension that counts its intermediate units
MLP_UNITS = {"mlp.gate_proj.weight": 0, "mlp.up_proj.weight": 0, "mlp.down_proj.weight": 1}


def _widened(name: str, theirs: torch.Tensor, ours: torch.Tensor) -> torch.Tensor | None:
    """The source's decoder MLP weight inside the wider one (new units: seeded inputs, zero outputs), or None."""
    dim = next((d for suffix, d in MLP_UNITS.items() if name.startswith("model.language_model.") and
                name.endswith(suffix)), None)
    if dim is None or theirs.dim() != 2 or theirs.shape[1 - dim] != ours.shape[1 - dim] or \
            theirs.shape[dim] > ours.shape[dim]:
        return None
    out = ours.clone()
    if dim == 1:  # down_proj: the new units' outputs start at zero
        out[:, theirs.shape[1]:] = 0
        out[:, : theirs.shape[1]] = theirs
    else:
        out[: theirs.shape[0]] = theirs
    return out


def warm_start(model: torch.nn.Module, tokenizer: tf.PreTrainedTokenizerBase, source: Path) -> dict[str, Any]:
    """Copy a saved zoo model's weights into `model` (in place); returns what was copied and what stays new.

    Raises ValueError naming the parameter when the two models' sizes differ other than by a wider
    decoder MLP, so a mismatch never trains from a half-copied start.
    """
    src_model = tf.AutoModelForImageTextToText.from_pretrained(str(source), dtype=torch.float32)
    src_vocab = tf.AutoTokenizer.from_pretrained(str(source)).get_vocab()
    theirs, ours = src_model.state_dict(), model.state_dict()
    unused = sorted(set(theirs) - set(ours))
    if unused:
        raise ValueError(f"zoo warm start from {source}: its parameter '{unused[0]}' has no place in the new model "
                         f"({len(unused)} such); the init recipe must be a zoo model of the same layout")
    copied: dict[str, torch.Tensor] = {}
    widened: dict[str, tuple[int, ...]] = {}
    for name, tensor in ours.items():
        if name not in theirs or name in VOCAB_PARAMS:
            continue
        if theirs[name].shape != tensor.shape:
            wide = _widened(name, theirs[name], tensor)
            if wide is None:
                raise ValueError(f"zoo warm start from {source}: '{name}' is {tuple(theirs[name].shape)} there and "
                                 f"{tuple(tensor.shape)} here; give both recipes the same model sizes (only the "
                                 "decoder's intermediate size may grow)")
            widened[name] = tuple(theirs[name].shape)
            copied[name] = wide
            continue
        copied[name] = theirs[name]
    shared = {token: i for token, i in tokenizer.get_vocab().items() if token in src_vocab}
    rows = torch.tensor(sorted(shared.values()))
    src_rows = torch.tensor([src_vocab[t] for t, _ in sorted(shared.items(), key=lambda kv: kv[1])])
    for name in VOCAB_PARAMS:
        if theirs[name].shape[1:] != ours[name].shape[1:]:
            raise ValueError(f"zoo warm start from {source}: '{name}' rows are {theirs[name].shape[1]} wide there and "
                             f"{ours[name].shape[1]} here; give both recipes the same model sizes")
        table = ours[name].clone()
        table[rows] = theirs[name][src_rows]
        copied[name] = table
    model.load_state_dict(copied, strict=False)
    fresh = sorted(set(ours) - set(copied))
    new_tokens = sorted(set(tokenizer.get_vocab()) - set(shared))
    return {"copied": len(copied), "fresh": fresh, "new_tokens": new_tokens, "widened": len(widened)}
