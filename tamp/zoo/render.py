"""Scene and chart specs -> 32 x 32 RGB images, drawn with PIL directly (aliased, no resampling).

Rendering is a pure function of the spec: all randomness (jitter, tints, background) lives in the
spec, so the same spec gives byte-identical pixels.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from tamp.zoo.world import COLORS, IMAGE_SIZE, MAX_BARS, Chart, Obj, Scene

# Grid cells sit on the centres of the vision tower's 8 x 8 patches (the first 3 of 4 per side), so
# each object lies inside one patch: a tiny ViT reads shape, colour and size from one token instead
# of assembling objects cut across patch borders (which a 1M-parameter model trained for minutes
# on CPU does not learn: shape questions stayed at chance with cells centred at 5, 16, 26).
CELL_CENTERS = (4, 12, 20)  # pixel centres of the 3 grid rows / columns
HALF = {"small": 2, "big": 3}  # 5 px and 7 px wide; small ones jitter by 1 px, big ones not: inside the patch
SLOT = IMAGE_SIZE // MAX_BARS  # 8 px per bar slot
BAR_WIDTH = 6
UNIT = 3  # pixels per unit of bar height (8 units = 24 px)
BASELINE = IMAGE_SIZE - 1  # the axis row; bars stand on it
AXIS_COLOR = (128, 128, 128)


def tinted(color: str, tint: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + t)) for c, t in zip(COLORS[color], tint, strict=True))


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: int, cy: int, r: int, big: bool,
               fill: tuple[int, int, int]) -> None:
    """One shape of half-width r centred at (cx, cy) (the panel world draws with it too)."""
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif shape == "cross":
        t = 1 if big else 0  # arm half-thickness: 3 px arms when big, 1 px when small
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _draw_object(draw: ImageDraw.ImageDraw, obj: Obj) -> None:
    cx, cy = CELL_CENTERS[obj.col] + obj.dx, CELL_CENTERS[obj.row] + obj.dy
    draw_shape(draw, obj.shape, cx, cy, HALF[obj.size], obj.size == "big", tinted(obj.color, obj.tint))


def render_scene(scene: Scene) -> Image.Image:
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), scene.background)
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        _draw_object(draw, obj)
    return img


def render_chart(chart: Chart) -> Image.Image:
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), chart.background)
    draw = ImageDraw.Draw(img)
    draw.line((0, BASELINE, IMAGE_SIZE - 1, BASELINE), fill=AXIS_COLOR)
    for i, bar in enumerate(chart.bars):
        x0 = (chart.first_slot + i) * SLOT + (SLOT - BAR_WIDTH) // 2
        top = BASELINE - bar.height * UNIT
        draw.rectangle((x0, top, x0 + BAR_WIDTH - 1, BASELINE - 1), fill=tinted(bar.color, bar.tint))
    return img


def render(spec: Scene | Chart) -> Image.Image:
    return render_scene(spec) if isinstance(spec, Scene) else render_chart(spec)
