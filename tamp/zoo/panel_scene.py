"""The panel world's images: 64 x 96 pictures made of 2 x 3 panels, one LLaVA-NeXT tile per panel.

The zoo's default model is a LLaVA-NeXT whose any-resolution processor cuts a 64 x 96 image into
six 32 x 32 tiles (plus the whole image shrunk to one 32 x 32 base view), each read by the vision
tower as 4 x 4 patches of 8 x 8 pixels: 16 base tokens + 8 rows of 12 tile tokens, each row ended
by an image-newline token, 120 image tokens per image (LLaVA-NeXT's own layout at a toy scale).
Every panel is the first world's 3 x 3 scene grid (tamp.zoo.render: cell centres 4, 12, 20, so an
object lies inside one patch of its tile); the scene's cells are numbered globally, 6 rows x 9
columns. Charts span the whole image: up to 6 bars in 12 one-patch-wide slots, standing on an axis
in the bottom pixel row, 7 pixels per unit of height, so tall bars cross from the bottom tiles into
the top ones.

Rendering is a pure function of the spec (all randomness lives in the spec), as in tamp.zoo.render.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw

from tamp.zoo.render import AXIS_COLOR, BAR_WIDTH, CELL_CENTERS, HALF, draw_shape, tinted
from tamp.zoo.world import Obj

TILE = 32  # the vision tower's input side; one panel = one tile
PATCH = 8
PANEL_ROWS, PANEL_COLS = 2, 3
HEIGHT, WIDTH = PANEL_ROWS * TILE, PANEL_COLS * TILE
CELLS = 3  # cells per panel side (the first world's grid)
GRID_ROWS, GRID_COLS = PANEL_ROWS * CELLS, PANEL_COLS * CELLS  # 6 x 9 cells in all
PATCHES_PER_TILE = TILE // PATCH
PATCH_ROWS, PATCH_COLS = HEIGHT // PATCH, WIDTH // PATCH  # 8 x 12

SLOTS = WIDTH // PATCH  # 12 bar slots, one patch column each
MAX_BARS = 6
MAX_HEIGHT = 8
UNIT = 7  # pixels per unit of height: 8 units reach pixel row 7, and every height tops out in its own patch row
BASELINE = HEIGHT - 1  # the axis row; bars stand on it


def cell_center(row: int, col: int) -> tuple[int, int]:
    """Pixel centre (x, y) of global cell (row, col)."""
    return (col // CELLS) * TILE + CELL_CENTERS[col % CELLS], (row // CELLS) * TILE + CELL_CENTERS[row % CELLS]


def cell_patch(row: int, col: int) -> tuple[int, int]:
    """(patch row, patch column) of the image's 8 x 12 patch grid that holds global cell (row, col)."""
    return ((row // CELLS) * PATCHES_PER_TILE + row % CELLS, (col // CELLS) * PATCHES_PER_TILE + col % CELLS)


@dataclass(frozen=True)
class PanelScene:
    """Objects in global cells (Obj.row in 0..5, Obj.col in 0..8) on one background colour."""

    objects: tuple[Obj, ...]
    background: tuple[int, int, int]

    def layout(self) -> dict:
        """The objects by patch of the 8 x 12 patch grid (what the vision tower's pretraining labels)."""
        out = []
        for o in self.objects:
            row, col = cell_patch(o.row, o.col)
            out.append({"row": row, "col": col, "shape": o.shape, "color": o.color, "size": o.size})
        return {"objects": out}


@dataclass(frozen=True)
class PanelBar:
    color: str
    height: int
    slot: int
    tint: tuple[int, int, int] = (0, 0, 0)

    @property
    def top(self) -> int:
        """The bar's top pixel row."""
        return BASELINE - self.height * UNIT


@dataclass(frozen=True)
class PanelChart:
    """Bars in distinct slots, left to right, of distinct colours and heights."""

    bars: tuple[PanelBar, ...]
    background: tuple[int, int, int]

    def layout(self) -> dict:
        """Each bar by patch column and its top and bottom patch rows (the axis row is not a bar)."""
        return {"bars": [{"col": b.slot, "top": b.top // PATCH, "bottom": (BASELINE - 1) // PATCH,
                          "color": b.color, "height": b.height} for b in self.bars]}


def render_panel_scene(scene: PanelScene) -> Image.Image:
    img = Image.new("RGB", (WIDTH, HEIGHT), scene.background)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        cx, cy = cell_center(o.row, o.col)
        draw_shape(draw, o.shape, cx + o.dx, cy + o.dy, HALF[o.size], o.size == "big", tinted(o.color, o.tint))
    return img


def render_panel_chart(chart: PanelChart) -> Image.Image:
    img = Image.new("RGB", (WIDTH, HEIGHT), chart.background)
    draw = ImageDraw.Draw(img)
    draw.line((0, BASELINE, WIDTH - 1, BASELINE), fill=AXIS_COLOR)
    for bar in chart.bars:
        x0 = bar.slot * PATCH + (PATCH - BAR_WIDTH) // 2
        draw.rectangle((x0, bar.top, x0 + BAR_WIDTH - 1, BASELINE - 1), fill=tinted(bar.color, bar.tint))
    return img


def render_panels(spec: PanelScene | PanelChart) -> Image.Image:
    return render_panel_scene(spec) if isinstance(spec, PanelScene) else render_panel_chart(spec)
