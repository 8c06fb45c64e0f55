"""Which input tokens feed a linear's statistics (all, AMIA, attention, random, modality subsets)."""

from tamp.tokens.amia import select_tokens, selected_mask

__all__ = ["select_tokens", "selected_mask"]
