"""Tiny LLaVA-family and plain decoder models with real transformers processors configured small.

Decoder: 2 blocks, hidden 64, 4 heads / 2 kv heads, SwiGLU 128 (every linear's in_features is a
multiple of 8, so 4:8 masks apply). Vision: a 2-layer CLIP (LLaVA, LLaVA-NeXT) or SigLIP
(OneVision) tower on 28 x 28 images with 7 x 7 patches: 16 patches per tile, so a sample holds tens
of media tokens. Weights are a pure function of the seed; models are float32 and in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import transformers as tf
from PIL import Image, ImageDraw

from tamp.models.decoder_lm import DecoderLMAdapter
from tamp.models.llava import LlavaAdapter
from tamp.models.llava_next import LlavaNextAdapter
from tamp.models.llava_onevision import LlavaOnevisionAdapter
from tamp.models.tiny import TinyBundle, TinyExample, register_tiny, seeded
from tamp.models.tiny.tokenizer import build_tokenizer

IMAGE_TOKEN, VIDEO_TOKEN = "<image>", "<video>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
TILE, PATCH = 28, 7  # vision input side and patch side: 4 x 4 = 16 patches per tile
VISION_HIDDEN = 32

# Renders a content part list (or a plain string): media placeholders first, then the text parts.
_PARTS = (
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for p in m['content'] %}{% if p['type'] == 'image' %}" + IMAGE_TOKEN + "\n"
    "{% elif p['type'] == 'video' %}" + VIDEO_TOKEN + "\n{% endif %}{% endfor %}"
    "{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}"
    "{% endif %}"
)
#: LLaVA-1.5 / Vicuna style: "USER: <image>\nq ASSISTANT: a</s>"
USER_ASSISTANT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}" + _PARTS + " "
    "{% elif m['role'] == 'user' %}USER: " + _PARTS + " "
    "{% else %}ASSISTANT: " + _PARTS + "{{ eos_token }} {% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
#: Qwen / ChatML style: "<|im_start|>user\n<image>\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"
CHATML_TEMPLATE = (
    "{% for m in messages %}" + IM_START + "{{ m['role'] }}\n" + _PARTS + IM_END + "\n{% endfor %}"
    "{% if add_generation_prompt %}" + IM_START + "assistant\n{% endif %}"
)


def _text_config(config_cls: type, tokenizer: tf.PreTrainedTokenizerFast) -> tf.PretrainedConfig:
    return config_cls(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )


def _vision_config(config_cls: type, **extra: object) -> tf.PretrainedConfig:
    return config_cls(
        hidden_size=VISION_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=TILE,
        patch_size=PATCH,
        **extra,
    )


def _build(
    model_cls: Callable[..., tf.PreTrainedModel], config: tf.PretrainedConfig, seed: int
) -> tf.PreTrainedModel:
    with seeded(seed):
        model = model_cls(config)
    return model.float().eval()


# ------------------------------------------------------------------------------------------ media
def shape_image(colour: str = "red", width: int = 40, height: int = 32) -> Image.Image:
    """A coloured square on white; not square overall so any-resolution tiling is exercised."""
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).rectangle([8, 6, 24, 22], fill=colour)
    return image


def moving_square_video(frames: int = 4, width: int = 40, height: int = 32) -> np.ndarray:
    """(frames, H, W, 3) uint8: a blue square moving to the right."""
    video = np.full((frames, height, width, 3), 255, dtype=np.uint8)
    for t in range(frames):
        x = 4 + 6 * t
        video[t, 8:20, x : x + 12] = (0, 0, 255)
    return video


def _turn(role: str, text: str, media: tuple[str, ...] = ()) -> dict:
    return {"role": role, "content": [*({"type": m} for m in media), {"type": "text", "text": text}]}


def image_example() -> TinyExample:
    """Two turns about one image, so label spans of more than one answer are exercised."""
    messages = [
        _turn("user", "What colour is the square?", ("image",)),
        _turn("assistant", "Red."),
        _turn("user", "How many squares are there?"),
        _turn("assistant", "One."),
    ]
    return TinyExample(messages, images=[shape_image()])


def video_example() -> TinyExample:
    messages = [_turn("user", "Where does the square move?", ("video",)), _turn("assistant", "Right.")]
    return TinyExample(messages, videos=[moving_square_video()])


def text_example() -> TinyExample:
    messages = [
        {"role": "user", "content": "What is two plus three?"},
        {"role": "assistant", "content": "Five."},
    ]
    return TinyExample(messages)


# ------------------------------------------------------------------------------------------ families
@register_tiny("llava")
def build_llava(seed: int = 0) -> TinyBundle:
    tokenizer = build_tokenizer([IMAGE_TOKEN], USER_ASSISTANT_TEMPLATE)
    config = tf.LlavaConfig(
        vision_config=_vision_config(tf.CLIPVisionConfig, projection_dim=VISION_HIDDEN),
        text_config=_text_config(tf.LlamaConfig, tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(TILE // PATCH) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    model = _build(tf.LlavaForConditionalGeneration, config, seed)
    image_processor = tf.LlavaImageProcessor(
        size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE}
    )
    # CLIP prepends a CLS token that the "default" strategy drops: 1 additional token, minus 1.
    processor = tf.LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=USER_ASSISTANT_TEMPLATE,
    )
    return TinyBundle(model, processor, LlavaAdapter(model, processor), "llava", image_example)


@register_tiny("llava_next")
def build_llava_next(seed: int = 0) -> TinyBundle:
    tokenizer = build_tokenizer([IMAGE_TOKEN], USER_ASSISTANT_TEMPLATE)
    pinpoints = [[TILE, 2 * TILE], [2 * TILE, TILE], [2 * TILE, 2 * TILE]]
    config = tf.LlavaNextConfig(
        vision_config=_vision_config(tf.CLIPVisionConfig, projection_dim=VISION_HIDDEN),
        text_config=_text_config(tf.LlamaConfig, tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_grid_pinpoints=pinpoints,
        image_seq_length=(TILE // PATCH) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    model = _build(tf.LlavaNextForConditionalGeneration, config, seed)
    image_processor = tf.LlavaNextImageProcessor(
        size={"shortest_edge": TILE},
        crop_size={"height": TILE, "width": TILE},
        image_grid_pinpoints=pinpoints,
    )
    processor = tf.LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=USER_ASSISTANT_TEMPLATE,
    )
    return TinyBundle(model, processor, LlavaNextAdapter(model, processor), "llava_next", image_example)


@register_tiny("llava_onevision")
def build_llava_onevision(seed: int = 0) -> TinyBundle:
    tokenizer = build_tokenizer([IMAGE_TOKEN, VIDEO_TOKEN, IM_START], CHATML_TEMPLATE, bos=None, eos=IM_END)
    pinpoints = [[TILE, TILE], [TILE, 2 * TILE], [2 * TILE, TILE], [2 * TILE, 2 * TILE]]
    config = tf.LlavaOnevisionConfig(
        vision_config=_vision_config(tf.SiglipVisionConfig, vision_use_head=False),
        text_config=_text_config(tf.Qwen2Config, tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    model = _build(tf.LlavaOnevisionForConditionalGeneration, config, seed)
    size = {"height": TILE, "width": TILE}
    processor = tf.LlavaOnevisionProcessor(
        image_processor=tf.LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer,
        video_processor=tf.LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(TILE // PATCH) ** 2,  # SigLIP has no CLS token
        vision_feature_select_strategy="full",
        chat_template=CHATML_TEMPLATE,
    )
    adapter = LlavaOnevisionAdapter(model, processor)
    return TinyBundle(model, processor, adapter, "llava_onevision", image_example, [video_example])


def _build_decoder(name: str, config_cls: type, chatml: bool, seed: int) -> TinyBundle:
    if chatml:
        tokenizer = build_tokenizer([IM_START], CHATML_TEMPLATE, bos=None, eos=IM_END)
    else:
        tokenizer = build_tokenizer([], USER_ASSISTANT_TEMPLATE)
    model = _build(tf.AutoModelForCausalLM.from_config, _text_config(config_cls, tokenizer), seed)
    return TinyBundle(
        model, tokenizer, DecoderLMAdapter(model, tokenizer), "decoder_lm", text_example, name=name
    )


@register_tiny("llama")
def build_llama(seed: int = 0) -> TinyBundle:
    return _build_decoder("llama", tf.LlamaConfig, chatml=False, seed=seed)


@register_tiny("qwen2")
def build_qwen2(seed: int = 0) -> TinyBundle:
    return _build_decoder("qwen2", tf.Qwen2Config, chatml=True, seed=seed)
