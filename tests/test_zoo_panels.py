"""The panel world (the default zoo model's data): images, labels, splits and vocabulary.

The first world's tests (tests/test_zoo_data.py) cover the build mechanics both worlds share; here
the panel world's own promises: 64 x 96 images whose objects each sit inside one patch of one tile,
answers an independent oracle agrees with, image questions only, disjoint train and test.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tamp.zoo.build import build_zoo
from tamp.zoo.panel_questions import ANSWER_TYPES, PANEL_FAMILIES
from tamp.zoo.panel_scene import (
    HALF,
    HEIGHT,
    PATCH,
    TILE,
    WIDTH,
    PanelChart,
    PanelScene,
    cell_center,
    cell_patch,
)
from tamp.zoo.tasks import holdout_key, is_heldout, tokenize
from tamp.zoo.world import COLUMNS, PLURALS, ROWS, Dice
from tamp.zoo.worlds import PANELS, V1

SIZES = {"train": 120, "calib": 12, "test": 60}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    return build_zoo(tmp_path_factory.mktemp("panels"), SIZES, seed=5, progress=False, world="panels")


def _load(path: Path) -> list[dict]:
    return json.loads(path.read_text())


def test_records_are_image_questions_of_the_six_tasks(zoo):
    root = zoo["train"].parent
    for split, n in SIZES.items():
        records = _load(zoo[split])
        assert len(records) == n
        counts = Counter(r["task"] for r in records)
        assert set(counts) == set(PANELS.task_names) and max(counts.values()) - min(counts.values()) <= 1
        for rec in records:
            assert rec["conversations"][0]["value"].startswith("<image>\n"), "every question comes with its image"
            with Image.open(root / rec["image"]) as img:
                assert img.size == (WIDTH, HEIGHT) == (96, 64) and img.mode == "RGB"
            assert rec["answer"] in rec["choices"] and set(rec["choices"]) <= set(ANSWER_TYPES[rec["answer_type"]])
    for name in PANELS.task_names:
        assert {r["task"] for r in _load(zoo[f"test_{name}"])} == {name}
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["world"] == "panels"


def test_the_vocabulary_covers_every_question_and_answer_and_is_not_the_first_worlds(zoo):
    vocab = set(PANELS.vocabulary())
    assert json.loads((zoo["train"].parent / "vocab.json").read_text()) == PANELS.vocabulary()
    for split in SIZES:
        for rec in _load(zoo[split]):
            words = [w for turn in rec["conversations"] for w in tokenize(turn["value"])]
            words += [w for c in rec["choices"] for w in tokenize(c)]
            assert set(words) <= vocab, set(words) - vocab
    assert "panel" in vocab and "panel" not in V1.vocabulary(), "the worlds keep their own phrase lists"


def test_test_items_never_repeat_a_train_item():
    train = [PANELS.make_item("train", i) for i in range(600)]
    test = [PANELS.make_item("test", i) for i in range(240)]

    def key(item):
        return holdout_key(item.image.tobytes(), item.question)

    assert not {key(t) for t in test} & {key(t) for t in train}
    assert all(not is_heldout(key(t)) for t in train) and all(is_heldout(key(t)) for t in test)


def test_an_item_is_a_pure_function_of_split_index_and_seed(zoo, tmp_path):
    small = build_zoo(tmp_path, {"train": 10, "calib": 0, "test": 6}, seed=5, progress=False, world="panels")
    assert _load(small["train"]) == _load(zoo["train"])[:10]
    assert PANELS.make_item("train", 7, seed=5).record() == _load(zoo["train"])[7]


# ---------------------------------------------------------------- an independent oracle for the labels

_SINGULAR = {p: s for s, p in PLURALS.items()}


def _in_panel(o) -> tuple[str, str]:
    """Row and column of the object's cell inside its panel, from its pixel centre."""
    x, y = cell_center(o.row, o.col)
    return ROWS[(y % TILE) // PATCH], COLUMNS[(x % TILE) // PATCH]


def _scene_answer(q: str, scene: PanelScene) -> str:
    objs = scene.objects

    def one(**attrs: str):
        found = [o for o in objs if all(getattr(o, k) == v for k, v in attrs.items())]
        assert len(found) == 1, (q, attrs)
        return found[0]

    rules = [
        (r"what color is the (\w+) (\w+)\?", lambda m: one(size=m[1], shape=m[2]).color),
        (r"what color is the (\w+)\?", lambda m: one(shape=m[1]).color),
        (r"what shape is the (\w+) object\?", lambda m: one(color=m[1]).shape),
        (r"what size is the (\w+) (\w+)\?", lambda m: one(color=m[1], shape=m[2]).size),
        (r"how many objects are there\?", lambda m: str(len(objs))),
        (r"how many (\w+) objects are there\?", lambda m: str(sum(o.color == m[1] for o in objs))),
        (r"how many (\w+) are there\?", lambda m: str(sum(o.shape == _SINGULAR[m[1]] for o in objs))),
        (r"how many (\w+) (\w+) are there\?",
         lambda m: str(sum(o.color == m[1] and o.shape == _SINGULAR[m[2]] for o in objs))),
        (r"which row of its panel is the (\w+) (\w+) in\?", lambda m: _in_panel(one(color=m[1], shape=m[2]))[0]),
        (r"which column of its panel is the (\w+) (\w+) in\?",
         lambda m: _in_panel(one(color=m[1], shape=m[2]))[1]),
    ]
    for pattern, rule in rules:
        if m := re.fullmatch(pattern, q):
            return rule(m)
    raise AssertionError(f"no oracle rule for {q!r}")


def _chart_answer(q: str, chart: PanelChart) -> str:
    heights = {b.color: b.height for b in chart.bars}
    if q == "which bar is the tallest?":
        return max(heights, key=heights.get)
    if q == "which bar is the shortest?":
        return min(heights, key=heights.get)
    if q == "how many bars are there?":
        return str(len(chart.bars))
    m = re.fullmatch(r"what is the height of the (\w+) bar\?", q)
    assert m, q
    return str(heights[m[1]])


def _check_scene(scene: PanelScene) -> None:
    """Each object lies inside one 8 x 8 patch (so inside one tile) and objects never share a patch."""
    patches = set()
    for o in scene.objects:
        cx, cy = cell_center(o.row, o.col)
        cx, cy, r = cx + o.dx, cy + o.dy, HALF[o.size]
        row, col = cell_patch(o.row, o.col)
        assert row * PATCH <= cy - r and cy + r < (row + 1) * PATCH, o
        assert col * PATCH <= cx - r and cx + r < (col + 1) * PATCH, o
        assert (cx - r) % PATCH and (cy - r) % PATCH, "the patch's first pixel row and column stay background"
        patches.add((row, col))
    assert len(patches) == len(scene.objects)


@pytest.mark.parametrize("family", sorted(PANEL_FAMILIES))
def test_labels_match_an_independent_oracle(family):
    for template in PANEL_FAMILIES[family]:
        for i in range(150):
            draft = template(Dice(np.random.default_rng([77, i])), False)
            assert draft.answer in ANSWER_TYPES[draft.answer_type]
            if isinstance(draft.visual, PanelScene):
                _check_scene(draft.visual)
                assert _scene_answer(draft.question, draft.visual) == draft.answer
            else:
                assert isinstance(draft.visual, PanelChart)
                assert _chart_answer(draft.question, draft.visual) == draft.answer


def test_pixels_agree_with_the_layout():
    """Every object's patch has foreground pixels; every patch without an object or bar is background."""
    from tamp.zoo.pretrain import patch_labels, split_tiles, targets

    for index in range(0, 36):
        item = PANELS.make_item("train", index)
        pixels = np.array(item.image)
        assert pixels.shape == (HEIGHT, WIDTH, 3)
        labels = patch_labels([item.layout()], HEIGHT, PATCH, WIDTH)  # (1, 96, 3)
        import torch

        tiles, tile_labels = split_tiles(torch.from_numpy(pixels)[None], labels, TILE, PATCH)
        masks, _ = targets(tiles, PATCH)  # (6, 16, 64): each tile against its own corner pixel
        has_fg = masks.sum(-1) > 0
        labelled = tile_labels[..., 0] > 0
        if item.task == "chart":  # the axis is foreground in the bottom patch row of the bottom tiles
            has_fg[3:, 12:] = labelled[3:, 12:]
        assert torch.equal(has_fg, labelled), (index, item.template)
