"""LLaVA-NeXT (LlavaNextForConditionalGeneration), the paper's main model.

Same layout as LLaVA-1.5; the processor's `image_sizes` output (any-resolution tiling) must reach
the forward, which the generic `process` keeps since it returns every processor output.
"""

from __future__ import annotations

from typing import ClassVar

from tamp.data.sample import IMAGE
from tamp.models.base import FamilyAdapter
from tamp.models.llava import LLAVA_PROTECTED
from tamp.models.registry import register_family


@register_family
class LlavaNextAdapter(FamilyAdapter):
    family = "llava_next"
    model_types = ("llava_next",)
    model_class = "LlavaNextForConditionalGeneration"
    blocks_path = "model.language_model.layers"
    protected_paths = LLAVA_PROTECTED
    modality_config_keys: ClassVar[dict[int, tuple[str, ...]]] = {IMAGE: ("image_token_id",)}
