"""The toy zoo's data on the first world (v1): determinism, split hygiene, labels, vocabulary, balance and the
build cache. The panel world's own promises are in tests/test_zoo_panels.py."""

from __future__ import annotations

import filecmp
import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tamp.zoo import build as zoo_build
from tamp.zoo.build import build_zoo
from tamp.zoo.questions import FAMILIES, RELATIONAL, _holds
from tamp.zoo.render import CELL_CENTERS, HALF
from tamp.zoo.tasks import TASK_NAMES, TASKS, holdout_key, is_heldout, make_item, tokenize, vocabulary
from tamp.zoo.textq import TEXT_FAMILIES
from tamp.zoo.world import (
    ANSWER_TYPES,
    COLUMNS,
    GRID,
    IMAGE_SIZE,
    LEXICON,
    NUMBER_WORDS,
    PLURALS,
    ROWS,
    Chart,
    Dice,
    Scene,
)

MICRO = {"train": 240, "calib": 24, "test": 160}


def _load(path: Path) -> list[dict]:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    return build_zoo(tmp_path_factory.mktemp("zoo"), MICRO, seed=3, progress=False, world="v1")


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_micro_build_is_fast_and_byte_identical(zoo, tmp_path):
    start = time.perf_counter()
    again = build_zoo(tmp_path / "again", MICRO, seed=3, progress=False, world="v1")
    assert time.perf_counter() - start < 5.0
    a, b = zoo["train"].parent, again["train"].parent
    assert _files(a) == _files(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, [str(p) for p in _files(a)], shallow=False)
    assert not mismatch and not errors
    other = build_zoo(tmp_path / "other", MICRO, seed=4, progress=False, world="v1")
    assert other["train"].read_bytes() != zoo["train"].read_bytes()


def test_item_does_not_depend_on_split_size(zoo, tmp_path):
    small = build_zoo(tmp_path / "small", {"train": 40, "calib": 0, "test": 8}, seed=3, progress=False, world="v1")
    assert _load(small["train"]) == _load(zoo["train"])[:40]
    assert _load(small["test"]) == _load(zoo["test"])[:8]
    small_root, big_root = small["train"].parent, zoo["train"].parent
    for rec in _load(small["train"]):
        if "image" in rec:
            assert (small_root / rec["image"]).read_bytes() == (big_root / rec["image"]).read_bytes()
    assert make_item("train", 17, seed=3).record() == _load(zoo["train"])[17]


def test_records_are_llava_conversations_with_existing_images(zoo):
    root = zoo["train"].parent
    for split in ("train", "calib", "test"):
        records = _load(zoo[split])
        assert len(records) == MICRO[split]
        for rec in records:
            human, gpt = rec["conversations"]
            assert (human["from"], gpt["from"]) == ("human", "gpt")
            assert gpt["value"] == rec["answer"]
            assert rec["id"].startswith(split + "-")
            if "image" in rec:
                assert human["value"].startswith("<image>\n")
                with Image.open(root / rec["image"]) as img:
                    assert img.size == (IMAGE_SIZE, IMAGE_SIZE) and img.mode == "RGB"
            else:
                assert "<image>" not in human["value"]
                assert not next(t for t in TASKS if t.name == rec["task"]).image


def test_answers_are_among_their_choices(zoo):
    for split in ("train", "calib", "test"):
        for rec in _load(zoo[split]):
            values = ANSWER_TYPES[rec["answer_type"]]
            assert rec["answer"] in rec["choices"]
            assert len(set(rec["choices"])) == len(rec["choices"]) == min(4, len(values))
            assert set(rec["choices"]) <= set(values)


def test_tasks_are_balanced(zoo):
    for split in ("train", "test"):
        counts = Counter(r["task"] for r in _load(zoo[split]))
        assert set(counts) == set(TASK_NAMES)
        assert max(counts.values()) - min(counts.values()) <= 1
    for name in TASK_NAMES:
        recs = _load(zoo[f"test_{name}"])
        assert len(recs) == MICRO["test"] // len(TASK_NAMES) and {r["task"] for r in recs} == {name}


def test_vocabulary_covers_every_question_and_answer(zoo):
    vocab = set(vocabulary())
    assert vocabulary() == sorted(vocab)
    assert json.loads((zoo["train"].parent / "vocab.json").read_text()) == vocabulary()
    for split in ("train", "calib", "test"):
        for rec in _load(zoo[split]):
            words = [w for turn in rec["conversations"] for w in tokenize(turn["value"])]
            words += [w for c in rec["choices"] for w in tokenize(c)]
            assert set(words) <= vocab, set(words) - vocab
    lexicon = {*LEXICON.capitals, *LEXICON.capitals.values(), *(c.name for c in LEXICON.creatures)}
    assert len(lexicon) == 36
    assert "<image>" not in vocab


