"""Stage 0 of a zoo model: pretrain the vision tower on its own images (the toy's stand-in for CLIP).

LLaVA starts from a pretrained CLIP tower; the zoo's tower starts from random weights, and through
the language loss alone it learns colour at once but shape and size only slowly. So before the
LLaVA stage the tower learns, from every patch token, that patch's foreground silhouette (an 8 x 8
mask of the pixels that differ from the image's background, read off the pixels themselves: no
labels): a self-supervised task whose solution encodes shape, size and position in the patch.
"""

from __future__ import annotations

import torch

from tamp.zoo.encode import normalise

FOREGROUND = 24  # summed |RGB - background| above this is foreground (tints are at most 3 x 16)


def silhouettes(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(M, H, W, 3) uint8 -> (M, patches, patch * patch) float masks; pixel (0, 0) is background."""
    m, h, w, _ = images.shape
    background = images[:, :1, :1, :].int()
    fg = ((images.int() - background).abs().sum(-1) > FOREGROUND).float()
    grid = fg.reshape(m, h // patch, patch, w // patch, patch).permute(0, 1, 3, 2, 4)
    return grid.reshape(m, (h // patch) * (w // patch), patch * patch)


def pretrain_vision(tower: torch.nn.Module, images: torch.Tensor, patch: int, steps: int, lr: float,
                    batch_size: int = 64, seed: int = 0) -> float:
    """Train `tower` (a CLIP vision model) to predict each patch's silhouette; returns the last loss."""
    if steps <= 0 or len(images) == 0:
        return float("nan")
    targets = silhouettes(images, patch)
    order = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = torch.nn.Linear(tower.config.hidden_size, patch * patch)
        optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=lr)
        tower.train()
        for _ in range(steps):
            rows = torch.randint(0, len(images), (batch_size,), generator=order)
            tokens = tower(normalise(images[rows]), output_hidden_states=True).hidden_states[-1][:, 1:]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(head(tokens), targets[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return loss.item()
