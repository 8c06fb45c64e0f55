"""Tiny Qwen2-VL, Qwen2.5-VL and Qwen2.5-Omni-thinker models with real processors, built offline.

Shapes follow the real models where the code depends on them (patch 14, 2x2 merge, temporal patch 2,
M-RoPE sections in the real 1:1.5:1.5 ratio, Whisper-style mel features at 16 kHz) and are tiny
everywhere else: decoder 2 x 64 (GQA 4/2 heads, MLP 128), towers 1-2 blocks of width 32. Pixel
bounds are small so an image gives 16-64 tokens and a 4-frame video about 18.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import transformers
from PIL import Image

from tamp.models.registry import adapter_class
from tamp.models.tiny import TinyBundle, TinyExample, register_tiny, seeded
from tamp.models.tiny.tokenizer import build_tokenizer

HIDDEN, HEADS, KV_HEADS, MLP, LAYERS = 64, 4, 2, 128, 2
MROPE_SECTION = [2, 3, 3]  # sums to head_dim / 2 = 8 (time, height, width), like the real [16, 24, 24]
PATCH, MERGE, TEMPORAL = 14, 2, 2
IMAGE_PIXELS = {"min_pixels": 112 * 112, "max_pixels": 224 * 224}  # 16 to 64 tokens per image
VIDEO_PIXELS = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}  # 4 to 16 tokens per frame pair
SAMPLING_RATE = 16000
MEL_BINS = 16

# Qwen's chat markup: ChatML turns, media as start/placeholder/end; no BOS, no default system prompt
_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{IMAGE}"
    "{%- elif item['type'] == 'video' -%}{VIDEO}"
    "{%- elif item['type'] == 'audio' -%}{AUDIO}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

VL_TOKENS = {
    "image": "<|image_pad|>",
    "video": "<|video_pad|>",
    "start": "<|vision_start|>",
    "end": "<|vision_end|>",
}
OMNI_TOKENS = {
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "audio_token": "<|AUDIO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}
CHAT_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def chat_template(image: str, video: str, audio: str = "") -> str:
    """The shared template with each media item rendered as its placeholder string."""
    return _TEMPLATE.replace("{IMAGE}", image).replace("{VIDEO}", video).replace("{AUDIO}", audio)


def _text_config(tokenizer: Any) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": HIDDEN,
        "intermediate_size": MLP,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": list(MROPE_SECTION),
        },
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
    }


def _windowed_vision_config() -> dict[str, Any]:
    """Qwen2.5-style tower: block 0 uses 2x2-merged-unit windows, block 1 full attention."""
    return {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "out_hidden_size": HIDDEN,
        "num_heads": 2,
        "patch_size": PATCH,
        "spatial_merge_size": MERGE,
        "temporal_patch_size": TEMPORAL,
        "window_size": 2 * MERGE * PATCH,
        "fullatt_block_indexes": [1],
    }


def _vision_processors() -> tuple[Any, Any]:
    common = {"patch_size": PATCH, "merge_size": MERGE, "temporal_patch_size": TEMPORAL}
    image = transformers.Qwen2VLImageProcessor(**IMAGE_PIXELS, **common)
    video = transformers.Qwen2VLVideoProcessor(**VIDEO_PIXELS, **common, cap_pixels_per_frame=False)
    return image, video


def _finish(model: Any, processor: Any, family: str, examples: list[TinyExample]) -> TinyBundle:
    model.float().eval()
    adapter = adapter_class(family)(model, processor)
    return TinyBundle(model, processor, adapter, family, examples[0], tuple(examples[1:]), family)


# ----------------------------------------------------------------------------------------- media
def _image(rng: np.random.Generator, height: int = 96, width: int = 128) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _video(rng: np.random.Generator, frames: int = 4, size: int = 84) -> np.ndarray:
    """(frames, H, W, 3) uint8: the array layout every Qwen video processor accepts."""
    return rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)


def _audio(rng: np.random.Generator, seconds: float = 1.0) -> np.ndarray:
    return (0.1 * rng.standard_normal(int(SAMPLING_RATE * seconds))).astype(np.float32)


def _turns(media: list[dict[str, str]], question: str, answer: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": [*media, {"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


def _vl_examples(seed: int) -> list[TinyExample]:
    rng = np.random.default_rng(seed)
    image = TinyExample(
        _turns([{"type": "image"}], "what color is the big square?", "the big square is red."),
        images=[_image(rng)],
    )
    video = TinyExample(
        _turns([{"type": "video"}], "what moves in the video?", "a small red ball moves left."),
        videos=[_video(rng)],
    )
    return [image, video]


# ----------------------------------------------------------------------------------------- builders
def _vl_tokenizer() -> tuple[Any, str]:
    placeholders = [VL_TOKENS[k] for k in ("start", "end", "image", "video")]
    start, end = VL_TOKENS["start"], VL_TOKENS["end"]
    template = chat_template(start + VL_TOKENS["image"] + end, start + VL_TOKENS["video"] + end)
    tokenizer = build_tokenizer(
        [*CHAT_TOKENS, *placeholders], template, bos=None, eos="<|im_end|>", pad="<|endoftext|>"
    )
    return tokenizer, template


def _build_vl(family: str, seed: int) -> TinyBundle:
    tokenizer, template = _vl_tokenizer()
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in VL_TOKENS.items()}
    if family == "qwen2_vl":
        vision: dict[str, Any] = {
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": HIDDEN,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": PATCH,
            "spatial_merge_size": MERGE,
            "temporal_patch_size": TEMPORAL,
        }
        config_cls, model_cls, proc_cls = (
            "Qwen2VLConfig",
            "Qwen2VLForConditionalGeneration",
            "Qwen2VLProcessor",
        )
    else:
        vision = {**_windowed_vision_config(), "tokens_per_second": 2}
        config_cls, model_cls = "Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration"
        proc_cls = "Qwen2_5_VLProcessor"
    config = getattr(transformers, config_cls)(
        text_config=_text_config(tokenizer),
        vision_config=vision,
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["start"],
        vision_end_token_id=ids["end"],
        tie_word_embeddings=False,
    )
    with seeded(seed):
        model = getattr(transformers, model_cls)(config)
    image_proc, video_proc = _vision_processors()
    processor = getattr(transformers, proc_cls)(
        image_processor=image_proc, tokenizer=tokenizer, video_processor=video_proc, chat_template=template
    )
    return _finish(model, processor, family, _vl_examples(seed))


@register_tiny("qwen2_vl")
def build_qwen2_vl(seed: int = 0) -> TinyBundle:
    return _build_vl("qwen2_vl", seed)


@register_tiny("qwen2_5_vl")
def build_qwen2_5_vl(seed: int = 0) -> TinyBundle:
    return _build_vl("qwen2_5_vl", seed)


def omni_tokenizer() -> tuple[Any, str]:
    """Tokenizer whose named media tokens (`tokenizer.audio_token` ...) the Omni processor reads."""
    t = OMNI_TOKENS
    template = chat_template(
        t["vision_bos_token"] + t["image_token"] + t["vision_eos_token"],
        t["vision_bos_token"] + t["video_token"] + t["vision_eos_token"],
        t["audio_bos_token"] + t["audio_token"] + t["audio_eos_token"],
    )
    tokenizer = build_tokenizer(
        [*CHAT_TOKENS, *OMNI_TOKENS.values()], template, bos=None, eos="<|im_end|>", pad="<|endoftext|>"
    )
    # named model-specific tokens are saved in tokenizer_config.json and come back as attributes
    tokenizer._set_model_specific_special_tokens(dict(OMNI_TOKENS))
    return tokenizer, template


def omni_thinker_config(tokenizer: Any) -> transformers.Qwen2_5OmniThinkerConfig:
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in OMNI_TOKENS.items()}
    return transformers.Qwen2_5OmniThinkerConfig(
        text_config={**_text_config(tokenizer), "tie_word_embeddings": False},
        vision_config=_windowed_vision_config(),
        audio_config={
            "num_mel_bins": MEL_BINS,
            "encoder_layers": 1,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "d_model": 32,
            "output_dim": HIDDEN,
            "max_source_positions": 100,
            "n_window": 50,
        },
        audio_token_index=ids["audio_token"],
        image_token_index=ids["image_token"],
        video_token_index=ids["video_token"],
        audio_start_token_id=ids["audio_bos_token"],
        audio_end_token_id=ids["audio_eos_token"],
        # read by get_rope_index although the thinker config declares no such field
        vision_start_token_id=ids["vision_bos_token"],
        vision_end_token_id=ids["vision_eos_token"],
        tie_word_embeddings=False,
    )


def omni_processor(tokenizer: Any, template: str) -> transformers.Qwen2_5OmniProcessor:
    image_proc, video_proc = _vision_processors()
    features = transformers.WhisperFeatureExtractor(
        feature_size=MEL_BINS,
        sampling_rate=SAMPLING_RATE,
        hop_length=160,
        chunk_length=2,  # pads to 2 s (200 frames) instead of Whisper's 30 s
        n_fft=400,
        return_attention_mask=True,
    )
    return transformers.Qwen2_5OmniProcessor(
        image_processor=image_proc,
        video_processor=video_proc,
        feature_extractor=features,
        tokenizer=tokenizer,
        chat_template=template,
    )


def omni_examples(seed: int) -> list[TinyExample]:
    rng = np.random.default_rng(seed)
    audio_video = TinyExample(
        _turns(
            [{"type": "video"}, {"type": "audio"}],
            "what sound does the video have?",
            "a dog in the video is near the car.",
        ),
        videos=[_video(rng)],
        audios=[_audio(rng)],
    )
    image = TinyExample(
        _turns([{"type": "image"}], "how many circles are there?", "there are three circles."),
        images=[_image(rng)],
    )
    return [audio_video, image]


@register_tiny("qwen2_5_omni")
def build_qwen2_5_omni(seed: int = 0) -> TinyBundle:
    tokenizer, template = omni_tokenizer()
    with seeded(seed):
        model = transformers.Qwen2_5OmniThinkerForConditionalGeneration(omni_thinker_config(tokenizer))
    return _finish(model, omni_processor(tokenizer, template), "qwen2_5_omni", omni_examples(seed))
