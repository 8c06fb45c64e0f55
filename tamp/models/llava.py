"""LLaVA-1.5 (LlavaForConditionalGeneration): CLIP tower + MLP projector + Llama/Vicuna decoder.

transformers 5 nests the decoder under `model.language_model`; the image placeholder id is the
config's `image_token_index` (aliased as `image_token_id`). The generic processor call suffices.
"""

from __future__ import annotations

from typing import ClassVar

from tamp.data.sample import IMAGE
from tamp.models.base import FamilyAdapter
from tamp.models.registry import register_family

#: modules of every LLaVA-style model that pruning leaves alone
LLAVA_PROTECTED: tuple[str, ...] = (
    "model.vision_tower",
    "model.multi_modal_projector",
    "model.language_model.embed_tokens",
    "lm_head",
)


@register_family
class LlavaAdapter(FamilyAdapter):
    family = "llava"
    model_types = ("llava",)
    model_class = "LlavaForConditionalGeneration"
    blocks_path = "model.language_model.layers"
    protected_paths = LLAVA_PROTECTED
    modality_config_keys: ClassVar[dict[int, tuple[str, ...]]] = {IMAGE: ("image_token_id",)}
