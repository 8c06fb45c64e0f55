"""Where a media reference points: the one rule that media decoding and video decoding share.

A leaf module, so that tamp.data.media (which re-exports video decoding) and tamp.data.video (which
resolves its reference) do not import each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def resolve(ref: Any, media_dir: str | Path | None) -> Any:
    """A string reference becomes a path under `media_dir` (absolute paths stay); others pass through."""
    if isinstance(ref, dict) and not ref.get("bytes") and ref.get("path") and "array" not in ref:
        ref = ref["path"]
    if isinstance(ref, (str, Path)):
        path = Path(ref)
        if not path.is_absolute() and media_dir is not None:
            path = Path(media_dir) / path
        return path
    return ref
