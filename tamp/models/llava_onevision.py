"""LLaVA-OneVision (LlavaOnevisionForConditionalGeneration): SigLIP tower, Qwen2 decoder, images and video.

Images and videos have separate placeholder ids (`image_token_index`, `video_token_index` in the
config). The processor returns `image_sizes` and `batch_num_images` for images and
`pixel_values_videos` for videos; the generic `process` passes them all to the forward.
"""

from __future__ import annotations

from typing import ClassVar

from tamp.data.sample import IMAGE, VIDEO
from tamp.models.base import FamilyAdapter
from tamp.models.llava import LLAVA_PROTECTED
from tamp.models.registry import register_family


@register_family
class LlavaOnevisionAdapter(FamilyAdapter):
    family = "llava_onevision"
    model_types = ("llava_onevision",)
    model_class = "LlavaOnevisionForConditionalGeneration"
    blocks_path = "model.language_model.layers"
    protected_paths = LLAVA_PROTECTED
    modality_config_keys: ClassVar[dict[int, tuple[str, ...]]] = {
        IMAGE: ("image_token_id",),
        VIDEO: ("video_token_id",),
    }
