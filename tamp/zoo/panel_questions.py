"""Questions of the panel world (tamp.zoo.panel_scene): every one needs the image to be answered.

Six tasks like the first world's image tasks (color, shape, count, position, compose, chart), asked
about a 64 x 96 image of 2 x 3 panels: an object is named by its attributes, a position is the row or
column of the 3 x 3 grid inside its panel, counts run over the whole image. No question names a panel:
the vision tower reads each tile alone, so which panel a token comes from is known only from its
place in the sequence, and a trial of the 1M-parameter decoder with "the object in the top left panel"
and "which row (top, bottom) is ..." stayed near chance on them after 1200 steps (45% where chance is
42%) while it learned the other questions. As in tamp.zoo.questions, each template builds the
image around the answer (the answer or referent first, then fillers that keep it well defined).
The panel world keeps its own phrase list, so the first world's vocabulary does not change.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence

from tamp.zoo.panel_scene import (
    CELLS,
    GRID_COLS,
    GRID_ROWS,
    MAX_BARS,
    MAX_HEIGHT,
    SLOTS,
    PanelBar,
    PanelChart,
    PanelScene,
)
from tamp.zoo.questions import TINT
from tamp.zoo.world import COLOR_NAMES, COLUMNS, PLURALS, ROWS, SHAPES, SIZES, Dice, Draft, Obj, numbers

PanelTemplate = Callable[[Dice, bool], Draft]

ALL_CELLS = tuple(range(GRID_ROWS * GRID_COLS))
MAX_OBJECTS = 8  # objects in an ordinary scene (54 cells)
MAX_COUNT_OBJECTS = 10  # "how many objects": 1..10
COUNT_MAX = 6  # largest count of one colour or one shape
COUNT_BOTH_MAX = 4

PHRASES: list[str] = []


def phrase(text: str) -> str:
    """Register a template of this world (its literal words make the vocabulary)."""
    PHRASES.append(text)
    return text


ANSWER_TYPES: dict[str, tuple[str, ...]] = {
    "color": COLOR_NAMES,
    "shape": SHAPES,
    "size": SIZES,
    "row": ROWS,
    "column": COLUMNS,
    "count": numbers(0, MAX_COUNT_OBJECTS),
    "height": numbers(1, MAX_HEIGHT),
}


def _background(d: Dice) -> tuple[int, int, int]:
    return (d.randint(0, 40), d.randint(0, 40), d.randint(0, 40))


def _tint(d: Dice) -> tuple[int, int, int]:
    return (d.randint(-TINT, TINT), d.randint(-TINT, TINT), d.randint(-TINT, TINT))


class PanelBuilder:
    """Places objects one per global cell with jitter; callers decide what may be added."""

    def __init__(self, d: Dice) -> None:
        self.d = d
        self.free = list(ALL_CELLS)
        self.objects: list[Obj] = []

    def add(self, shape: str, color: str, size: str | None = None, cells: Sequence[int] | None = None) -> Obj:
        d = self.d
        options = self.free if cells is None else [c for c in self.free if c in cells]
        cell = d.choice(options)
        self.free.remove(cell)
        size = size or d.choice(SIZES)
        j = 1 if size == "small" else 0  # big objects fill their patch: jitter would cross its border
        obj = Obj(shape, color, size, cell // GRID_COLS, cell % GRID_COLS, d.randint(-j, j), d.randint(-j, j), _tint(d))
        self.objects.append(obj)
        return obj

    def fill(self, n: int, ok: Callable[[str, str], bool] = lambda shape, color: True,
             cells: Sequence[int] | None = None) -> None:
        """Add up to n random objects whose (shape, color) pass `ok` (keeps referents unique)."""
        room = len(self.free) if cells is None else sum(c in cells for c in self.free)
        for _ in range(min(n, room)):
            shape, color = self.d.choice(SHAPES), self.d.choice(COLOR_NAMES)
            while not ok(shape, color):
                shape, color = self.d.choice(SHAPES), self.d.choice(COLOR_NAMES)
            self.add(shape, color, cells=cells)

    def scene(self) -> PanelScene:
        return PanelScene(tuple(self.objects), _background(self.d))


# ---------------------------------------------------------------- color

COLOR_OF_SHAPE = phrase("what color is the {shape}?")


def color_of_shape(d: Dice, heldout: bool) -> Draft:
    b = PanelBuilder(d)
    t = b.add(d.choice(SHAPES), d.choice(COLOR_NAMES))
    b.fill(d.randint(1, MAX_OBJECTS - 1), lambda s, c: s != t.shape)
    return Draft(COLOR_OF_SHAPE.format(shape=t.shape), t.color, "color", "color_of_shape", b.scene())


# ---------------------------------------------------------------- shape

SHAPE_OF_COLOR = phrase("what shape is the {color} object?")
SIZE_OF = phrase("what size is the {color} {shape}?")


def shape_of_color(d: Dice, heldout: bool) -> Draft:
    b = PanelBuilder(d)
    t = b.add(d.choice(SHAPES), d.choice(COLOR_NAMES))
    b.fill(d.randint(1, MAX_OBJECTS - 1), lambda s, c: c != t.color)
    return Draft(SHAPE_OF_COLOR.format(color=t.color), t.shape, "shape", "shape_of_color", b.scene())


def size_of(d: Dice, heldout: bool) -> Draft:
    b = PanelBuilder(d)
    t = b.add(d.choice(SHAPES), d.choice(COLOR_NAMES))
    b.fill(d.randint(1, MAX_OBJECTS - 1), lambda s, c: (s, c) != (t.shape, t.color))
    return Draft(SIZE_OF.format(color=t.color, shape=t.shape), t.size, "size", "size_of", b.scene())


# ---------------------------------------------------------------- count

COUNT_ALL = phrase("how many objects are there?")
COUNT_COLOR = phrase("how many {color} objects are there?")
COUNT_SHAPE = phrase("how many {plural} are there?")


def count_all(d: Dice, heldout: bool) -> Draft:
    b = PanelBuilder(d)
    b.fill(d.randint(1, MAX_COUNT_OBJECTS))
    return Draft(COUNT_ALL, str(len(b.objects)), "count", "count_all", b.scene())


def _count_scene(d: Dice, match: Callable[[str, str], bool], make: Callable[[], tuple[str, str]]) -> PanelScene:
    k = d.randint(0, COUNT_MAX)
    b = PanelBuilder(d)
    for _ in range(k):
        b.add(*make())
    b.fill(d.randint(0 if k else 1, MAX_OBJECTS - min(k, MAX_OBJECTS - 1)), lambda s, c: not match(s, c))
    return b.scene()


def count_color(d: Dice, heldout: bool) -> Draft:
    color = d.choice(COLOR_NAMES)
    scene = _count_scene(d, lambda s, c: c == color, lambda: (d.choice(SHAPES), color))
    k = sum(o.color == color for o in scene.objects)
    return Draft(COUNT_COLOR.format(color=color), str(k), "count", "count_color", scene)


def count_shape(d: Dice, heldout: bool) -> Draft:
    shape = d.choice(SHAPES)
    scene = _count_scene(d, lambda s, c: s == shape, lambda: (shape, d.choice(COLOR_NAMES)))
    k = sum(o.shape == shape for o in scene.objects)
    return Draft(COUNT_SHAPE.format(plural=PLURALS[shape]), str(k), "count", "count_shape", scene)


# ---------------------------------------------------------------- position

ROW_OF = phrase("which row of its panel is the {color} {shape} in?")
COLUMN_OF = phrase("which column of its panel is the {color} {shape} in?")


def _unique_target(d: Dice) -> tuple[Obj, PanelScene]:
    b = PanelBuilder(d)
    t = b.add(d.choice(SHAPES), d.choice(COLOR_NAMES))
    b.fill(d.randint(1, MAX_OBJECTS - 1), lambda s, c: (s, c) != (t.shape, t.color))
    return t, b.scene()


def row_of(d: Dice, heldout: bool) -> Draft:
    t, scene = _unique_target(d)
    return Draft(ROW_OF.format(color=t.color, shape=t.shape), ROWS[t.row % CELLS], "row", "row_of", scene)


def column_of(d: Dice, heldout: bool) -> Draft:
    t, scene = _unique_target(d)
    return Draft(COLUMN_OF.format(color=t.color, shape=t.shape), COLUMNS[t.col % CELLS], "column", "column_of", scene)


# ---------------------------------------------------------------- compose

COUNT_BOTH = phrase("how many {color} {plural} are there?")
COLOR_OF_SIZED = phrase("what color is the {size} {shape}?")


def count_both(d: Dice, heldout: bool) -> Draft:
    """Count objects with two attributes; fillers share one of them, so both must be bound."""
    shape, color = d.choice(SHAPES), d.choice(COLOR_NAMES)
    k = d.randint(0, COUNT_BOTH_MAX)
    b = PanelBuilder(d)
    for _ in range(k):
        b.add(shape, color)
    for _ in range(d.randint(0 if k else 1, MAX_OBJECTS - k)):
        u = d.random()
        if u < 0.4:
            b.add(d.choice([s for s in SHAPES if s != shape]), color)
        elif u < 0.8:
            b.add(shape, d.choice([c for c in COLOR_NAMES if c != color]))
        else:
            b.fill(1, lambda s, c: s != shape and c != color)
    q = COUNT_BOTH.format(color=color, plural=PLURALS[shape])
    return Draft(q, str(k), "count", "count_both", b.scene())


def color_of_sized(d: Dice, heldout: bool) -> Draft:
    """Two objects of one shape, one big and one small, in different colors: size picks the referent."""
    shape = d.choice(SHAPES)
    big_color, small_color = d.sample(COLOR_NAMES, 2)
    b = PanelBuilder(d)
    b.add(shape, big_color, "big")
    b.add(shape, small_color, "small")
    b.fill(d.randint(0, MAX_OBJECTS - 2), lambda s, c: s != shape)
    size = d.choice(SIZES)
    answer = big_color if size == "big" else small_color
    return Draft(COLOR_OF_SIZED.format(size=size, shape=shape), answer, "color", "color_of_sized", b.scene())


# ---------------------------------------------------------------- chart

TALLEST = phrase("which bar is the tallest?")
SHORTEST = phrase("which bar is the shortest?")
HEIGHT_OF = phrase("what is the height of the {color} bar?")
BAR_COUNT = phrase("how many bars are there?")


def _chart(d: Dice) -> PanelChart:
    """2-6 bars of distinct colors and heights 1..8 in distinct slots (tallest / shortest unique)."""
    n = d.randint(2, MAX_BARS)
    colors, heights = d.sample(COLOR_NAMES, n), d.sample(range(1, MAX_HEIGHT + 1), n)
    slots = sorted(d.sample(range(SLOTS), n))
    bars = tuple(PanelBar(c, h, s, _tint(d)) for c, h, s in zip(colors, heights, slots, strict=True))
    return PanelChart(bars, _background(d))


def tallest(d: Dice, heldout: bool) -> Draft:
    c = _chart(d)
    return Draft(TALLEST, max(c.bars, key=lambda b: b.height).color, "color", "tallest", c)


def shortest(d: Dice, heldout: bool) -> Draft:
    c = _chart(d)
    return Draft(SHORTEST, min(c.bars, key=lambda b: b.height).color, "color", "shortest", c)


def height_of(d: Dice, heldout: bool) -> Draft:
    c = _chart(d)
    bar = d.choice(c.bars)
    return Draft(HEIGHT_OF.format(color=bar.color), str(bar.height), "height", "height_of", c)


def bar_count(d: Dice, heldout: bool) -> Draft:
    c = _chart(d)
    return Draft(BAR_COUNT, str(len(c.bars)), "count", "bar_count", c)


PANEL_FAMILIES: dict[str, tuple[PanelTemplate, ...]] = {
    "color": (color_of_shape,),
    "shape": (shape_of_color, size_of),
    "count": (count_all, count_color, count_shape),
    "position": (row_of, column_of),
    "compose": (count_both, color_of_sized),
    "chart": (tallest, shortest, height_of, bar_count),
}
PANEL_DESCRIPTIONS: dict[str, str] = {
    "color": "color of a shape",
    "shape": "shape of a colored object; size of an object",
    "count": "count all objects (1-10), one color or one shape (0-6), over the six panels",
    "position": "row or column of a colored shape inside its panel",
    "compose": "two-attribute counts, size-disambiguated color",
    "chart": "bar charts across the image: tallest, shortest, height, number of bars",
}
PANEL_ANSWER_TYPES: dict[str, tuple[str, ...]] = {
    "color": ("color",), "shape": ("shape", "size"), "count": ("count",), "position": ("row", "column"),
    "compose": ("count", "color"), "chart": ("color", "height", "count"),
}


def panel_vocabulary_words() -> set[str]:
    """Literal words of this world's templates and every value a slot or answer can take (untokenised)."""
    words: set[str] = set()
    for text in PHRASES:
        for literal, _, _, _ in string.Formatter().parse(text):
            words.add(literal)
    for values in [*ANSWER_TYPES.values(), PLURALS.values(), SIZES]:
        words.update(values)
    return words


__all__ = ["ANSWER_TYPES", "CELLS", "PANEL_ANSWER_TYPES", "PANEL_DESCRIPTIONS", "PANEL_FAMILIES", "PHRASES",
           "panel_vocabulary_words"]
