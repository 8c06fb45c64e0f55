"""What a zoo model is made of: data recipe x model config x training recipe, and its cache key.

A recipe is plain data (nested dataclasses), so its hash is the hash of its JSON plus the source of
every file that turns it into data, weights or a tokenizer: changing a number or the code rebuilds,
anything else reuses the cache. Named recipes: `default` (the demo's model, minutes to build) and
`micro` (seconds: a few hundred items, a smaller model, a few steps; for tests).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from tamp.zoo.build import DEFAULT_SIZES, source_hash
from tamp.zoo.build import RECIPE_VERSION as DATA_VERSION
from tamp.zoo.build import code_hash as data_code_hash

#: files of this package whose source decides the model (the data generator hashes its own)
MODEL_FILES = ("recipe.py", "tokenizer.py", "model.py", "encode.py", "pretrain.py", "train.py")
RECIPE_FORMAT = "zoo-model-1"  # bump when the cache layout changes


@dataclass(frozen=True)
class DataRecipe:
    train: int = DEFAULT_SIZES["train"]
    calib: int = DEFAULT_SIZES["calib"]
    test: int = DEFAULT_SIZES["test"]
    seed: int = 0

    def sizes(self) -> dict[str, int]:
        return {"train": self.train, "calib": self.calib, "test": self.test}


@dataclass(frozen=True)
class ModelRecipe:
    """A tiny LLaVA: CLIP-style tower on 32 x 32 images in 8 x 8 patches, Llama decoder with GQA + SwiGLU.

    Every decoder linear's in_features (hidden, heads x head_dim, intermediate) is a multiple of 8,
    so 2:4 and 4:8 patterns apply.
    """

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
    intermediate: int = 352
    max_positions: int = 128


@dataclass(frozen=True)
class TrainRecipe:
    """AdamW on answer tokens only; DESIGN found lr 5e-4 learns and 2e-3 does not at batch 64."""

    epochs: float = 7.2  # 4500 steps of 64 over the 40k training items
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
    #: (steps, task or template names): the first steps sample only these items, then everything.
    #: A 1M-parameter decoder fed the whole 32-template mixture from the start stayed at chance on
    #: every question that reads a shape for 3000 steps; on four core templates alone it learns
    #: them in ~600 steps, and those skills then carry over to the rest.
    curriculum: tuple[tuple[int, tuple[str, ...]], ...] = (
        (600, ("color_at", "color_of_shape", "shape_at", "shape_of_color")),
    )
    #: (task or template name, weight) for sampling after the curriculum (others weigh 1); empty:
    #: plain epochs over the training split
    task_weights: tuple[tuple[str, float], ...] = (
        ("arith", 1.5), ("compose", 2.5), ("count", 1.5), ("color", 0.5), ("shape", 0.5), ("facts", 0.75),
    )
    seed: int = 0


@dataclass(frozen=True)
class ZooRecipe:
    name: str = "default"
    data: DataRecipe = field(default_factory=DataRecipe)
    model: ModelRecipe = field(default_factory=ModelRecipe)
    train: TrainRecipe = field(default_factory=TrainRecipe)

    def as_dict(self) -> dict:
        return asdict(self)


DEFAULT = ZooRecipe()
MICRO = ZooRecipe(
    name="micro",
    data=DataRecipe(train=480, calib=32, test=64, seed=0),
    model=ModelRecipe(vision_hidden=32, vision_layers=1, vision_heads=2, vision_intermediate=64,
                      hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128),
    train=TrainRecipe(epochs=2.0, batch_size=32, lr=2e-3, warmup_steps=4, vision_pretrain_steps=10,
                      curriculum=((4, ("color", "shape")),), freeze_vision=False),
)
RECIPES: dict[str, ZooRecipe] = {r.name: r for r in (DEFAULT, MICRO)}


def get_recipe(name: str | ZooRecipe | None = None) -> ZooRecipe:
    """A named recipe (`default` when None); a ZooRecipe passes through (tests build their own)."""
    if isinstance(name, ZooRecipe):
        return name
    key = name or "default"
    if key not in RECIPES:
        raise ValueError(f"unknown zoo recipe '{key}'; valid: {', '.join(RECIPES)}")
    return RECIPES[key]


def code_hash() -> str:
    """The model side's source (the data generator's hash is added in `recipe_hash`)."""
    return source_hash(MODEL_FILES)


def recipe_hash(recipe: ZooRecipe) -> str:
    """The cache key: recipe numbers (not its name), cache format, data and model source."""
    numbers = {k: v for k, v in recipe.as_dict().items() if k != "name"}
    key = {"format": RECIPE_FORMAT, "recipe": numbers, "data": [DATA_VERSION, data_code_hash()], "code": code_hash()}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


__all__ = ["DEFAULT", "MICRO", "RECIPES", "DataRecipe", "ModelRecipe", "TrainRecipe", "ZooRecipe",
           "get_recipe", "recipe_hash", "replace"]
