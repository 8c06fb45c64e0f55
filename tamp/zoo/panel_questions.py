"""Questions of the panel world (tamp.zoo.panel_scene): every one needs the image to be answered.

Six tasks like the first world's image tasks (color, shape, count, position, compose, chart), asked
about a 64 x 96 image of 2 x 3 panels: an object is named by its attributes, a position is the row or
column of the 3 x 3 grid inside its panel, counts run over the whole image. No question names a panel:
the vision tower reads each tile alone, so which panel a token comes from is known only from its
place in the sequence, and a trial of the 1M-parameter decoder with "the object in the top left panel"
and "which row (top, bottom) is ..." stayed near chance on them after 1200 steps (45% where chance is
42%) while it learned the other questions. As in tamp.zoo.questions, each template builds the
image around the answer (the answer or referent first, then fillers that keep it well defined):
the same templates (tamp.zoo.questions.SceneQuestions) on this world's grid, its own charts and
wording. The panel world keeps its own phrase list, so the first world's vocabulary does not change.
"""

from __future__ import annotations

import string

from tamp.zoo.panel_scene import (
    GRID_COLS,
    GRID_ROWS,
    MAX_BARS,
    MAX_HEIGHT,
    SLOTS,
    PanelBar,
    PanelChart,
    PanelScene,
)
from tamp.zoo.questions import TEXTS, Grid, SceneQuestions, Template, draw_background, draw_tint
from tamp.zoo.world import COLOR_NAMES, COLUMNS, PLURALS, ROWS, SHAPES, SIZES, Dice, numbers

MAX_OBJECTS = 8  # objects in an ordinary scene (54 cells)
MAX_COUNT_OBJECTS = 10  # "how many objects": 1..10
#: 6 x 9 cells; a scene that counts one colour or shape holds up to 8 objects; a unique referent has 1+ fillers
PANEL_GRID = Grid(GRID_ROWS, GRID_COLS, MAX_OBJECTS, MAX_COUNT_OBJECTS, MAX_OBJECTS, 1, PanelScene)

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


def _chart(d: Dice) -> PanelChart:
    """2-6 bars of distinct colors and heights 1..8 in distinct slots (tallest / shortest unique)."""
    n = d.randint(2, MAX_BARS)
    colors, heights = d.sample(COLOR_NAMES, n), d.sample(range(1, MAX_HEIGHT + 1), n)
    slots = sorted(d.sample(range(SLOTS), n))
    bars = tuple(PanelBar(c, h, s, draw_tint(d)) for c, h, s in zip(colors, heights, slots, strict=True))
    return PanelChart(bars, draw_background(d))


#: a position is the row or column inside the object's panel (the panel itself is never named)
_TEXTS = {**TEXTS, "row_of": "which row of its panel is the {color} {shape} in?",
          "column_of": "which column of its panel is the {color} {shape} in?"}
QUESTIONS = SceneQuestions(PANEL_GRID, {name: phrase(text) for name, text in _TEXTS.items()}, _chart)
PANEL_FAMILIES: dict[str, tuple[Template, ...]] = QUESTIONS.families()
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


__all__ = ["ANSWER_TYPES", "PANEL_ANSWER_TYPES", "PANEL_DESCRIPTIONS", "PANEL_FAMILIES", "PANEL_GRID", "PHRASES",
           "QUESTIONS", "panel_vocabulary_words"]
