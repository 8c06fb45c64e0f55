"""The sparsity a model actually has, read from its weights: what a run records when it prunes nothing.

A dense run (`method=dense`) of a saved pruned checkpoint must record the checkpoint's real
sparsity, not the 0.0 of its own (empty) pruning step; the sparsity manifest a tamp save writes
beside the weights is recorded with it, so the two can be compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from tamp.models.base import FamilyAdapter
from tamp.models.saving import read_manifest
from tamp.tracking.run_record import LinearEntry, Sparsity


def measure_sparsity(
    adapter: FamilyAdapter, targets: Sequence[str] = (".*",), ignore: Sequence[str] = ()
) -> dict[str, LinearEntry]:
    """Per target linear of the decoder blocks: the fraction of exactly-zero weights (the runner's table)."""
    table: dict[str, LinearEntry] = {}
    for block in adapter.target_linears(targets, ignore):
        for name, linear in block.items():
            weight = linear.weight
            zeros = int((weight == 0).sum())
            table[name] = LinearEntry.of(name, None, zeros / weight.numel(), weight.numel())
    return table


def overall_sparsity(table: dict[str, LinearEntry]) -> float:
    """Pruned fraction over all linears of a per-linear table, weighted by their sizes."""
    total = sum(v.numel or 0 for v in table.values())
    return sum((v.achieved or 0.0) * (v.numel or 0) for v in table.values()) / total if total else 0.0


def unpruned_run_sparsity(
    adapter: FamilyAdapter, model_name: str, asked: Sparsity, targets: Sequence[str], ignore: Sequence[str]
) -> tuple[Sparsity, dict[str, LinearEntry]]:
    """(results' `sparsity`, `sparsity_per_linear`) of a run that pruned nothing: measured, plus the manifest."""
    table = measure_sparsity(adapter, targets, ignore)
    manifest = read_manifest(model_name) if Path(model_name).is_dir() else None
    summary = {k: v for k, v in manifest.items() if k != "linears"} if manifest is not None else None
    return replace(asked, target=0.0, achieved=overall_sparsity(table), manifest=summary), table
