"""Text-only families: arith (small arithmetic in words or digits) and facts (the seeded lexicon).

Facts are knowledge to memorise, so a test question cannot be new knowledge; it is a new
phrasing instead: every fact has several phrasings, one of which (chosen by a stable hash of the
fact) is reserved for the test split and never appears in train or calib.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from tamp.zoo.world import LEXICON, NUMBER_WORDS, Dice, Draft, phrase

# ---------------------------------------------------------------- arith

PLUS = phrase("what is {a} plus {b}?")
MINUS = phrase("what is {a} minus {b}?")
PLUS_MINUS = phrase("what is {a} plus {b} minus {c}?")
MINUS_PLUS = phrase("what is {a} minus {b} plus {c}?")
LARGER = phrase("which is larger, {a} or {b}?")
SMALLER = phrase("which is smaller, {a} or {b}?")
OPERAND_MAX = 10  # two-operand sums reach 20, the largest number word
CHAIN_MAX = 5  # three-operand chains stay small: a tiny model must still get them right


def _num(d: Dice, value: int) -> str:
    """A number as a word or as digits (50/50): the model has to align the two spellings."""
    return NUMBER_WORDS[value] if d.chance(0.5) else str(value)


def _arith(q: str, answer: int, name: str) -> Draft:
    return Draft(q, str(answer), "number", name)


def plus(d: Dice, heldout: bool) -> Draft:
    a, b = d.randint(0, OPERAND_MAX), d.randint(0, OPERAND_MAX)
    return _arith(PLUS.format(a=_num(d, a), b=_num(d, b)), a + b, "plus")


def minus(d: Dice, heldout: bool) -> Draft:
    a = d.randint(0, 2 * OPERAND_MAX)
    b = d.randint(0, min(a, OPERAND_MAX))
    return _arith(MINUS.format(a=_num(d, a), b=_num(d, b)), a - b, "minus")


def chain(d: Dice, heldout: bool) -> Draft:
    a, b = d.randint(0, CHAIN_MAX), d.randint(0, CHAIN_MAX)
    if d.chance(0.5):
        c = d.randint(0, min(a + b, CHAIN_MAX))
        return _arith(PLUS_MINUS.format(a=_num(d, a), b=_num(d, b), c=_num(d, c)), a + b - c, "plus_minus")
    a, b = max(a, b), min(a, b)
    c = d.randint(0, CHAIN_MAX)
    return _arith(MINUS_PLUS.format(a=_num(d, a), b=_num(d, b), c=_num(d, c)), a - b + c, "minus_plus")


def compare(d: Dice, heldout: bool) -> Draft:
    a, b = d.sample(range(2 * OPERAND_MAX + 1), 2)
    if d.chance(0.5):
        return _arith(LARGER.format(a=_num(d, a), b=_num(d, b)), max(a, b), "larger")
    return _arith(SMALLER.format(a=_num(d, a), b=_num(d, b)), min(a, b), "smaller")


# ---------------------------------------------------------------- facts

FACT_FORMS: dict[str, tuple[str, ...]] = {
    "capital": (
        phrase("what is the capital of {x}?"),
        phrase("the capital of {x} is what?"),
        phrase("name the capital of {x}."),
        phrase("which city is the capital of {x}?"),
    ),
    "color": (
        phrase("what color is a {x}?"),
        phrase("a {x} is what color?"),
        phrase("name the color of a {x}."),
        phrase("which color is a {x}?"),
    ),
    "legs": (
        phrase("how many legs does a {x} have?"),
        phrase("a {x} has how many legs?"),
        phrase("count the legs of a {x}."),
        phrase("what number of legs does a {x} have?"),
    ),
    "home": (
        phrase("where does a {x} live?"),
        phrase("a {x} lives in which country?"),
        phrase("name the country where a {x} lives."),
        phrase("which country is home to a {x}?"),
    ),
    "home_capital": (
        phrase("what is the capital of the country where a {x} lives?"),
        phrase("a {x} lives in a country. what is its capital?"),
        phrase("name the capital of the home of a {x}."),
    ),
    # comparisons: each phrasing is used in both orders, so a pair has 4 forms
    "bigger": (phrase("which is bigger, a {x} or a {y}?"), phrase("of a {x} and a {y}, which is bigger?")),
    "smaller": (phrase("which is smaller, a {x} or a {y}?"), phrase("of a {x} and a {y}, which is smaller?")),
}
FACT_TYPES = {"capital": "capital", "color": "color", "legs": "count", "home": "country",
              "home_capital": "capital", "bigger": "creature", "smaller": "creature"}


def stable_index(key: str, n: int) -> int:
    """A platform-independent hash of `key` modulo n (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % n


def _fact(relation: str, d: Dice) -> tuple[str, list[str], str]:
    """Pick a fact of `relation`: (key, question variants in a fixed order, answer)."""
    forms = FACT_FORMS[relation]
    if relation == "capital":
        x = d.choice(LEXICON.countries)
        return f"{relation}:{x}", [f.format(x=x) for f in forms], LEXICON.capitals[x]
    if relation in ("bigger", "smaller"):
        x, y = sorted(d.sample(LEXICON.creatures, 2), key=lambda c: c.name)
        pick = max if relation == "bigger" else min
        answer = pick((x, y), key=lambda c: c.size_rank).name
        variants = [f.format(x=p.name, y=q.name) for f in forms for p, q in ((x, y), (y, x))]
        return f"{relation}:{x.name}:{y.name}", variants, answer
    c = d.choice(LEXICON.creatures)
    answer = {"color": c.color, "legs": str(c.legs), "home": c.home,
              "home_capital": LEXICON.capitals[c.home]}[relation]
    return f"{relation}:{c.name}", [f.format(x=c.name) for f in forms], answer


def fact_template(relation: str) -> Callable[[Dice, bool], Draft]:
    def template(d: Dice, heldout: bool) -> Draft:
        key, variants, answer = _fact(relation, d)
        reserved = stable_index(key, len(variants))
        q = variants[reserved] if heldout else d.choice([v for i, v in enumerate(variants) if i != reserved])
        return Draft(q, answer, FACT_TYPES[relation], f"fact_{relation}", partitioned=True)

    template.__name__ = f"fact_{relation}"
    return template


TEXT_FAMILIES: dict[str, tuple[Callable[[Dice, bool], Draft], ...]] = {
    "arith": (plus, minus, chain, compare),
    "facts": tuple(fact_template(r) for r in FACT_FORMS),
}
