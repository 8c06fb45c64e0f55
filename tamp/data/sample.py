"""One calibration sample as the pipeline consumes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tamp.core.registries import lazy_module

if TYPE_CHECKING:
    import torch
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    torch = lazy_module("torch")

TEXT, IMAGE, VIDEO, AUDIO = 0, 1, 2, 3
MODALITY_NAMES = {TEXT: "text", IMAGE: "image", VIDEO: "video", AUDIO: "audio"}
MODALITY_CODES = {name: code for code, name in MODALITY_NAMES.items()}
#: `meta` key of a sample's position in the whole calibration set (set when a process takes its share)
INDEX_KEY = "index"


#: the label of a position the loss does not count (the prompt; HF's convention)
IGNORE_INDEX = -100

@dataclass
class CalibSample:
    """Processor outputs for one conversation, batch size 1, no padding.

    `inputs` is what the model's forward takes (input_ids [1, T], attention_mask, pixel_values,
    image_grid_thw, input_features, ...); `modality_ids` [T] holds one modality code per position
    of the decoder sequence; `labels` [1, T] are the answer tokens with the prompt set to -100.
    """

    inputs: dict[str, torch.Tensor]
    modality_ids: torch.Tensor
    labels: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return int(self.modality_ids.numel())

    def modality_counts(self) -> dict[str, int]:
        codes, counts = torch.unique(self.modality_ids, return_counts=True)
        return {MODALITY_NAMES[int(c)]: int(n) for c, n in zip(codes, counts, strict=True)}


def global_index(sample: CalibSample, position: int) -> int:
    """The sample's position in the whole calibration set; `position` (in this list) when unsharded.

    Seeded draws and sample subsets use it, so they do not depend on how many processes share the set.
    """
    return int(sample.meta.get(INDEX_KEY, position))
