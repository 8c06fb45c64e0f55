"""Qwen2-VL and Qwen2.5-VL: a ViT with 2x2 patch merging feeding a Qwen2 decoder that uses M-RoPE.

The decoder's rotary positions are 3-D (time, height, width) for media tokens; the model computes
them itself from `input_ids`, `mm_token_type_ids` and the grids (`get_rope_index`), so the processor's
outputs must reach `forward` untouched (`mm_token_type_ids`, `image_grid_thw`, `video_grid_thw` and,
for Qwen2.5-VL, `second_per_grid_ts`). The decoder layers receive the finished (cos, sin) pair as
`position_embeddings`, which is why replaying a block from its captured kwargs reproduces M-RoPE.
"""

from __future__ import annotations

from typing import ClassVar

from tamp.data.sample import IMAGE, VIDEO
from tamp.models.base import FamilyAdapter
from tamp.models.registry import register_family

_PROTECTED = (
    "model.visual",  # vision tower, including its patch merger (the projector)
    "model.language_model.embed_tokens",
    "model.language_model.norm",
    "lm_head",
)


@register_family
class Qwen2VLAdapter(FamilyAdapter):
    """Qwen2-VL: images and videos (frames grouped in pairs by the temporal patch)."""

    family: ClassVar[str] = "qwen2_vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_vl",)
    model_class: ClassVar[str] = "Qwen2VLForConditionalGeneration"
    blocks_path: ClassVar[str] = "model.language_model.layers"
    protected_paths: ClassVar[tuple[str, ...]] = _PROTECTED
    modality_config_keys: ClassVar[dict[int, tuple[str, ...]]] = {
        IMAGE: ("image_token_id",),
        VIDEO: ("video_token_id",),
    }


@register_family
class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL: same layout; windowed attention in the tower and time-scaled video positions."""

    family: ClassVar[str] = "qwen2_5_vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_5_vl",)
    model_class: ClassVar[str] = "Qwen2_5_VLForConditionalGeneration"
