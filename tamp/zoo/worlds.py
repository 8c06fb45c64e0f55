"""The zoo's worlds: what a data recipe generates (its tasks, images, vocabulary and generator code).

`v1`: the first world (tamp.zoo.tasks): 32 x 32 scenes and charts plus text-only arithmetic and
facts, under 100 tokens a sample; the default zoo model (a LLaVA-1.5) is trained on it. `panels`: an
experimental world (tamp.zoo.panel_scene, panel_questions): 64 x 96 images of 2 x 3 panels, one
LLaVA-NeXT tile each, and image questions only, so a sample is 120 image tokens of ~134; the `next`
recipes train a LLaVA-NeXT on it.
A world is plain data plus functions; the build (tamp.zoo.build) asks it for items by index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from tamp.zoo import tasks as v1
from tamp.zoo.panel_questions import (
    ANSWER_TYPES as PANEL_ANSWERS,
)
from tamp.zoo.panel_questions import (
    PANEL_ANSWER_TYPES,
    PANEL_DESCRIPTIONS,
    PANEL_FAMILIES,
    panel_vocabulary_words,
)
from tamp.zoo.panel_scene import HEIGHT, WIDTH, render_panels
from tamp.zoo.render import render as render_v1
from tamp.zoo.world import ANSWER_TYPES as V1_ANSWERS
from tamp.zoo.world import IMAGE_SIZE


@dataclass(frozen=True)
class World:
    """One world: its tasks (item i is task i % len(tasks)), answer types, renderer and image size."""

    name: str
    tasks: tuple[v1.Task, ...]
    answer_types: Mapping[str, tuple[str, ...]]
    draw: Callable[[Any], Image.Image]
    height: int
    width: int
    #: files of tamp/zoo whose source decides the world's items: keys the data folder's manifest and the
    #: data lock (an edit regenerates and re-measures; the recipe hash follows the bytes, not this source)
    files: tuple[str, ...]
    words: Callable[[], list[str]]
    #: the lmms-eval tag of its test tasks (tamp/eval/tasks/zoo; `<tag>_mc`: multiple choice)
    eval_tag: str

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def make_item(self, split: str, index: int, seed: int = 0) -> v1.Item:
        return v1.build_item(self.tasks, self.answer_types, self.draw, split, index, seed)

    def vocabulary(self) -> list[str]:
        """Every word or punctuation mark a question or answer can hold, sorted (one token each)."""
        return self.words()

    def task_table(self) -> dict[str, dict]:
        return {t.name: {"description": t.description, "image": t.image, "answer_types": list(t.answer_types),
                         "templates": [f.__name__ for f in t.templates]} for t in self.tasks}

    def has_image(self, index: int) -> bool:
        return self.tasks[index % len(self.tasks)].image


def _panel_words() -> list[str]:
    return sorted({w for text in panel_vocabulary_words() for w in v1.tokenize(text)})


V1 = World("v1", v1.TASKS, V1_ANSWERS, render_v1, IMAGE_SIZE, IMAGE_SIZE,
           ("worlds.py", "world.py", "render.py", "questions.py", "textq.py", "tasks.py"), v1.vocabulary, "tamp_zoo")
PANELS = World(
    "panels",
    tuple(v1.Task(name, PANEL_DESCRIPTIONS[name], True, PANEL_ANSWER_TYPES[name], templates)
          for name, templates in PANEL_FAMILIES.items()),
    PANEL_ANSWERS, render_panels, HEIGHT, WIDTH,
    ("worlds.py", "world.py", "render.py", "questions.py", "tasks.py", "panel_scene.py", "panel_questions.py"),
    _panel_words,
    "tamp_zoo_panels",
)
WORLDS: dict[str, World] = {w.name: w for w in (V1, PANELS)}


def get_world(name: str) -> World:
    if name not in WORLDS:
        raise ValueError(f"unknown zoo world '{name}'; valid: {', '.join(WORLDS)}")
    return WORLDS[name]
