"""The sweep's dense scores, computed by its dense cell once and reused by every cell of the same key.

A dense cell's lmms-eval scores are the Rel.% reference of its table, and scoring a model costs as much
as pruning it, so a sweep scores each dense model once (SWEEP_DIR/.cache/dense_<key>.json). The key is
everything the report pairs a run with its dense run by (tamp.reporting.keys.table_items: every model,
eval and precision setting, e.g. model.dtype, model.revision, model.use_audio_in_video,
runner.precision), plus the seed where it draws the weights (a tiny random model). The file stores
those items and is read only when they are equal to the reader's own, so a hash collision, a file from
an older tamp or a file copied from elsewhere is recomputed, never reused. Files are written atomically,
so a cell killed while writing leaves no file that reads as complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tamp.core.io import write_json_atomic

WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.json")

log = logging.getLogger("tamp")
FORMAT = 2  # 1: the bare lmms-eval scores, keyed by model name and eval settings alone


def weights_identity(name: str) -> str | None:
    """Which weights `model.name` loads now: for a local folder, its weight and config files' names, sizes
    and modification times (a checkpoint saved again into the same folder is another model); for a Hub id,
    the snapshot commit the local Hub cache resolves `main` to. None when neither applies (tiny, zoo: their
    weights are fixed by the seed or by the recipe hash in the eval settings)."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        stats = sorted((str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns)
                       for pattern in WEIGHT_FILES for f in folder.rglob(pattern) if f.is_file())
        return "files:" + hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]
    if name.count("/") != 1 or ":" in name:
        return None
    from huggingface_hub.constants import HF_HUB_CACHE

    ref = Path(HF_HUB_CACHE) / f"models--{name.replace('/', '--')}" / "refs" / "main"
    try:
        return "commit:" + ref.read_text().strip()
    except OSError:
        return None


@dataclass(frozen=True)
class DenseCache:
    """One key's file in a sweep's cache folder."""

    path: Path
    items: dict[str, str]

    @staticmethod
    def for_cell(config: dict[str, Any], tiny_seed: int | None, cache_dir: str | Path) -> DenseCache:
        """The cache entry of a cell's dense model (`tiny_seed`: the seed when it draws the model's weights)."""
        from tamp.reporting.keys import table_items

        return DenseCache._keyed(table_items(config), tiny_seed, cache_dir)

    @staticmethod
    def _keyed(items: dict[str, str], tiny_seed: int | None, cache_dir: str | Path) -> DenseCache:
        items = {k: v for k, v in items.items() if k not in ("seed", "model.weights")}
        if tiny_seed is not None:
            items["seed"] = str(tiny_seed)
        weights = weights_identity(str(items.get("model.name", "")))
        if weights is not None:
            items["model.weights"] = weights
        digest = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]
        return DenseCache(Path(cache_dir) / f"dense_{digest}.json", items)

    def of_model(self, name: str, tiny_seed: int | None) -> DenseCache:
        """The entry of another model scored with these same settings: a saved pruned checkpoint's Rel.%
        reference is the dense run of the model it was pruned from (its manifest's `source_model`), as the
        report pairs them."""
        return DenseCache._keyed({**self.items, "model.name": name}, tiny_seed, self.path.parent)

    def read(self) -> dict[str, Any] | None:
        """{"scores": lmms-eval's output, "device": where it was computed}, or None when there is no entry
        for exactly these settings."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            log.warning("dense score cache %s is unreadable (%s): scoring the dense model again", self.path, err)
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("key") != self.items:
            log.warning("dense score cache %s was written for other settings: scoring the dense model again",
                        self.path)
            return None
        return {"scores": data.get("scores") or {}, "device": data.get("device")}

    def exists(self) -> bool:
        return self.read() is not None

    def write(self, scores: dict[str, Any], device: str | None) -> None:
        write_json_atomic(self.path, {"format": FORMAT, "key": self.items, "device": device, "scores": scores})
