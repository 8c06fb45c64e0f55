"""The zoo model's training pieces: patch labels from the layouts, the curriculum sampler, the frozen tower."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tamp.zoo.encode import EncodedSplit
from tamp.zoo.pretrain import PATCH_COLORS, PATCH_SHAPES, PATCH_SIZES, patch_labels, targets
from tamp.zoo.recipe import TrainRecipe
from tamp.zoo.tasks import make_item
from tamp.zoo.train import CurriculumSampler, param_groups


def _first(task: str, split: str = "train"):
    return next(it for it in (make_item(split, i) for i in range(64)) if it.task == task)


def test_patch_labels_put_each_object_in_its_cell_patch() -> None:
    item = _first("color")
    labels = patch_labels([item.layout()], 32, 8)[0]  # (16, 3)
    cells = {o["row"] * 4 + o["col"]: o for o in item.layout()["objects"]}
    for p in range(16):
        if p in cells:
            o = cells[p]
            assert labels[p].tolist() == [PATCH_SHAPES.index(o["shape"]), PATCH_COLORS.index(o["color"]),
                                          PATCH_SIZES.index(o["size"])]
        else:
            assert labels[p].tolist() == [0, 0, 0]


def test_patch_labels_agree_with_the_pixels() -> None:
    """Every labelled patch has foreground pixels and every foreground patch off the axis row is labelled."""
    for task in ("shape", "chart", "count"):
        item = _first(task)
        pixels = torch.from_numpy(np.array(item.image))[None]
        masks, _ = targets(pixels, 8)  # (1, 16, 64)
        labels = patch_labels([item.layout()], 32, 8)[0]
        has_fg = masks[0].sum(-1) > 0
        labelled = labels[:, 0] > 0
        if task == "chart":  # the grey axis is foreground in the bottom patch row, bars or not
            has_fg[12:] = labelled[12:]
        assert torch.equal(has_fg, labelled), task


def _split(tasks: list[str], templates: list[str]) -> EncodedSplit:
    n = len(tasks)
    return EncodedSplit(torch.zeros(n, 2, dtype=torch.long), torch.zeros(n, 2, dtype=torch.long),
                        torch.full((n,), 2), torch.full((n,), -1), torch.zeros(0, 1, 1, 3, dtype=torch.uint8),
                        tasks, ["x"] * n, [], templates)


def test_curriculum_samples_only_its_templates_then_everything() -> None:
    tasks = ["color", "color", "shape", "arith"] * 25
    templates = ["color_at", "color_of_shape", "shape_at", "plus"] * 25
    r = TrainRecipe(batch_size=8, curriculum=((5, ("color_at", "shape")),), task_weights=())
    sampler = CurriculumSampler(_split(tasks, templates), r, torch.Generator().manual_seed(0))
    early = torch.cat([sampler.rows(s) for s in range(5)])
    assert {templates[i] for i in early.tolist()} == {"color_at", "shape_at"}
    late = torch.cat([sampler.rows(s) for s in range(5, 30)])
    assert {templates[i] for i in late.tolist()} == set(templates)
    assert len(set(late[:96].tolist())) == 96, "after the curriculum: epochs without repeats"


def test_task_weights_shift_the_mixture() -> None:
    tasks = ["color", "arith"] * 200
    r = TrainRecipe(batch_size=64, curriculum=(), task_weights=(("arith", 3.0),))
    sampler = CurriculumSampler(_split(tasks, tasks), r, torch.Generator().manual_seed(0))
    rows = torch.cat([sampler.rows(s) for s in range(50)])
    share = sum(tasks[i] == "arith" for i in rows.tolist()) / len(rows)
    assert 0.7 < share < 0.8  # 3 : 1


def test_an_unknown_curriculum_name_is_one_clear_error() -> None:
    r = TrainRecipe(curriculum=((5, ("colour_at",)),))
    with pytest.raises(ValueError, match="colour_at"):
        CurriculumSampler(_split(["color"], ["color_at"]), r, torch.Generator())


def test_frozen_parameters_are_not_optimised() -> None:
    model = torch.nn.Module()
    model.vision_tower = torch.nn.Linear(2, 2)
    model.lm_head = torch.nn.Linear(2, 2)
    model.vision_tower.requires_grad_(False)
    params = [p for g in param_groups(model, TrainRecipe()) for p in g["params"]]
    assert len(params) == 2 and all(p.requires_grad for p in params)
