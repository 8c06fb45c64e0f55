"""Zoo records -> padded training tensors, in bulk, with the same ids and labels as the llava adapter.

`FamilyAdapter.encode` runs the processor three times per conversation (to find the answer span),
which is right for 128 calibration samples and too slow for 40k training items. Here every record
is rendered once with the chat template (prompt with the generation prefix, and the whole
conversation), tokenised in one batch call with the image placeholder already expanded as the
processor expands it, and labelled from the prompt's length on; images are decoded once into a
uint8 array. Per batch, a LLaVA-1.5 zoo model's images are normalised exactly like its CLIP image
processor (rescale, normalise); a LLaVA-NeXT model's go through its own image processor (base view
and tiles; 20 ms for 64 images). tests/test_zoo_e2e.py checks both against the adapter on real records.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tamp.data.conversations import record_from_dict, to_messages
from tamp.zoo.model import CLIP_MEAN, CLIP_STD
from tamp.zoo.tasks import IMAGE_TOKEN

IGNORE = -100
#: (B, H, W, 3) uint8 images -> the model's image inputs (pixel_values, and image_sizes for LLaVA-NeXT)
PixelFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class EncodedSplit:
    """A split as tensors: ids/labels right-padded to the longest item; image_index -1 for text-only."""

    input_ids: torch.Tensor  # (N, L) long
    labels: torch.Tensor  # (N, L) long, IGNORE outside the answer (and its </s>)
    lengths: torch.Tensor  # (N,) long
    image_index: torch.Tensor  # (N,) long, row of `images` or -1
    images: torch.Tensor  # (M, H, W, 3) uint8
    tasks: list[str]
    answers: list[str]
    layouts: list[dict] | None = None  # per row of `images`: its objects or bars (Item.layout)
    templates: list[str] | None = None  # per item: the question template (the curriculum selects by it)
    pixels: PixelFn | None = None  # None: `normalise` (a LLaVA-1.5 zoo model's CLIP processor)

    def __len__(self) -> int:
        return len(self.tasks)

    def batch(self, rows: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
        """Model inputs for `rows`, trimmed to their longest item (images in row order)."""
        width = int(self.lengths[rows].max())
        ids = self.input_ids[rows, :width]
        out = {
            "input_ids": ids,
            "attention_mask": (torch.arange(width)[None, :] < self.lengths[rows, None]).long(),
            "labels": self.labels[rows, :width],
        }
        which = self.image_index[rows]
        which = which[which >= 0]
        if which.numel():
            images = self.images[which]
            out.update(self.pixels(images) if self.pixels else {"pixel_values": normalise(images)})
        return out


_MEAN = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(CLIP_STD).view(1, 3, 1, 1)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32, as CLIPImageProcessor(do_resize=False, do_center_crop=False)."""
    x = images.permute(0, 3, 1, 2).float() * (1 / 255)
    return (x - _MEAN) / _STD


def render_pairs(records: list[dict], tokenizer) -> tuple[list[str], list[str]]:
    """(prompt with the assistant prefix, whole conversation) per record, rendered by the chat template."""
    prompts, fulls = [], []
    for i, raw in enumerate(records):
        record = record_from_dict(raw, i)
        messages = to_messages(record)
        prompts.append(tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True))
        fulls.append(tokenizer.apply_chat_template(messages[:2], tokenize=False))
    return prompts, fulls


def image_processor_pixels(image_processor) -> PixelFn:
    """A PixelFn running a (LLaVA-NeXT) image processor on a batch, as the processor does per prompt."""

    def pixels(images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = image_processor(images=list(images.permute(0, 3, 1, 2)), return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "image_sizes": out["image_sizes"]}

    return pixels


def encode_records(records: list[dict], root: Path, tokenizer, image_seq_length: int,
                   pixels: PixelFn | None = None) -> EncodedSplit:
    """Tokenise and label `records` (image paths relative to `root`); one answer turn per record.

    `image_seq_length`: placeholder tokens per image (LLaVA-NeXT: base view, tiles and newlines).
    """
    prompts, fulls = render_pairs(records, tokenizer)
    expand = IMAGE_TOKEN * image_seq_length
    enc = tokenizer([t.replace(IMAGE_TOKEN, expand) for t in prompts + fulls], add_special_tokens=False)
    ids = enc["input_ids"]
    n = len(records)
    width = max(len(x) for x in ids[n:])
    input_ids = torch.full((n, width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE, dtype=torch.long)
    lengths = torch.zeros(n, dtype=torch.long)
    for i in range(n):
        prompt, full = ids[i], ids[n + i]
        if full[: len(prompt)] != prompt:
            raise ValueError(f"record '{records[i]['id']}': the prompt's tokens are not a prefix of the answer's")
        input_ids[i, : len(full)] = torch.tensor(full)
        labels[i, len(prompt) : len(full)] = torch.tensor(full[len(prompt) :])
        lengths[i] = len(full)
    image_index = torch.full((n,), -1, dtype=torch.long)
    arrays, layouts = [], []
    for i, raw in enumerate(records):
        if raw.get("image"):
            image_index[i] = len(arrays)
            layouts.append({k: raw[k] for k in ("objects", "bars") if k in raw})
            with Image.open(root / raw["image"]) as img:
                arrays.append(np.asarray(img.convert("RGB")))
    images = torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros((0, 1, 1, 3), dtype=torch.uint8)
    return EncodedSplit(input_ids, labels, lengths, image_index, images,
                        [r["task"] for r in records], [r["answer"] for r in records], layouts,
                        [r.get("template", r["task"]) for r in records], pixels)


def encode_file(path: Path, tokenizer, image_seq_length: int, pixels: PixelFn | None = None) -> EncodedSplit:
    return encode_records(json.loads(Path(path).read_text()), Path(path).parent, tokenizer, image_seq_length,
                          pixels)


def token_stats(data: EncodedSplit, image_token_id: int) -> dict[str, float]:
    """Sample lengths and image-token shares of a split (whole conversations: prompt, answer and </s>)."""
    image = (data.input_ids == image_token_id).sum(dim=1).double()
    lengths = data.lengths.double()
    share = image / lengths
    return {"samples": len(data), "tokens_mean": lengths.mean().item(), "tokens_min": int(lengths.min()),
            "tokens_max": int(lengths.max()), "image_tokens_mean": image.mean().item(),
            "image_share_mean": share.mean().item(), "image_share_min": share.min().item()}

