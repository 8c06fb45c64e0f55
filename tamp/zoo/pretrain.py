"""Stage 0 of a zoo model: pretrain the vision tower on its own images (the toy's stand-in for CLIP).

LLaVA starts from a pretrained CLIP tower; the zoo's tower starts from random weights, and through
the language loss alone it learns colour at once but shape and size only slowly. So before the
LLaVA stage the tower learns, from every patch token: the patch's foreground silhouette (an 8 x 8
mask of the pixels that differ from the background, read off the pixels), the silhouette's mean
colour, and, where the build recorded the image's layout, the named shape, colour and size of what
the patch holds (the scene spec the image was rendered from, as CLIP learns names from captions),
and its own grid position (which a token must carry for "which column is ...?").
The decoder then learns to route and answer instead of to see. A LLaVA-NeXT zoo model's tower learns on
the tiles of its images (what it reads at full resolution, where every object lies inside one patch);
the base view (the whole image resized to one tile) it meets first in the LLaVA stage, frozen.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from tamp.zoo.encode import EncodedSplit, normalise
from tamp.zoo.recipe import ModelRecipe, TrainRecipe
from tamp.zoo.render import BASELINE, SLOT, UNIT
from tamp.zoo.world import COLOR_NAMES, SHAPES, SIZES

#: per-patch classes; index 0 is "nothing here"
PATCH_SHAPES: tuple[str, ...] = ("none", *SHAPES, "bar")
PATCH_COLORS: tuple[str, ...] = ("none", *COLOR_NAMES)
PATCH_SIZES: tuple[str, ...] = ("none", *SIZES)

FOREGROUND = 24  # summed |RGB - background| above this is foreground (tints are at most 3 x 16)
COLOUR_WEIGHT = 5.0  # the colour term's weight next to the mask's (keeps colour in the features)


def _patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(M, H, W, C) -> (M, patches, patch * patch, C) in the tower's row-major patch order."""
    m, h, w, c = x.shape
    grid = x.reshape(m, h // patch, patch, w // patch, patch, c).permute(0, 1, 3, 2, 4, 5)
    return grid.reshape(m, (h // patch) * (w // patch), patch * patch, c)


def targets(images: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patch: the foreground mask (M, P, patch^2) and the foreground's mean colour in [0, 1] (M, P, 3).

    Pixel (0, 0) is background in every zoo image (grid cells and bars keep a margin).
    """
    background = images[:, :1, :1, :].int()
    fg = ((images.int() - background).abs().sum(-1, keepdim=True) > FOREGROUND).float()
    mask, rgb = _patches(fg, patch), _patches(images.float() / 255, patch)
    colour = (mask * rgb).sum(2) / mask.sum(2).clamp(min=1)
    return mask.squeeze(-1), colour


def patch_labels(layouts: list[dict], image_size: int, patch: int, width: int | None = None) -> torch.Tensor:
    """(M, patches, 3) long: shape, colour and size class of what each patch holds (0: nothing).

    Objects name their patch (row, col): in the first world a grid cell is the patch of the same
    row and column (see tamp.zoo.render), the panel world writes patch coordinates. A bar covers
    one patch column from its top down to the axis: the panel world gives its column and top and
    bottom patch rows, the first world's slot and height are converted with its chart geometry.
    `image_size` is the height, `width` the width when the image is not square.
    """
    side = image_size // patch
    across = (width or image_size) // patch
    rows: list[int] = []
    cells: list[int] = []
    values: list[tuple[int, int, int]] = []
    for m, layout in enumerate(layouts):
        for o in layout.get("objects", ()):
            rows.append(m)
            cells.append(o["row"] * across + o["col"])
            values.append((PATCH_SHAPES.index(o["shape"]), PATCH_COLORS.index(o["color"]), PATCH_SIZES.index(o["size"])))
        for b in layout.get("bars", ()):
            if "top" in b:
                first, last, col = b["top"], b["bottom"], b["col"]
            else:
                top, col = BASELINE - b["height"] * UNIT, (b["slot"] * SLOT) // patch
                first, last = top // patch, (BASELINE - 1) // patch
            for row in range(first, last + 1):
                rows.append(m)
                cells.append(row * across + col)
                values.append((PATCH_SHAPES.index("bar"), PATCH_COLORS.index(b["color"]), 0))
    out = torch.zeros(len(layouts), side * across, 3, dtype=torch.long)
    if values:  # one indexed write instead of a small tensor per object
        out[torch.tensor(rows), torch.tensor(cells)] = torch.tensor(values)
    return out


def split_tiles(images: torch.Tensor, labels: torch.Tensor | None, tile: int,
                patch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(M, H, W, 3) images and their (M, patches, 3) labels -> the same per tile of side `tile`, row-major.

    What LLaVA-NeXT's processor cuts an image into (the tiles; not the resized base view).
    """
    m, h, w, c = images.shape
    rows, cols = h // tile, w // tile
    tiles = images.reshape(m, rows, tile, cols, tile, c).permute(0, 1, 3, 2, 4, 5).reshape(m * rows * cols, tile, tile, c)
    if labels is None:
        return tiles, None
    side = tile // patch
    grid = labels.reshape(m, rows, side, cols, side, labels.shape[-1]).permute(0, 1, 3, 2, 4, 5)
    return tiles, grid.reshape(m * rows * cols, side * side, labels.shape[-1])


def pretrain_vision(tower: torch.nn.Module, images: torch.Tensor, patch: int, steps: int, lr: float,
                    batch_size: int = 64, seed: int = 0, labels: torch.Tensor | None = None) -> float:
    """Train `tower` (a CLIP vision model) on the per-patch targets of `images` (tower-sized); returns the last loss.

    With `labels` (`patch_labels`) the patches' shape / colour / size classes are learned too (named
    classes make the features the decoder reads nearly one-hot, so it learns to route instead of to see).
    """
    if steps <= 0 or len(images) == 0:
        return float("nan")
    masks, colours = targets(images, patch)
    n_cls = (len(PATCH_SHAPES), len(PATCH_COLORS), len(PATCH_SIZES)) if labels is not None else (0, 0, 0)
    patches = masks.shape[1]
    where = torch.arange(patches).repeat(batch_size)  # each token's own patch index: keeps position in the features
    order = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = torch.nn.Linear(tower.config.hidden_size, patch * patch + 3 + patches + sum(n_cls))
        optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=lr)
        tower.train()
        for _ in range(steps):
            rows = torch.randint(0, len(images), (batch_size,), generator=order)
            tokens = tower(normalise(images[rows]), output_hidden_states=True).hidden_states[-1][:, 1:]
            out = head(tokens)
            area = patch * patch
            loss = F.binary_cross_entropy_with_logits(out[..., :area], masks[rows]) + COLOUR_WEIGHT * F.mse_loss(
                out[..., area : area + 3], colours[rows])
            position = out[..., area + 3 : area + 3 + patches]
            loss = loss + F.cross_entropy(position.reshape(-1, patches), where)
            if labels is not None:
                logits = out[..., area + 3 + patches :].split(n_cls, dim=-1)
                for k, part in enumerate(logits):
                    loss = loss + F.cross_entropy(part.reshape(-1, part.shape[-1]), labels[rows, :, k].reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return loss.item()


def pretrain_tower(tower: torch.nn.Module, data: EncodedSplit, m: ModelRecipe, r: TrainRecipe) -> dict[str, Any]:
    """Stage 0 on a training split's images: on whole images (LLaVA-1.5) or on their tiles (LLaVA-NeXT).

    The first `r.vision_pretrain_images` images (all when 0) with their layouts' patch labels; returns the
    stage's record (steps, last loss, seconds).
    """
    start = time.perf_counter()
    count = r.vision_pretrain_images or len(data.images)
    images, layouts = data.images[:count], (data.layouts or [])[:count]
    labels = patch_labels(layouts, images.shape[1], m.patch_size, images.shape[2])
    if m.family == "llava_next":  # the tower reads tiles (the base view is the whole image resized)
        images, labels = split_tiles(images, labels, m.image_size, m.patch_size)
    loss = pretrain_vision(tower, images, m.patch_size, r.vision_pretrain_steps, r.vision_pretrain_lr,
                           r.batch_size, r.seed, labels)
    return {"steps": r.vision_pretrain_steps, "final_loss": loss, "seconds": time.perf_counter() - start}

