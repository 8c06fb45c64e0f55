"""The closed world of the toy zoo: attributes, the 3 x 3 grid, answer types and a seeded lexicon.

Everything here is a constant or a pure function of a seed, so an item depends on its own seed
only (never on generation order) and the vocabulary can be listed without generating anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")

IMAGE_SIZE = 32
GRID = 3  # rows and columns of the scene grid
MAX_OBJECTS = 6  # objects in an ordinary scene
MAX_COUNT_OBJECTS = 8  # the count task fills up to 8 of the 9 cells ("larger counts")
MAX_BARS = 4
MAX_HEIGHT = 8  # bar heights are whole units 1..8

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 45, 45),
    "green": (50, 180, 70),
    "blue": (55, 95, 235),
    "yellow": (235, 215, 45),
    "purple": (155, 65, 205),
    "orange": (245, 135, 30),
    "white": (235, 235, 235),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross")
PLURALS: dict[str, str] = {
    "square": "squares", "circle": "circles", "triangle": "triangles", "cross": "crosses",
}
SIZES: tuple[str, ...] = ("small", "big")
ROWS: tuple[str, ...] = ("top", "middle", "bottom")
COLUMNS: tuple[str, ...] = ("left", "center", "right")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
NUMBER_WORDS: tuple[str, ...] = tuple(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split()
)
MAX_NUMBER = len(NUMBER_WORDS) - 1


def numbers(lo: int, hi: int) -> tuple[str, ...]:
    """Numbers lo..hi (inclusive) as digit strings: answers are always digits."""
    return tuple(str(i) for i in range(lo, hi + 1))


# ---------------------------------------------------------------- the seeded lexicon (facts task)

LEXICON_SEED = 20251  # fixed: the world's facts are part of the recipe, not of the build seed
N_COUNTRIES = 12
N_CREATURES = 12
LEG_COUNTS: tuple[int, ...] = (0, 2, 4, 6, 8)
_ONSETS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_CODAS = "bdgklmnprstxz"


@dataclass(frozen=True)
class Creature:
    name: str
    color: str
    legs: int
    size_rank: int  # 0 = smallest
    home: str  # a country


@dataclass(frozen=True)
class Lexicon:
    """Nonce countries with capitals and nonce creatures with attributes: knowledge to memorise."""

    capitals: dict[str, str]
    creatures: tuple[Creature, ...]

    @property
    def countries(self) -> tuple[str, ...]:
        return tuple(self.capitals)

    def creature(self, name: str) -> Creature:
        return next(c for c in self.creatures if c.name == name)


def _nonce_words(rng: np.random.Generator, count: int, avoid: set[str]) -> list[str]:
    words: list[str] = []
    while len(words) < count:
        w = (
            _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
            + _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
            + _CODAS[rng.integers(len(_CODAS))]
        )
        if w not in avoid and w not in words:
            words.append(w)
    return words


def build_lexicon(seed: int = LEXICON_SEED) -> Lexicon:
    """The world's facts: a pure function of `seed`, so the vocabulary never depends on a build."""
    rng = np.random.default_rng(seed)
    reserved = set(NUMBER_WORDS) | set(COLORS) | set(SHAPES) | set(PLURALS.values())
    names = _nonce_words(rng, 2 * N_COUNTRIES + N_CREATURES, avoid=reserved)
    countries, capitals = names[:N_COUNTRIES], names[N_COUNTRIES:2 * N_COUNTRIES]
    beasts = names[2 * N_COUNTRIES:]
    ranks = rng.permutation(N_CREATURES).tolist()
    creatures = tuple(
        Creature(
            name=name,
            color=COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))],
            legs=LEG_COUNTS[int(rng.integers(len(LEG_COUNTS)))],
            size_rank=int(ranks[i]),
            home=countries[int(rng.integers(N_COUNTRIES))],
        )
        for i, name in enumerate(beasts)
    )
    return Lexicon(capitals=dict(zip(countries, capitals, strict=True)), creatures=creatures)


LEXICON = build_lexicon()

# ---------------------------------------------------------------- answer types (closed vocabularies)

ANSWER_TYPES: dict[str, tuple[str, ...]] = {
    "color": COLOR_NAMES,
    "shape": SHAPES,
    "size": SIZES,
    "row": ROWS,
    "column": COLUMNS,
    "yesno": ("yes", "no"),
    "count": numbers(0, MAX_COUNT_OBJECTS),
    "height": numbers(1, MAX_HEIGHT),
    "number": numbers(0, MAX_NUMBER),
    "capital": tuple(LEXICON.capitals.values()),
    "country": LEXICON.countries,
    "creature": tuple(c.name for c in LEXICON.creatures),
}

# ---------------------------------------------------------------- scene and chart specifications


@dataclass(frozen=True)
class Obj:
    """One object of a scene; jitter (dx, dy, tint) is drawn with the spec so rendering is pure."""

    shape: str
    color: str
    size: str
    row: int
    col: int
    dx: int = 0
    dy: int = 0
    tint: tuple[int, int, int] = (0, 0, 0)

    @property
    def cell(self) -> int:
        return self.row * GRID + self.col


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: tuple[int, int, int]


@dataclass(frozen=True)
class Bar:
    color: str
    height: int
    tint: tuple[int, int, int] = (0, 0, 0)


@dataclass(frozen=True)
class Chart:
    bars: tuple[Bar, ...]
    first_slot: int  # bars fill slots first_slot .. first_slot + len(bars) - 1 of MAX_BARS
    background: tuple[int, int, int]


# ---------------------------------------------------------------- a fast per-item random source


class Dice:
    """Uniform draws served in blocks from a numpy Generator.

    A Generator call costs microseconds; an item makes dozens of small draws, so serving Python
    floats from a block keeps generation fast while staying a pure function of the Generator's seed.
    """

    def __init__(self, rng: np.random.Generator, block: int = 64) -> None:
        self._rng, self._block = rng, block
        self._buf: list[float] = []

    def random(self) -> float:
        if not self._buf:
            self._buf = self._rng.random(self._block).tolist()[::-1]
        return self._buf.pop()

    def randint(self, lo: int, hi: int) -> int:
        """An integer in lo..hi inclusive."""
        return lo + min(int(self.random() * (hi - lo + 1)), hi - lo)

    def chance(self, p: float) -> bool:
        return self.random() < p

    def choice(self, items: Sequence[T]) -> T:
        return items[self.randint(0, len(items) - 1)]

    def sample(self, items: Sequence[T], k: int) -> list[T]:
        """k distinct items in random order."""
        pool = list(items)
        return [pool.pop(self.randint(0, len(pool) - 1)) for _ in range(k)]

    def shuffled(self, items: Sequence[T]) -> list[T]:
        return self.sample(items, len(items))


# ---------------------------------------------------------------- question templates and drafts

PHRASES: list[str] = []


def phrase(text: str) -> str:
    """Register a question template (str.format style) so `vocabulary()` lists its literal words."""
    PHRASES.append(text)
    return text


@dataclass(frozen=True)
class Draft:
    """A generated question before it becomes a record: what a template function returns.

    `partitioned` is True when the template itself keeps test questions out of train (the facts
    task holds out one phrasing per fact); otherwise the item builder does it by hashing.
    """

    question: str
    answer: str
    answer_type: str
    template: str
    visual: Scene | Chart | None = None
    partitioned: bool = False
