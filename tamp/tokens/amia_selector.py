"""AMIA as a token selector: per linear, the tokens `select_tokens` picks from that linear's own output.

The attention row is the block's (one per sample and block, memoised in the sample context); the output
Z differs per linear, so the selection does too (docs/DESIGN.md, "AMIA").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tamp.config import TokensConfig
from tamp.pipeline.context import SampleContext
from tamp.tokens.amia import VARIANTS, select_tokens
from tamp.tokens.attention_row import last_row_attention
from tamp.tokens.registry import register_selector


@dataclass
class AmiaConfig(TokensConfig):
    """AMIA's graph and penalty settings (the paper's defaults)."""

    name: str = "amia"
    variant: str = "paper"  # paper | reference
    knn: int = 3
    graph_gamma: float = 1.0
    penalty_gamma: float = 0.2
    mmd_scale: float = 0.1

    def check(self) -> None:
        if self.variant not in VARIANTS:
            valid = ", ".join(VARIANTS)
            raise ValueError(f"method.tokens.variant='{self.variant}' is unknown; valid: {valid}")
        if self.knn < 1:
            raise ValueError(f"method.tokens.knn={self.knn} is invalid; valid: an integer >= 1")
        if self.mmd_scale < 0:
            raise ValueError(f"method.tokens.mmd_scale={self.mmd_scale} is invalid; valid: >= 0")

    def variant_notes(self) -> dict[str, str]:
        if self.variant == "reference":
            return {"tokens": "AMIA as the official code (top-4 neighbours minus the first, its similarity; "
                              "as published)"}
        return {"tokens": "AMIA as the paper's Eqs. 3-5 (a token is never its own neighbour)"}


@register_selector("amia", config=AmiaConfig)
class AmiaSelector:
    """Adaptive Multimodal Input Activation (TAMP's token selection)."""

    def __init__(self, cfg: AmiaConfig) -> None:
        self.cfg = cfg

    def select(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: SampleContext) -> torch.Tensor:
        cfg = self.cfg
        index = select_tokens(
            z,
            last_row_attention(ctx),
            ctx.modality_ids.to(z.device),
            variant=cfg.variant,
            knn=cfg.knn,
            graph_gamma=cfg.graph_gamma,
            penalty_gamma=cfg.penalty_gamma,
            mmd_scale=cfg.mmd_scale,
        )
        return index.to(x.device)