def _key(item) -> bytes:
    return holdout_key(item.image.tobytes() if item.image is not None else None, item.question)


def test_test_split_never_repeats_a_train_item():
    """Hash buckets keep every (image, question) of test out of train; facts hold out a phrasing."""
    train = [make_item("train", i) for i in range(1600)]
    calib = [make_item("calib", i) for i in range(200)]
    test = [make_item("test", i) for i in range(400)]
    assert not {_key(t) for t in test} & {_key(t) for t in train + calib}
    for item in train + calib:
        assert item.task == "facts" or not is_heldout(_key(item))
    for item in test:
        assert item.task == "facts" or is_heldout(_key(item))
    seen = {t.question for t in train + calib if t.task == "facts"}
    assert not {t.question for t in test if t.task == "facts"} & seen
    assert len({t.id for t in train + calib + test}) == len(train + calib + test)


def test_manifest_skips_an_intact_build_and_rebuilds_otherwise(tmp_path, monkeypatch):
    sizes = {"train": 48, "calib": 8, "test": 16}
    paths = build_zoo(tmp_path, sizes, seed=1, progress=False, world="v1")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["recipe"] == zoo_build.RECIPE_VERSION and manifest["sizes"] == sizes
    calls = []
    real = zoo_build._generate
    monkeypatch.setattr(zoo_build, "_generate", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    assert build_zoo(tmp_path, sizes, seed=1, progress=False, world="v1") == paths
    assert calls == []
    images = sorted((tmp_path / "images").iterdir())
    images[-1].unlink()  # a missing image is noticed
    build_zoo(tmp_path, sizes, seed=1, progress=False, world="v1")
    assert calls == ["train", "calib", "test"] and images[-1].exists()
    calls.clear()
    paths["calib"].write_text("[]")  # an edited file is noticed
    build_zoo(tmp_path, sizes, seed=1, progress=False, world="v1")
    assert len(_load(paths["calib"])) == 8 and calls
    calls.clear()
    build_zoo(tmp_path, {**sizes, "train": 16}, seed=1, progress=False, world="v1")  # new sizes: rebuilt, stale gone
    assert calls and not (tmp_path / "images" / "train-000040.png").exists()
    assert json.loads((tmp_path / "manifest.json").read_text())["content_hash"] != manifest["content_hash"]


# ---------------------------------------------------------------- an independent oracle for the labels

_NUM = {w: i for i, w in enumerate(NUMBER_WORDS)} | {str(i): i for i in range(len(NUMBER_WORDS))}
_SINGULAR = {p: s for s, p in PLURALS.items()}


def _scene_answer(q: str, scene: Scene) -> str:
    objs = scene.objects

    def one(**attrs: str) -> object:
        found = [o for o in objs if all(getattr(o, k) == v for k, v in attrs.items())]
        assert len(found) == 1, (q, attrs)
        return found[0]

    def at(row: str, col: str) -> object:
        return one(row=ROWS.index(row), col=COLUMNS.index(col))

    def exists(m: re.Match) -> str:
        ref = one(color=m[4], shape=m[5])
        hits = [o for o in objs if (o.color, o.shape) == (m[1], m[2]) and _holds(m[3], o.cell, ref.cell)]
        return "yes" if hits else "no"

    rules = [
        (r"what color is the (\w+) (\w+)\?", lambda m: one(size=m[1], shape=m[2]).color),
        (r"what color is the (\w+)\?", lambda m: one(shape=m[1]).color),
        (r"what color is the object at the (\w+) (\w+)\?", lambda m: at(m[1], m[2]).color),
        (r"what shape is the (\w+) object\?", lambda m: one(color=m[1]).shape),
        (r"what shape is at the (\w+) (\w+)\?", lambda m: at(m[1], m[2]).shape),
        (r"what size is the (\w+) (\w+)\?", lambda m: one(color=m[1], shape=m[2]).size),
        (r"how many objects are there\?", lambda m: str(len(objs))),
        (r"how many (\w+) objects are there\?", lambda m: str(sum(o.color == m[1] for o in objs))),
        (r"how many (\w+) are there\?", lambda m: str(sum(o.shape == _SINGULAR[m[1]] for o in objs))),
        (r"how many (\w+) (\w+) are there\?",
         lambda m: str(sum(o.color == m[1] and o.shape == _SINGULAR[m[2]] for o in objs))),
        (r"which row is the (\w+) (\w+) in\?", lambda m: ROWS[one(color=m[1], shape=m[2]).row]),
        (r"which column is the (\w+) (\w+) in\?", lambda m: COLUMNS[one(color=m[1], shape=m[2]).col]),
        (r"is there a (\w+) (\w+) (left of|right of|above|below) the (\w+) (\w+)\?", exists),
        (r"how many objects are (left of|right of|above|below) the (\w+) (\w+)\?",
         lambda m: str(sum(_holds(m[1], o.cell, one(color=m[2], shape=m[3]).cell) for o in objs))),
    ]
    for pattern, rule in rules:
        if m := re.fullmatch(pattern, q):
            return rule(m)
    raise AssertionError(f"no oracle rule for {q!r}")


def _chart_answer(q: str, chart: Chart) -> str:
    by_color = {b.color: b.height for b in chart.bars}
    if q == "which bar is the tallest?":
        return max(by_color, key=by_color.get)
    if q == "which bar is the shortest?":
        return min(by_color, key=by_color.get)
    if q == "how many bars are there?":
        return str(len(chart.bars))
    if m := re.fullmatch(r"what is the height of the (\w+) bar\?", q):
        return str(by_color[m[1]])
    m = re.fullmatch(r"is the (\w+) bar taller than the (\w+) bar\?", q)
    assert m, q
    return "yes" if by_color[m[1]] > by_color[m[2]] else "no"


def _check_layout(scene: Scene) -> None:
    """Objects stay inside the image and never touch, so every one is fully visible."""
    boxes = []
    for o in scene.objects:
        cx, cy, r = CELL_CENTERS[o.col] + o.dx, CELL_CENTERS[o.row] + o.dy, HALF[o.size]
        assert 0 <= cx - r and cx + r < IMAGE_SIZE and 0 <= cy - r and cy + r < IMAGE_SIZE
        boxes.append((cx - r, cy - r, cx + r, cy + r))
    assert len({o.cell for o in scene.objects}) == len(scene.objects) <= GRID * GRID
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] + 1 < b[0] or b[2] + 1 < a[0] or a[3] + 1 < b[1] or b[3] + 1 < a[1]


