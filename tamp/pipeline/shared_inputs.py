"""Inputs computed once and shared between runs: the encoded calibration samples and the block-0 inputs.

The cells of a sweep that differ only in sparsity, pattern or method encode the same calibration
records and forward them to the first decoder block the same way. A store (`InputStore`; the sweep's
folder in tamp.cli.input_cache) keeps each as a tree of tensors under a key of everything that changes
it, and hands it to the next run of the same key. This module turns both into such trees and back, and
says what a stored tree must look like before it is used (`check_*`: a one-line reason, else None).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from tamp.data.fit import FitReport, TokenLimit
from tamp.data.sample import CalibSample

log = logging.getLogger("tamp")

#: the names results.json's `reused` and the store's files use
CALIBRATION = "calibration_samples"
BLOCK_INPUTS = "block_inputs"


class InputStore(Protocol):
    """Where trees of tensors computed once are kept for every run of the same key (tamp.cli.input_cache)."""

    def fetch(
        self, kind: str, key: dict[str, str], compute: Callable[[], Any],
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        """The stored tree of `key` when `check` finds nothing wrong with it, else `compute()` (then stored).
        Every process calls it, in the same order."""
        ...

    def shares(self, kind: str) -> bool:
        """Whether this store keeps `kind` at all (block-0 inputs may be left to each run)."""
        ...


# ------------------------------------------------------------------ calibration samples


def samples_tree(samples: Sequence[CalibSample]) -> list[dict[str, Any]]:
    return [{"inputs": s.inputs, "modality_ids": s.modality_ids, "labels": s.labels, "meta": s.meta} for s in samples]


def tree_samples(tree: list[dict[str, Any]]) -> list[CalibSample]:
    return [CalibSample(dict(t["inputs"]), t["modality_ids"], t["labels"], dict(t["meta"])) for t in tree]


def check_samples(tree: Any) -> str | None:
    """What is wrong with a stored list of samples, or None."""
    if not isinstance(tree, list) or not tree:
        return "no samples"
    for i, t in enumerate(tree):
        if not isinstance(t, dict) or set(t) != {"inputs", "modality_ids", "labels", "meta"}:
            return f"sample {i} is not a calibration sample"
        if not isinstance(t["inputs"], dict) or not isinstance(t["meta"], dict):
            return f"sample {i} has no inputs"
        ids = t["modality_ids"]
        if not isinstance(ids, torch.Tensor) or ids.dim() != 1:
            return f"sample {i}'s modality ids are not a 1-D tensor"
        tokens = t["inputs"].get("input_ids")
        if isinstance(tokens, torch.Tensor) and tokens.shape[-1] != ids.numel():
            return f"sample {i} has {tokens.shape[-1]} token ids but {ids.numel()} modality ids"
    return None


def _report_tree(report: FitReport) -> dict[str, Any]:
    limit = report.limit
    return {"samples": report.samples, "tokens": report.tokens, "truncated": report.truncated,
            "limit": None if limit is None else {"tokens": limit.tokens, "source": limit.source}}


def _tree_report(tree: dict[str, Any]) -> FitReport:
    limit = tree["limit"]
    return FitReport(int(tree["samples"]), int(tree["tokens"]), int(tree["truncated"]),
                     None if limit is None else TokenLimit(int(limit["tokens"]), str(limit["source"])))


def check_calibration(tree: Any) -> str | None:
    """What is wrong with a stored calibration share (samples, fit report, record ids), or None."""
    if not isinstance(tree, dict) or set(tree) != {"samples", "report", "ids"}:
        return "not a calibration share"
    try:
        _tree_report(tree["report"])
    except (KeyError, TypeError, ValueError):
        return "its fit report is malformed"
    if not isinstance(tree["ids"], list):
        return "its record ids are not a list"
    return check_samples(tree["samples"])


def shared_calibration(
    store: InputStore, encode: Callable[[], tuple[list[CalibSample], FitReport, list[Any]]]
) -> tuple[list[CalibSample], FitReport, list[Any]]:
    """(this process's samples, the whole set's fit report, the drawn ids): the stored ones of the store's
    key, else `encode()`'s (then stored). The key is the store's own (tamp.cli.input_cache)."""

    def compute() -> dict[str, Any]:
        samples, report, ids = encode()
        return {"samples": samples_tree(samples), "report": _report_tree(report), "ids": list(ids)}

    tree = store.fetch(CALIBRATION, {}, compute, check_calibration)
    report = _tree_report(tree["report"])
    if CALIBRATION in getattr(store, "reused", {}) and getattr(store, "rank", 0) == 0 and report.message():
        log.warning(report.message())  # what the encoding cell said, said again where its samples are used
    return tree_samples(tree["samples"]), report, list(tree["ids"])


# ------------------------------------------------------------------ block-0 inputs


def store_tree(hidden: Sequence[torch.Tensor], kwargs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"hidden": list(hidden), "kwargs": list(kwargs)}


def block_inputs_check(samples: Sequence[CalibSample]) -> Callable[[Any], str | None]:
    """The check of stored block-0 inputs for these samples: one entry each, of the sample's length."""

    def check(tree: Any) -> str | None:
        if not isinstance(tree, dict) or set(tree) != {"hidden", "kwargs"}:
            return "not block inputs"
        hidden, kwargs = tree["hidden"], tree["kwargs"]
        if not isinstance(hidden, list) or not isinstance(kwargs, list) or len(hidden) != len(samples) or len(kwargs) != len(samples):
            return f"not one entry per sample ({len(samples)})"
        for i, (h, k, s) in enumerate(zip(hidden, kwargs, samples, strict=True)):
            if not isinstance(h, torch.Tensor) or h.dim() != 3 or h.shape[-2] != s.num_tokens:
                return f"sample {i}'s hidden states do not have its {s.num_tokens} positions"
            if not isinstance(k, dict):
                return f"sample {i}'s block kwargs are not a dict"
        return None

    return check


def block_inputs_key(
    model: nn.Module, samples: Sequence[CalibSample], indices: Sequence[int], device: torch.device,
    weights: Callable[[nn.Module], bytes], sample_digest: Callable[[CalibSample], bytes],
) -> dict[str, str]:
    """What this process's block-0 inputs depend on: the model (config, weights digest with their dtype),
    its own samples in order with their positions in the whole set, the device type (CPU and GPU round
    differently) and the versions that compute them. Not offload (the same values, kept elsewhere), nor
    the method, target or pattern (nothing before block 0 is pruned)."""
    import transformers

    import tamp

    h = hashlib.sha256()
    for index, sample in zip(indices, samples, strict=True):
        h.update(f"{index}:".encode() + sample_digest(sample))
    config = model.config.to_json_string(use_diff=False) if hasattr(model, "config") else ""
    return {
        "model.config": hashlib.sha256(config.encode()).hexdigest()[:16],
        "model.weights_digest": weights(model).hex()[:32],
        "samples": h.hexdigest()[:16],
        "num_samples": str(len(samples)),
        "device": device.type,
        "versions": f"tamp {tamp.__version__}, torch {torch.__version__}, transformers {transformers.__version__}",
    }
