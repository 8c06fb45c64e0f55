"""Save a pruned model so it loads elsewhere: dense weights (zeros kept) plus a sparsity manifest.

The directory is written under a temporary name and renamed when complete, so a crash never
leaves a directory that looks like a finished checkpoint. Optionally the masks go beside the
weights, bit-packed (`tamp.models.mask_file`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from tamp.io import write_json_atomic

MANIFEST = "sparsity_manifest.json"


def save_pruned(
    model: Any,
    processor: Any,
    directory: str | Path,
    per_linear: dict[str, dict],
    masks: dict[str, torch.Tensor] | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """save_pretrained of model and processor plus sparsity_manifest.json (and masks), atomically.

    `info` (method, target, pattern) goes into the manifest next to the overall sparsity, so a
    later evaluation of the directory can say what it is.
    """
    final = Path(directory)
    tmp = final.with_name(f".{final.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    if processor is not None:
        processor.save_pretrained(tmp)
    total = sum(v["numel"] for v in per_linear.values()) or 1
    pruned = sum(v["achieved"] * v["numel"] for v in per_linear.values())
    manifest = {"overall_sparsity": pruned / total, **(info or {}), "linears": per_linear}
    if masks is not None:
        from tamp.models.mask_file import MASKS_FILE, save_masks

        save_masks(masks, tmp / MASKS_FILE)
        manifest["masks"] = MASKS_FILE
    write_json_atomic(tmp / MANIFEST, manifest)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    """The sparsity manifest of a saved directory, or None when it has none (or it is unreadable)."""
    path = Path(directory) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
