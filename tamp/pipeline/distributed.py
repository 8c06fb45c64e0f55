"""Data-parallel calibration: each process takes a share of the samples, statistics are summed.

Every accumulator in tamp keeps sums and counts (never running means), so summing its tensors
across processes gives exactly what one process would hold with all the samples; the masks
computed afterwards are therefore the same on every process and for any number of processes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import torch

from tamp.data.fit import FitReport, fit, token_limit
from tamp.data.sample import INDEX_KEY, CalibSample
from tamp.data.sources import CALIB_SOURCES, calibration_set
from tamp.pipeline.engine import Reducer

log = logging.getLogger("tamp")


def share_positions(total: int, rank: int, world_size: int) -> range:
    """Positions of this process's share of `total` samples: every world_size-th from its rank."""
    if world_size > total:
        raise ValueError(
            f"runner.devices={world_size} processes but only {total} calibration samples; "
            "use fewer processes or more samples"
        )
    return range(rank, total, world_size)


def shard(samples: Sequence[CalibSample], rank: int, world_size: int) -> list[CalibSample]:
    """This process's share, each sample knowing its position in the whole set (`meta["index"]`)."""
    return [with_index(samples[i], i) for i in share_positions(len(samples), rank, world_size)]


def with_index(sample: CalibSample, index: int) -> CalibSample:
    """The sample (same tensors) with its global position recorded, unless it already has one."""
    if INDEX_KEY in sample.meta:
        return sample
    return replace(sample, meta={**sample.meta, INDEX_KEY: index})


class CalibrationShare(NamedTuple):
    """One process's calibration samples, the whole set's fitting report and its record ids."""

    samples: list[CalibSample]
    report: FitReport
    ids: list[Any]


def calibration_share(
    cfg: Any,
    encoder: Any,
    examples: Sequence[Any] | None,
    rank: int,
    world_size: int,
    broadcast: Callable[[Any], Any] | None = None,
    reducer: Reducer | None = None,
) -> CalibrationShare:
    """This process's share of the calibration set (each sample knowing its position in the whole set),
    fitted to `calib.max_tokens` and the model's context, the report of the whole set's fitting and the
    ids of the whole set's records in draw order (what results.json records of the draw).

    A source that draws its records apart from encoding them (a conversation file: `draw` and
    `encode`) is parsed once, by rank 0, whose drawn records `broadcast` (rank 0's value to every
    rank) hands to the others; each process then decodes, encodes and fits only its own share, and
    the counts of the report are summed over processes (`reducer`). Other sources (a tiny model's
    own examples) build and fit every sample and keep their share.
    """
    source = CALIB_SOURCES.get(cfg.source).factory
    if not (hasattr(source, "draw") and hasattr(source, "encode")):
        samples, report = calibration_set(cfg, encoder, examples)
        return CalibrationShare(shard(samples, rank, world_size), report, [s.meta.get("id") for s in samples])
    records = source.draw(cfg) if rank == 0 else None
    if world_size > 1:
        if broadcast is None or reducer is None:
            raise ValueError("calibration_share: several processes need a broadcast from rank 0 and a reducer")
        records = broadcast(records)
    positions = share_positions(len(records), rank, world_size)
    encoded = source.encode([records[i] for i in positions], encoder, cfg)
    fitted, report = fit(encoded, token_limit(getattr(cfg, "max_tokens", None), encoder))
    if world_size > 1:
        counts = torch.tensor([report.samples, report.tokens, report.truncated], dtype=torch.int64)
        reducer([counts])
        report = FitReport(*(int(c) for c in counts.tolist()), report.limit)
    if rank == 0 and report.message():
        log.warning(report.message())
    shared = [with_index(sample, i) for sample, i in zip(fitted, positions, strict=True)]
    return CalibrationShare(shared, report, [record.id for record in records])


def fabric_broadcast(fabric: Any) -> Callable[[Any], Any]:
    """Rank 0's object on every rank, through Lightning Fabric's collective."""
    return lambda obj: fabric.broadcast(obj, src=0)


def fabric_reducer(fabric: Any) -> Reducer | None:
    """In-place all-reduce(sum) through Lightning Fabric's collective; None on one process."""
    if fabric.world_size <= 1:
        return None

    def reduce(tensors: list[torch.Tensor]) -> None:
        for tensor in tensors:
            # NCCL reduces device tensors only; statistics kept on CPU (offload) travel there and back
            on_device = tensor.to(fabric.device)
            reduced = fabric.all_reduce(on_device, reduce_op="sum")
            if reduced is not tensor:
                tensor.copy_(reduced.to(tensor.device))

    return reduce
