"""The task list, the vocabulary and the item builder: (split, index, seed) -> one finished item.

An item is a pure function of (split, index, seed): its task is `index % len(TASKS)` (balanced for
any split size) and its random stream is a numpy Generator seeded with (seed, SPLIT_BASE[split] +
index), so item i never depends on how many items are made or in which order. Splits use disjoint
seed ranges; on top of that every (image, question) pair falls in a hash bucket, and test items
come only from the held-out bucket while train and calib items never do, so test never repeats a
train item exactly (facts hold out a phrasing per fact instead, see textq).
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from tamp.zoo.questions import FAMILIES
from tamp.zoo.render import render
from tamp.zoo.textq import TEXT_FAMILIES
from tamp.zoo.world import (
    ANSWER_TYPES,
    COLUMNS,
    LEXICON,
    NUMBER_WORDS,
    PHRASES,
    PLURALS,
    RELATIONS,
    ROWS,
    SIZES,
    Chart,
    Dice,
    Scene,
)

IMAGE_TOKEN = "<image>"
SPLIT_BASE = {"train": 0, "calib": 1_000_000_000, "test": 2_000_000_000}
HELDOUT_SPLITS = frozenset({"test"})
HOLDOUT_BUCKETS = 8  # 1 in 8 (image, question) pairs belongs to test
MAX_ATTEMPTS = 400
N_CHOICES = 4


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    image: bool
    answer_types: tuple[str, ...]
    templates: tuple[Callable[[Dice, bool], Any], ...]


TASKS: tuple[Task, ...] = (
    Task("color", "color of a shape or of the object in a grid cell", True, ("color",), FAMILIES["color"]),
    Task("shape", "shape of a colored object or a grid cell; size of an object", True,
         ("shape", "size"), FAMILIES["shape"]),
    Task("count", "count all objects, one color or one shape (0-8)", True, ("count",), FAMILIES["count"]),
    Task("position", "row or column of a colored shape", True, ("row", "column"), FAMILIES["position"]),
    Task("compose", "two-attribute counts, size-disambiguated color", True,
         ("count", "color"), FAMILIES["compose"]),
    Task("chart", "bar charts: tallest, shortest, height, number of bars", True,
         ("color", "height", "count"), FAMILIES["chart"]),
    Task("arith", "addition, subtraction and comparison in words or digits", False, ("number",),
         TEXT_FAMILIES["arith"]),
    Task("facts", "memorised facts of the seeded lexicon, asked in a held-out phrasing at test", False,
         ("capital", "color", "count", "country", "creature"), TEXT_FAMILIES["facts"]),
)
TASK_NAMES: tuple[str, ...] = tuple(t.name for t in TASKS)
_BY_NAME = {t.name: t for t in TASKS}


def task_table() -> dict[str, dict]:
    """JSON-ready task list: for the eval side (which answer types, whether an image comes along)."""
    return {t.name: {"description": t.description, "image": t.image, "answer_types": list(t.answer_types),
                     "templates": [f.__name__ for f in t.templates]} for t in TASKS}


# ---------------------------------------------------------------- vocabulary

_WORD = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Whitespace and punctuation split (as BERT pre-tokenisation does), without the image token."""
    return _WORD.findall(text.replace(IMAGE_TOKEN, " ").lower())


def vocabulary() -> list[str]:
    """Every word or punctuation mark that can appear in a question or answer, sorted.

    Built from the registered templates' literal text and every value a slot or answer can take,
    so it is known without generating data; tests check it against generated items.
    """
    words: set[str] = set()
    for text in PHRASES:
        for literal, _, _, _ in string.Formatter().parse(text):
            words.update(tokenize(literal))
    slot_values = [*PLURALS.values(), *SIZES, *ROWS, *COLUMNS, *RELATIONS, *NUMBER_WORDS,
                   *(c.name for c in LEXICON.creatures)]
    for values in [*ANSWER_TYPES.values(), slot_values]:
        for value in values:
            words.update(tokenize(value))
    return sorted(words)


# ---------------------------------------------------------------- items


