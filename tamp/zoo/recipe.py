"""What a zoo model is made of: data recipe x model config x training recipe, and its cache key.

A recipe is plain data (nested dataclasses). Its hash covers what decides the weights: its numbers
(as JSON), the bytes of the data its world generates (tamp.zoo.datalock: records, pixels, vocabulary,
not the generator's source, so a refactor that keeps the data keeps the hash and the shipped
models) and the source of the files that turn data into weights and a tokenizer (MODEL_FILES).
Changing a number, the data or that code rebuilds; anything else reuses the cache. Named recipes: `default` (the
demo's shipped model: a LLaVA-NeXT on the panel world, 134-token samples of which 120 are image
tokens, started from `v1`'s weights), `v1` (shipped too: the first default, a LLaVA-1.5 on 32 x 32
scenes and text questions, under 100 tokens a sample), and `micro` / `micro_next` (seconds: a few
hundred items, a smaller model of the same kind as `v1` / `default`, a few steps; for tests).
A recipe whose `train.init` names another starts from that recipe's trained weights, and its hash
includes the other's, so retraining `v1` rebuilds `default` too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from tamp.zoo.build import source_hash
from tamp.zoo.datalock import data_fingerprint

#: files of this package whose source decides the model (the data enters by its bytes). This file is
#: not among them: a recipe's numbers enter the hash as JSON, so changing one recipe leaves the others' hashes
#: (and their shipped weights) alone.
MODEL_FILES = ("tokenizer.py", "model.py", "encode.py", "pretrain.py", "train.py")
#: what else decides a model started from another recipe's (`train.init`)
INIT_FILES = ("warmstart.py",)
RECIPE_FORMAT = "zoo-model-1"  # bump when the cache layout changes
FAMILIES = ("llava", "llava_next")


@dataclass(frozen=True)
class DataRecipe:
    """Which world (tamp.zoo.worlds) and how many items per split."""

    world: str = "panels"
    train: int = 40_000
    calib: int = 256
    test: int = 1_200
    seed: int = 0

    def sizes(self) -> dict[str, int]:
        return {"train": self.train, "calib": self.calib, "test": self.test}


@dataclass(frozen=True)
class ModelRecipe:
    """A tiny LLaVA(-NeXT): CLIP-style tower on image_size tiles in patch_size patches, Llama decoder (GQA, SwiGLU).

    family "llava_next": the any-resolution model; `tiles` (rows, columns) is the tile grid of the
    world's images (the processor's grid pinpoints hold it), and every image becomes one base view
    plus its tiles, with an image-newline token after each row of tile patches. family "llava": one
    image_size square per image. Every decoder linear's in_features (hidden, heads x head_dim,
    intermediate) is a multiple of 8, so 2:4 and 4:8 patterns apply; with intermediate a multiple
    of hidden, a block's linears share a 1 / hidden grid of sparsities (tamp.sparsity.groups.snap).
    """

    family: str = "llava_next"
    tiles: tuple[int, int] = (2, 3)
    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 3
    vision_heads: int = 4
    vision_intermediate: int = 256
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 384
    max_positions: int = 256


@dataclass(frozen=True)
class TrainRecipe:
    """AdamW on answer tokens only; DESIGN found lr 5e-4 learns and 2e-3 does not at batch 64."""

    epochs: float = 4.8  # 3000 steps of 64 over the 40k training items
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05  # cosine decay down to lr x this
    grad_clip: float = 1.0
    vision_lr_mult: float = 1.0  # tower (unless frozen) + projector learn at lr x this (see tamp.zoo.train.param_groups)
    freeze_vision: bool = True  # after stage 0 the tower is frozen, as LLaVA keeps its CLIP tower frozen
    vision_pretrain_steps: int = 1000  # stage 0: the tower learns what each patch holds (pretrain.py)
    vision_pretrain_lr: float = 1e-3
    vision_pretrain_images: int = 0  # pretrain on the first N training images' tiles (0: all of them)
    #: a recipe name: start from its trained model (tamp.zoo.warmstart) instead of random weights and
    #: stage 0, as LLaVA-NeXT starts from LLaVA-1.5's; "" trains from scratch
    init: str = ""
    #: (steps, task or template names): the first steps sample only these items, then everything.
    curriculum: tuple[tuple[int, tuple[str, ...]], ...] = (
        (600, ("color_of_shape", "shape_of_color", "row_of", "column_of")),
    )
    #: (task or template name, weight) for sampling after the curriculum (others weigh 1); empty:
    #: plain epochs over the training split
    task_weights: tuple[tuple[str, float], ...] = ()
    seed: int = 0


@dataclass(frozen=True)
class ZooRecipe:
    name: str = "default"
    data: DataRecipe = field(default_factory=DataRecipe)
    model: ModelRecipe = field(default_factory=ModelRecipe)
    train: TrainRecipe = field(default_factory=TrainRecipe)

    def as_dict(self) -> dict:
        return asdict(self)


#: the first default zoo model (shipped; the default until 2026-12): a LLaVA-1.5 on the first world, under
#: 100 tokens a sample, trained from scratch
V1 = ZooRecipe(
    name="v1",
    data=DataRecipe(world="v1", train=40_000, calib=256, test=1_600),
    model=ModelRecipe(family="llava", tiles=(1, 1), intermediate=352, max_positions=128),
    train=TrainRecipe(
        epochs=7.2,  # 4500 steps of 64 over the 40k training items
        # A 1M-parameter decoder fed the whole 32-template mixture from the start stayed at chance on
        # every question that reads a shape for 3000 steps; on four core templates alone it learns
        # them in ~600 steps, and those skills then carry over to the rest.
        curriculum=((600, ("color_at", "color_of_shape", "shape_at", "shape_of_color")),),
        task_weights=(("arith", 1.5), ("compose", 2.5), ("count", 1.5), ("color", 0.5), ("shape", 0.5),
                      ("facts", 0.75)),
    ),
)
#: the default zoo model (the demo's, shipped), in the paper's regime: a LLaVA-NeXT on the panel world,
#: 134-token samples of which 120 are image tokens. Trained from random weights it had not learned its
#: questions after 4000 steps (40 minutes; README); started from v1's tower, projector and decoder it
#: learns them in minutes.
DEFAULT = ZooRecipe(
    name="default",
    data=DataRecipe(world="panels", train=40_000, calib=256, test=600),
    # v1's sizes, but 384 MLP units where v1 has 352 (tamp.zoo.warmstart widens them): a multiple of hidden,
    # so a block's linears share a 1/128 sparsity grid (1/32 with 352, where block-wise DAS at 50% rounded
    # every block to exactly 50% and copied Wanda)
    model=ModelRecipe(family="llava_next", tiles=(2, 3), intermediate=384, max_positions=256),
    train=TrainRecipe(epochs=1.6, batch_size=32, lr=5e-4, warmup_steps=50, vision_pretrain_steps=0,
                      curriculum=(), init="v1"),
)
#: the micro recipe of v1's kind (tests): the first world, a LLaVA-1.5
MICRO = ZooRecipe(
    name="micro",
    data=DataRecipe(world="v1", train=480, calib=32, test=64, seed=0),
    model=ModelRecipe(family="llava", tiles=(1, 1), vision_hidden=32, vision_layers=1, vision_heads=2,
                      vision_intermediate=64, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128,
                      max_positions=128),
    train=TrainRecipe(epochs=2.0, batch_size=32, lr=2e-3, warmup_steps=4, vision_pretrain_steps=10,
                      curriculum=((4, ("color", "shape")),), freeze_vision=False,
                      task_weights=V1.train.task_weights),
)
#: the micro recipe of the default's kind (tests): the panel world, a LLaVA-NeXT started from `micro`, its MLP
#: widened as the default's is (128 -> 192 units)
MICRO_NEXT = replace(MICRO, name="micro_next", data=replace(MICRO.data, world="panels", test=60),
                     model=replace(MICRO.model, family="llava_next", tiles=(2, 3), intermediate=192,
                                   max_positions=256),
                     train=replace(MICRO.train, task_weights=(), curriculum=(), vision_pretrain_steps=0,
                                   freeze_vision=True, init="micro"))
RECIPES: dict[str, ZooRecipe] = {r.name: r for r in (DEFAULT, V1, MICRO, MICRO_NEXT)}


def get_recipe(name: str | ZooRecipe | None = None) -> ZooRecipe:
    """A named recipe (`default` when None); a ZooRecipe passes through (tests build their own)."""
    if isinstance(name, ZooRecipe):
        return name
    key = name or "default"
    if key not in RECIPES:
        raise ValueError(f"unknown zoo recipe '{key}'; valid: {', '.join(RECIPES)}")
    return RECIPES[key]


def code_hash() -> str:
    """The model side's source (the data's fingerprint is added in `recipe_hash`)."""
    return source_hash(MODEL_FILES)


def init_recipe(recipe: ZooRecipe) -> ZooRecipe | None:
    """The recipe whose trained model `recipe` starts from (`train.init`), or None."""
    name = recipe.train.init
    if not name:
        return None
    if name not in RECIPES:
        raise ValueError(f"zoo recipe '{recipe.name}': train.init='{name}' is unknown; valid: {', '.join(RECIPES)}")
    if name == recipe.name or RECIPES[name].train.init:
        raise ValueError(f"zoo recipe '{recipe.name}': train.init='{name}' must name a recipe trained from scratch")
    return RECIPES[name]


def recipe_hash(recipe: ZooRecipe) -> str:
    """The cache key: recipe numbers (not its name), cache format, the fingerprint of its data's bytes, the
    model's source, and the hash of the recipe it starts from (so a change there rebuilds this one too)."""
    numbers = {k: v for k, v in recipe.as_dict().items() if k != "name"}
    data = data_fingerprint(recipe.data)["content"]
    key = {"format": RECIPE_FORMAT, "recipe": numbers, "data": data, "code": code_hash()}
    start = init_recipe(recipe)
    if start is None:  # recipes from scratch hash as before `init` existed (their shipped weights stay valid)
        del numbers["train"]["init"]
    else:
        key["init"] = [recipe_hash(start), source_hash(INIT_FILES)]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


__all__ = ["DEFAULT", "FAMILIES", "MICRO", "MICRO_NEXT", "RECIPES", "V1", "DataRecipe", "ModelRecipe", "TrainRecipe", "ZooRecipe",
           "get_recipe", "init_recipe", "recipe_hash", "replace"]
