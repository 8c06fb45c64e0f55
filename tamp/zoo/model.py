"""The zoo's tiny LLaVA: transformers' LlavaForConditionalGeneration with a LlavaProcessor, built locally.

Built from a `ModelRecipe` so it saves and loads like any LLaVA checkpoint (`from_pretrained`,
`tamp.models.loading.load_model(dir)` gives the llava adapter). The CLIP tower keeps its CLS token
and the "default" feature strategy drops it, so an image is (image_size / patch_size)^2 tokens and
the processor is told about the one additional token. The image processor neither resizes nor
crops (zoo images are already image_size square): it only rescales and normalises with CLIP's
statistics, which `tamp.zoo.encode` reproduces in bulk for training.
"""

from __future__ import annotations

import transformers as tf

from tamp.models.tiny import seeded
from tamp.zoo.recipe import ModelRecipe
from tamp.zoo.tokenizer import CHAT_TEMPLATE, build_tokenizer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def image_tokens(m: ModelRecipe) -> int:
    return (m.image_size // m.patch_size) ** 2


def llava_config(m: ModelRecipe, tokenizer: tf.PreTrainedTokenizerBase) -> tf.LlavaConfig:
    for name in ("hidden", "intermediate"):
        if getattr(m, name) % 8:
            raise ValueError(f"zoo model.{name}={getattr(m, name)} must be a multiple of 8 (for 2:4 / 4:8)")
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
    return tf.LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=image_tokens(m),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,  # a 3-layer tower has no layer to spare (LLaVA-1.5 uses -2 of 24)
        projector_hidden_act="gelu",
    )


def build_processor(m: ModelRecipe, tokenizer: tf.PreTrainedTokenizerBase) -> tf.LlavaProcessor:
    side = {"height": m.image_size, "width": m.image_size}
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


def build_model(m: ModelRecipe, seed: int = 0) -> tuple[tf.LlavaForConditionalGeneration, tf.LlavaProcessor]:
    """A freshly initialised (seeded) model and its processor, float32, in train mode."""
    tokenizer = build_tokenizer()
    processor = build_processor(m, tokenizer)
    with seeded(seed):
        model = tf.LlavaForConditionalGeneration(llava_config(m, tokenizer))
    return model.float(), processor
