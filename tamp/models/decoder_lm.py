"""Plain decoder language models (Llama, Qwen2, Mistral): text only, a tokenizer is the processor.

Every position is text. Chat messages may use HF content lists; they are flattened to strings
first because text-only chat templates (Llama, Qwen2) expect string contents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from tamp.models.base import FamilyAdapter, Message
from tamp.models.registry import register_family


@register_family
class DecoderLMAdapter(FamilyAdapter):
    family = "decoder_lm"
    model_types = ("llama", "qwen2", "mistral")
    model_class = "AutoModelForCausalLM"
    blocks_path = "model.layers"
    protected_paths = ("model.embed_tokens", "lm_head")
    modality_config_keys: ClassVar[dict[int, tuple[str, ...]]] = {}

    def process(
        self,
        text: str,
        images: Sequence[Any] | None = None,
        videos: Sequence[Any] | None = None,
        audios: Sequence[Any] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Tokenize only; media make no sense for a text-only model, so they are an error."""
        if images or videos or audios:
            raise ValueError(f"{self.family}: text-only model given media (images/videos/audios)")
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        return dict(tokenizer([text], return_tensors="pt", add_special_tokens=False))

    def render(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        return super().render([_flatten(m) for m in messages], add_generation_prompt)


def _flatten(message: Message) -> Message:
    content = message.get("content")
    if isinstance(content, str) or content is None:
        return message
    parts = [p for p in content if p.get("type") == "text"]
    if len(parts) != len(content):
        raise ValueError("decoder_lm: text-only model given a non-text content part")
    return {**message, "content": "".join(p["text"] for p in parts)}