@dataclass(frozen=True)
class Item:
    id: str
    task: str
    question: str
    answer: str
    answer_type: str
    template: str
    choices: tuple[str, ...]
    image: Image.Image | None
    visual: Any = None  # the spec the image was rendered from (Scene, Chart or a panel world spec)

    def layout(self) -> dict:
        """The image's ground truth as JSON: objects (grid cell, shape, color, size) or bars (slot, color, height).

        Not read by the model or the eval; the zoo's vision pretraining labels patches from it (the
        stand-in for the captions a CLIP tower learns from).
        """
        if hasattr(self.visual, "layout"):  # the panel world's specs say it themselves
            return self.visual.layout()
        if isinstance(self.visual, Scene):
            return {"objects": [{"row": o.row, "col": o.col, "shape": o.shape, "color": o.color, "size": o.size}
                                for o in self.visual.objects]}
        if isinstance(self.visual, Chart):
            return {"bars": [{"slot": self.visual.first_slot + i, "color": b.color, "height": b.height}
                             for i, b in enumerate(self.visual.bars)]}
        return {}

    def record(self) -> dict:
        """The LLaVA conversation record (image path relative to the JSON file's folder)."""
        human = f"{IMAGE_TOKEN}\n{self.question}" if self.image is not None else self.question
        rec: dict = {"id": self.id, "task": self.task}
        if self.image is not None:
            rec["image"] = f"images/{self.id}.png"
        rec["conversations"] = [{"from": "human", "value": human}, {"from": "gpt", "value": self.answer}]
        rec.update(answer=self.answer, choices=list(self.choices), answer_type=self.answer_type,
                   template=self.template, **self.layout())
        return rec


def holdout_key(pixels: bytes | None, question: str) -> bytes:
    """Hash of an (image, question) pair: the identity used for train / test disjointness."""
    h = hashlib.blake2b(digest_size=16)
    h.update(pixels or b"")
    h.update(b"\0" + question.encode())
    return h.digest()


def is_heldout(key: bytes) -> bool:
    return int.from_bytes(key[:8], "little") % HOLDOUT_BUCKETS == 0


def item_rng(split: str, index: int, seed: int) -> np.random.Generator:
    if split not in SPLIT_BASE:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_BASE)}")
    if not 0 <= index < SPLIT_BASE["calib"]:
        raise ValueError(f"item index {index} outside the split's seed range")
    return np.random.default_rng([seed, SPLIT_BASE[split] + index])


def make_item(split: str, index: int, seed: int = 0) -> Item:
    """Item `index` of `split` of the first world (tamp.zoo.worlds names the others)."""
    return build_item(TASKS, ANSWER_TYPES, render, split, index, seed)


def build_item(tasks: Sequence[Task], answer_types: Mapping[str, Sequence[str]],
               draw: Callable[[Any], Image.Image], split: str, index: int, seed: int = 0) -> Item:
    """Item `index` of `split` of a world: retries its own random stream until the holdout bucket fits."""
    d = Dice(item_rng(split, index, seed))
    task = tasks[index % len(tasks)]
    heldout = split in HELDOUT_SPLITS
    for _ in range(MAX_ATTEMPTS):
        draft = d.choice(task.templates)(d, heldout)
        image = draw(draft.visual) if draft.visual is not None else None
        if draft.partitioned:
            break
        if is_heldout(holdout_key(image.tobytes() if image else None, draft.question)) == heldout:
            break
    else:  # pragma: no cover - (7/8)^400 odds
        raise RuntimeError(f"no {split} item found for index {index} of task {task.name}")
    values = answer_types[draft.answer_type]
    distractors = d.sample([v for v in values if v != draft.answer], min(N_CHOICES - 1, len(values) - 1))
    return Item(
        id=f"{split}-{index:06d}",
        task=task.name,
        question=draft.question,
        answer=draft.answer,
        answer_type=draft.answer_type,
        template=draft.template,
        choices=tuple(d.shuffled([draft.answer, *distractors])),
        image=image,
        visual=draft.visual,
    )


def task(name: str) -> Task:
    return _BY_NAME[name]
