"""The Random ablation (Table 4c): `num_random` tokens per sample drawn without replacement.

The draw is seeded from (seed, sample index, block index) with its own torch.Generator, so it neither
depends on nor disturbs the global RNG, and a sample gets the same tokens whichever process handles it.
Every linear of a block sees the same tokens. The seed defaults to the run's `seed` (resolved where
the method is built, tamp.methods.composed), so the repeats of a seed sweep draw different tokens.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tamp.core.config import TokensConfig
from tamp.core.registries import lazy_module
from tamp.tokens.registry import register_selector

if TYPE_CHECKING:
    import torch
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    torch = lazy_module("torch")

if TYPE_CHECKING:
    from tamp.pipeline.context import SampleContext

_CACHE_KEY = "random_tokens"


def draw_seed(seed: int, sample: int, block: int) -> int:
    """A 63-bit seed mixing the three numbers (stable across runs and Python versions)."""
    digest = hashlib.blake2b(f"{seed}:{sample}:{block}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def random_tokens(num_tokens: int, count: int, seed: int) -> torch.Tensor | None:
    """Sorted indices of `count` distinct tokens out of `num_tokens` (CPU); None when all are kept."""
    if num_tokens <= count:
        return None
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randperm(num_tokens, generator=generator)[:count].sort().values


@dataclass
class RandomTokensConfig(TokensConfig):
    """Table 4c's random-token ablation: how many tokens per sample, and the draw's seed."""

    name: str = "random"
    num_random: int = 100
    seed: int | None = None  # None: the run's seed

    def check(self) -> None:
        if self.num_random < 1:
            raise ValueError(f"method.tokens.num_random={self.num_random} is invalid; valid: an integer >= 1")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"method.tokens.seed={self.seed!r} is invalid; valid: an integer, or null for the run's seed")


@register_selector("random", config=RandomTokensConfig)
class RandomSelector:
    #: the draw depends on (seed, sample, block) and the token count, never on the linear
    input_only = True

    def __init__(self, cfg: RandomTokensConfig) -> None:
        self.cfg = cfg

    def select(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: SampleContext) -> torch.Tensor | None:
        if _CACHE_KEY not in ctx.cache:
            if self.cfg.seed is None:
                raise ValueError("method.tokens.seed is unset: build the selector through tamp.methods.composed, which gives it the run's seed")
            seed = draw_seed(self.cfg.seed, ctx.index, ctx.block_index)
            index = random_tokens(x.shape[0], self.cfg.num_random, seed)
            ctx.cache[_CACHE_KEY] = None if index is None else index.to(x.device)
        return ctx.cache[_CACHE_KEY]
