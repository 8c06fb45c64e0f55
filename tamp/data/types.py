"""Types several layers share, in a leaf module that imports nothing from tamp.

The data layer builds calibration samples through a `SampleEncoder` (any family adapter is one),
so it never imports the model layer; the model layer builds on the data layer's `CalibSample`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tamp.data.sample import CalibSample

#: one chat message in Hugging Face's format: {"role": ..., "content": str | list of parts}
Message = dict[str, Any]


class SampleEncoder(Protocol):
    """What turns a conversation and its media into a CalibSample: a family adapter, seen from the data layer."""

    family: str
    processor: Any

    def encode(
        self,
        messages: Sequence[Message],
        images: Sequence[Any] | None = None,
        videos: Sequence[Any] | None = None,
        audios: Sequence[Any] | None = None,
    ) -> CalibSample: ...
