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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers as tf

#: parameters with one row per token id
VOCAB_PARAMS = ("model.language_model.embed_tokens.weight", "lm_head.weight")


def warm_start(model: torch.nn.Module, tokenizer: tf.PreTrainedTokenizerBase, source: Path) -> dict[str, Any]:
    """Copy a saved zoo model's weights into `model` (in place); returns what was copied and what stays new.

    Raises ValueError naming the parameter when the two models' sizes differ (the recipes'
    ModelRecipe sizes must match), so a mismatch never trains from a half-copied start.
    """
    src_model = tf.AutoModelForImageTextToText.from_pretrained(str(source), dtype=torch.float32)
    src_vocab = tf.AutoTokenizer.from_pretrained(str(source)).get_vocab()
    theirs, ours = src_model.state_dict(), model.state_dict()
    unused = sorted(set(theirs) - set(ours))
    if unused:
        raise ValueError(f"zoo warm start from {source}: its parameter '{unused[0]}' has no place in the new model "
                         f"({len(unused)} such); the init recipe must be a zoo model of the same layout")
    copied: dict[str, torch.Tensor] = {}
    for name, tensor in ours.items():
        if name not in theirs or name in VOCAB_PARAMS:
            continue
        if theirs[name].shape != tensor.shape:
            raise ValueError(f"zoo warm start from {source}: '{name}' is {tuple(theirs[name].shape)} there and "
                             f"{tuple(tensor.shape)} here; give both recipes the same model sizes")
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
    return {"copied": len(copied), "fresh": fresh, "new_tokens": new_tokens}
