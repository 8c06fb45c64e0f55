"""The zoo's tiny LLaVA-NeXT (or LLaVA-1.5) with its processor, built locally from a `ModelRecipe`.

family "llava_next" (the `next` recipes): transformers' LlavaNextForConditionalGeneration with a
LlavaNextProcessor, so it saves and loads like any LLaVA-NeXT checkpoint (`from_pretrained`,
`tamp.models.loading.load_model(dir)` gives the llava_next adapter). The image processor's grid
pinpoints hold the world's tile grid; an image becomes its base view (the whole image resized to one
tile) and its tiles, neither resized nor cropped further, and the model packs the tile features with
its learned `image_newline` after every row, as LLaVA-NeXT does. family "llava": the default zoo model,
LlavaForConditionalGeneration on image_size squares, whose image processor only rescales and
normalises (which `tamp.zoo.encode` reproduces in bulk for training). In both, the CLIP tower keeps
its CLS token and the "default" feature strategy drops it, so a tile is (image_size / patch_size)^2
tokens and the processor is told about the one additional token.
"""

from __future__ import annotations

import transformers as tf

from tamp.models.tiny import seeded
from tamp.zoo.recipe import FAMILIES, ModelRecipe
from tamp.zoo.tokenizer import CHAT_TEMPLATE, build_tokenizer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def tile_tokens(m: ModelRecipe) -> int:
    """Tokens of one tile (or of a LLaVA-1.5 image): its patches."""
    return (m.image_size // m.patch_size) ** 2


def image_tokens(m: ModelRecipe) -> int:
    """Placeholder tokens of one image: LLaVA-NeXT's base view + tile patches + one newline per patch row."""
    if m.family == "llava":
        return tile_tokens(m)
    side = m.image_size // m.patch_size
    rows, cols = m.tiles[0] * side, m.tiles[1] * side
    return side * side + rows * (cols + 1)


def image_shape(m: ModelRecipe) -> tuple[int, int]:
    """(height, width) of the images the model is made for."""
    return m.tiles[0] * m.image_size, m.tiles[1] * m.image_size


def grid_pinpoints(m: ModelRecipe) -> list[list[int]]:
    """LLaVA-NeXT's candidate resolutions: the world's grid, its transpose and the smaller 1 x 2 / 2 x 2 grids."""
    s = m.image_size
    grids = dict.fromkeys([m.tiles, m.tiles[::-1], (1, 2), (2, 1), (2, 2)])
    return [[r * s, c * s] for r, c in grids]


def _check(m: ModelRecipe) -> None:
    for name in ("hidden", "intermediate"):
        if getattr(m, name) % 8:
            raise ValueError(f"zoo model.{name}={getattr(m, name)} must be a multiple of 8 (for 2:4 / 4:8)")
    if m.family not in FAMILIES:
        raise ValueError(f"zoo model.family='{m.family}' is unknown; valid: llava, llava_next")
    if m.family == "llava" and tuple(m.tiles) != (1, 1):
        raise ValueError(f"zoo model.tiles={m.tiles}: a llava model takes one image_size square, tiles (1, 1)")


def llava_config(m: ModelRecipe, tokenizer: tf.PreTrainedTokenizerBase) -> tf.LlavaConfig | tf.LlavaNextConfig:
    _check(m)
    vision = tf.CLIPVisionConfig(
        hidden_size=m.vision_hidden,
        intermediate_size=m.vision_intermediate,
        num_hidden_layers=m.vision_layers,
        num_attention_heads=m.vision_heads,
        image_size=m.image_size,
        patch_size=m.patch_size,
        projection_dim=m.vision_hidden,
    )
    text = tf.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=m.hidden,
        intermediate_size=m.intermediate,
        num_hidden_layers=m.layers,
        num_attention_heads=m.heads,
        num_key_value_heads=m.kv_heads,
        max_position_embeddings=m.max_positions,
        hidden_act="silu",
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    common = {
        "vision_config": vision,
        "text_config": text,
        "image_token_id": tokenizer.convert_tokens_to_ids("<image>"),
        "image_seq_length": tile_tokens(m),
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -1,  # a 3-layer tower has no layer to spare (LLaVA uses -2 of 24)
        "projector_hidden_act": "gelu",
    }
    if m.family == "llava_next":
        return tf.LlavaNextConfig(**common, image_grid_pinpoints=grid_pinpoints(m))
    return tf.LlavaConfig(**common)


def build_processor(m: ModelRecipe, tokenizer: tf.PreTrainedTokenizerBase) -> tf.LlavaProcessor | tf.LlavaNextProcessor:
    side = {"height": m.image_size, "width": m.image_size}
    if m.family == "llava_next":
        # tiles are cut at image_size exactly and not resized again; only the base view is resized
        image_processor = tf.LlavaNextImageProcessor(
            size={"shortest_edge": m.image_size},
            crop_size=side,
            image_grid_pinpoints=grid_pinpoints(m),
            do_resize=False,
            do_center_crop=False,
            image_mean=list(CLIP_MEAN),
            image_std=list(CLIP_STD),
        )
        return tf.LlavaNextProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=m.patch_size,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=CHAT_TEMPLATE,
        )
    image_processor = tf.CLIPImageProcessor(
        size={"shortest_edge": m.image_size},
        crop_size=side,
        do_resize=False,
        do_center_crop=False,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    return tf.LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=m.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        chat_template=CHAT_TEMPLATE,
    )


def build_model(m: ModelRecipe, words: list[str] | None = None,
                seed: int = 0) -> tuple[tf.PreTrainedModel, tf.ProcessorMixin]:
    """A freshly initialised (seeded) model and its processor, float32, in train mode.

    `words`: the world's vocabulary (None: the first world's, tamp.zoo.tasks.vocabulary()).
    """
    tokenizer = build_tokenizer(words)
    processor = build_processor(m, tokenizer)
    config = llava_config(m, tokenizer)
    cls = tf.LlavaNextForConditionalGeneration if m.family == "llava_next" else tf.LlavaForConditionalGeneration
    with seeded(seed):
        model = cls(config)
    return model.float(), processor
