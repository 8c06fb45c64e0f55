"""Document functions of the tiny colour tasks (lmms-eval loads this file by path, as `utils`).

Each document stores a seed and a colour; the image is drawn on the fly, so the task ships as a few
hundred bytes of JSON and needs no image files, no Hub and no network.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from tamp.eval.tasks import prompted

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 60, 220),
    "yellow": (235, 215, 30),
    "orange": (245, 140, 20),
    "purple": (140, 50, 170),
}
SIDE = 32  # image side in pixels


def square_image(colour: str, seed: int, side: int = SIDE) -> Image.Image:
    """A square of `colour` at a seeded position and size on a white background."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(side // 3, side // 2 + 1))
    x, y = (int(v) for v in rng.integers(0, side - size + 1, size=2))
    pixels = np.full((side, side, 3), 255, dtype=np.uint8)
    pixels[y : y + size, x : x + size] = COLOURS[colour]
    return Image.fromarray(pixels)


def doc_to_visual(doc: dict[str, Any]) -> list[Image.Image]:
    return [square_image(doc["colour"], int(doc["seed"]))]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, str] | None = None) -> str:
    return prompted(doc["question"], lmms_eval_specific_kwargs)


def doc_to_choice(doc: dict[str, Any]) -> list[str]:
    return list(COLOURS)