def _text_answer(q: str) -> str:
    nums = [_NUM[w] for w in tokenize(q) if w in _NUM]
    if q.startswith("which is larger"):
        return str(max(nums))
    if q.startswith("which is smaller,") and nums:
        return str(min(nums))
    if m := re.fullmatch(r"what is (\w+) (plus|minus) (\w+)(?: (plus|minus) (\w+))?\?", q):
        value = _NUM[m[1]]
        for op, arg in ((m[2], m[3]), (m[4], m[5])):
            if op:
                value += _NUM[arg] if op == "plus" else -_NUM[arg]
        return str(value)
    creatures = [c for w in tokenize(q) for c in LEXICON.creatures if c.name == w]
    country = [w for w in tokenize(q) if w in LEXICON.capitals]
    if country:
        return LEXICON.capitals[country[0]]
    if len(creatures) == 2:
        pick = max if "bigger" in q else min
        return pick(creatures, key=lambda c: c.size_rank).name
    (c,) = creatures
    if "legs" in q:
        return str(c.legs)
    if "capital" in q:
        return LEXICON.capitals[c.home]
    if "color" in q:
        return c.color
    return c.home


@pytest.mark.parametrize("family", sorted(FAMILIES) + sorted(TEXT_FAMILIES) + [f"relational_{f}" for f in RELATIONAL])
def test_labels_match_an_independent_oracle(family):
    templates = FAMILIES.get(family) or TEXT_FAMILIES.get(family) or RELATIONAL[family.removeprefix("relational_")]
    for template in templates:
        for i in range(150):
            draft = template(Dice(np.random.default_rng([99, i])), i % 2 == 0)
            assert draft.answer in ANSWER_TYPES[draft.answer_type]
            if isinstance(draft.visual, Scene):
                _check_layout(draft.visual)
                assert _scene_answer(draft.question, draft.visual) == draft.answer
            elif isinstance(draft.visual, Chart):
                assert _chart_answer(draft.question, draft.visual) == draft.answer
            else:
                assert _text_answer(draft.question) == draft.answer, draft.question


def test_answer_balance_of_yes_no_and_counts():
    """Answers chosen first keep priors weak: yes/no near 50/50, counts spread over their range."""
    items = [make_item("train", i) for i in range(4, 2400, len(TASKS))]  # the compose task
    assert {it.task for it in items} == {"compose"}
    drafts = [t(Dice(np.random.default_rng([5, i])), False) for t in RELATIONAL["compose"] for i in range(300)]
    yes = Counter(d.answer for d in drafts if d.answer_type == "yesno")
    assert abs(yes["yes"] - yes["no"]) < 0.25 * sum(yes.values())
    counts = Counter(it.answer for it in items if it.answer_type == "count")
    assert set(counts) == {"0", "1", "2", "3", "4"}
