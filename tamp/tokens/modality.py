"""Modality subsets (Table 1 of the paper): only tokens of the chosen modalities feed the statistics.

Blocks below `multimodal_blocks` count the tokens of `modalities`, later blocks text tokens only
(`multimodal_blocks` None: `modalities` everywhere). "V+L" everywhere equals all-token calibration;
"L" everywhere drops every media token. A sample may select nothing (`modalities: [image]` on a
text-only sample): the statistics then count it as a sample with no tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tamp.core.config import TokensConfig
from tamp.core.registries import lazy_module
from tamp.data.sample import MODALITY_CODES, TEXT
from tamp.tokens.registry import register_selector

if TYPE_CHECKING:
    import torch
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    torch = lazy_module("torch")

if TYPE_CHECKING:
    from tamp.pipeline.context import SampleContext

_CACHE_KEY = "modality_tokens"


@dataclass
class ModalityConfig(TokensConfig):
    """The modality ablation (Table 1): blocks < multimodal_blocks count `modalities`, the rest text only."""

    name: str = "modality"
    modalities: list[str] = field(default_factory=lambda: ["text", "image", "video", "audio"])
    multimodal_blocks: int | None = None

    def check(self) -> None:
        names = list(self.modalities)
        unknown = [n for n in names if n not in MODALITY_CODES]
        valid = ", ".join(MODALITY_CODES)
        if unknown:
            raise ValueError(f"method.tokens.modalities has unknown '{unknown[0]}'; valid: {valid}")
        if not names:
            raise ValueError(f"method.tokens.modalities is empty; valid: a subset of {valid}")
        if self.multimodal_blocks is not None and self.multimodal_blocks < 0:
            value = self.multimodal_blocks
            raise ValueError(f"method.tokens.multimodal_blocks={value} is invalid; valid: >= 0 or null")


@register_selector("modality", config=ModalityConfig)
class ModalitySelector:
    #: the selection depends on the sample's modality ids and the block only, never on the linear
    input_only = True

    def __init__(self, cfg: ModalityConfig) -> None:
        names = list(cfg.modalities)
        self.codes = sorted({MODALITY_CODES[n] for n in names})
        self.multimodal_blocks = cfg.multimodal_blocks

    def codes_for_block(self, block_index: int) -> list[int]:
        """The modality codes counted in this block."""
        if self.multimodal_blocks is None or block_index < self.multimodal_blocks:
            return self.codes
        return [TEXT]

    def select(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: SampleContext) -> torch.Tensor | None:
        if _CACHE_KEY not in ctx.cache:
            ids = ctx.modality_ids.to(x.device)
            codes = torch.tensor(self.codes_for_block(ctx.block_index), dtype=ids.dtype, device=ids.device)
            keep = torch.isin(ids, codes)
            ctx.cache[_CACHE_KEY] = None if bool(keep.all()) else torch.nonzero(keep).view(-1)
        return ctx.cache[_CACHE_KEY]
