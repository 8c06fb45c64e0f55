"""Calibration samples longer than the model's context or `calib.max_tokens`: cut, counted, never silently.

The limit is the smaller of `calib.max_tokens` and the model's context (its text config's
`max_position_embeddings`, or the family's equivalent, read by the adapter). A longer sample is cut
after its last media token at the limit: text after the media goes first, a run of image, video or
audio placeholder tokens is never cut (the model needs every one of them to match the media's
features). A sample whose media alone reach past the limit is refused with one line naming its
record. The caller logs one line counting the cut samples and records it in results.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tamp.core.registries import lazy_module
from tamp.data.sample import TEXT, CalibSample

if TYPE_CHECKING:
    import torch
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    torch = lazy_module("torch")

#: per-position [1, T] inputs cut together with the labels
SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


@dataclass(frozen=True)
class TokenLimit:
    """How many positions a calibration sample may have, and which setting says so."""

    tokens: int
    source: str  # "calib.max_tokens" or "the model's context (max_position_embeddings)"

    def valid(self, needed: int) -> str:
        """What the user can do about a record whose media need `needed` positions."""
        if self.source == "calib.max_tokens":
            return f"calib.max_tokens >= {needed} (or null to keep whole samples)"
        return ("fewer or smaller media in that record (calib.num_frames for video), or leave it out "
                "(calib.prefix / calib.where)")


def token_limit(max_tokens: int | None, encoder: Any) -> TokenLimit | None:
    """The tighter of `calib.max_tokens` and the encoder's model context (None: neither is known)."""
    context = encoder.context_length() if callable(getattr(encoder, "context_length", None)) else None
    limits = []
    if max_tokens is not None:
        limits.append(TokenLimit(int(max_tokens), "calib.max_tokens"))
    if context is not None:
        tokens, key = context
        limits.append(TokenLimit(int(tokens), f"the model's context ({key}={tokens})"))
    return min(limits, key=lambda limit: limit.tokens) if limits else None


def truncate(sample: CalibSample, max_tokens: int | TokenLimit, record_id: str = "") -> CalibSample:
    """Cut a sample to the limit after its last media token; refuse (one line) when media reach past it."""
    limit = max_tokens if isinstance(max_tokens, TokenLimit) else TokenLimit(int(max_tokens), "calib.max_tokens")
    length = sample.num_tokens
    if length <= limit.tokens:
        return sample
    media = (sample.modality_ids != TEXT).nonzero()
    needed = int(media[-1, 0]) + 1 if media.numel() else 0
    if needed > limit.tokens:
        name = record_id or str(sample.meta.get("id", ""))
        raise ValueError(
            f"calibration record '{name}' has media tokens up to position {needed}, beyond {limit.source}: "
            f"{limit.tokens} tokens; valid: {limit.valid(needed)}"
        )
    cut = limit.tokens
    inputs = dict(sample.inputs)
    for key in SEQUENCE_KEYS:
        value = inputs.get(key)
        if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[-1] == length:
            inputs[key] = value[:, :cut]
    labels = sample.labels[:, :cut] if sample.labels is not None else None
    meta = {**sample.meta, "truncated_from": length}
    return CalibSample(inputs, sample.modality_ids[:cut], labels, meta)


@dataclass
class FitReport:
    """What fitting did: results.json's `calibration` entry and the one log line."""

    samples: int
    tokens: int
    truncated: int
    limit: TokenLimit | None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"samples": self.samples, "tokens": self.tokens, "truncated": self.truncated}
        if self.limit is not None:
            out |= {"max_tokens": self.limit.tokens, "limit": self.limit.source}
        return out

    def message(self) -> str | None:
        if not self.truncated or self.limit is None:
            return None
        return (f"calibration: {self.truncated} of {self.samples} samples were longer than {self.limit.source} "
                f"and were cut to {self.limit.tokens} tokens after their last media token")


def fit(samples: Sequence[CalibSample], limit: TokenLimit | None) -> tuple[list[CalibSample], FitReport]:
    """Every sample within `limit` (see `truncate`), and the count of those that were cut."""
    fitted = [truncate(s, limit, str(s.meta.get("id", f"#{i}"))) if limit else s for i, s in enumerate(samples)]
    truncated = sum(1 for s in fitted if "truncated_from" in s.meta)  # also those a source already cut
    return fitted, FitReport(len(fitted), sum(s.num_tokens for s in fitted), truncated, limit)
