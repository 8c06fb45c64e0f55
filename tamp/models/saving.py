"""Save a pruned model so it loads elsewhere: dense weights (zeros kept) plus a sparsity manifest.

The directory is written under a temporary name and renamed when complete, so a crash never
leaves a directory that looks like a finished checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from tamp.tracking.results import write_json_atomic

MANIFEST = "sparsity_manifest.json"


def save_pruned(model: Any, processor: Any, directory: str | Path, per_linear: dict[str, dict]) -> Path:
    """save_pretrained of model and processor plus sparsity_manifest.json, atomically."""
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
    write_json_atomic(tmp / MANIFEST, {"overall_sparsity": pruned / total, "linears": per_linear})
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final
