"""Test data recorded from the official implementations (TAMP's code, the original Wanda and SparseGPT).

The files live in tests/data/official (README there says what each holds), inside the repository, so
the checks against the original code run in every clone and never skip.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch

OFFICIAL = Path(__file__).resolve().parent / "data" / "official"


@cache
def _manifest() -> dict:
    return json.loads((OFFICIAL / "manifest.json").read_text())


def official_cases(kind: str) -> list[dict]:
    """The manifest's cases of one kind (amia, das, allocator, owl, wanda, sparsegpt); never empty."""
    cases = _manifest()[kind]
    if not cases:
        raise LookupError(f"{OFFICIAL / 'manifest.json'} holds no '{kind}' case")
    return cases


def load_official(name: str) -> dict[str, torch.Tensor]:
    """The tensors of one fixture file."""
    from safetensors.torch import load_file

    return load_file(str(OFFICIAL / name))
