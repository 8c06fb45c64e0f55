"""A run's pruning summary (what `tamp.prune` returns): per-linear planned and achieved sparsity, and where the
time went. "Report" is the sweep report's word (tamp.reporting, `python -m tamp.report`); the runner writes
this summary as RUN_DIR/prune_report.md, the file name the README and scripts already know."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from tamp.methods.preset_names import display_name
from tamp.tracking.run_record import LinearEntry, linears_to_json


@dataclass
class LinearSparsity:
    """One pruned linear as pruning measured it: exact counts (`table()` turns them into the recorded form)."""

    name: str
    block: int
    numel: int
    planned_pruned: int
    pruned: int
    #: N:M patterns only: the linear's planned N:M (N varies under an allocation) and the one its weights meet
    planned_pattern: str | None = None
    achieved_pattern: str | None = None

    @property
    def planned(self) -> float:
        return self.planned_pruned / self.numel

    @property
    def achieved(self) -> float:
        return self.pruned / self.numel


@dataclass
class PruneSummary:
    method: str
    pruner: str
    allocation: str
    tokens: str
    target: float
    pattern: str
    linears: list[LinearSparsity]
    timings: dict[str, float]
    blocks_s: list[float]
    num_samples: int
    num_tokens: int
    device: str
    #: what the allocation ranked by (DAS score per linear, OWL outlier ratio per block, ...)
    allocation_scores: dict[str, float] = field(default_factory=dict)
    #: N:M patterns only: how many linears got each N, whether the plan is mixed (tamp.sparsity.mixed_nm)
    nm: dict[str, Any] | None = None
    #: host <-> device copies the engine made (tamp.pipeline.transfer: counts and bytes each way)
    transfers: dict[str, dict[str, int]] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    #: the model and processor `tamp.prune` loaded itself (given a model id or folder), to save or score;
    #: None when the caller passed a module (it holds the pruned model already)
    model: Any = field(default=None, repr=False, compare=False)
    processor: Any = field(default=None, repr=False, compare=False)

    @property
    def planned(self) -> float:
        return sum(x.planned_pruned for x in self.linears) / max(1, sum(x.numel for x in self.linears))

    @property
    def achieved(self) -> float:
        return sum(x.pruned for x in self.linears) / max(1, sum(x.numel for x in self.linears))

    def table(self) -> dict[str, LinearEntry]:
        """The linears as results.json's `sparsity_per_linear` and the sparsity manifest hold them (fractions,
        block, projection kind, N:M patterns): the one recorded form of a linear's sparsity."""
        return {x.name: LinearEntry.of(x.name, x.planned, x.achieved, x.numel, x.planned_pattern, x.achieved_pattern)
                for x in self.linears}

    def per_linear(self) -> dict[str, dict[str, Any]]:
        return linears_to_json(self.table())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(replace(self, masks=None, model=None, processor=None))  # asdict would deep-copy them
        for held in ("masks", "model", "processor"):
            out.pop(held)
        out["linears"] = self.per_linear()
        out["overall"] = {"planned": self.planned, "achieved": self.achieved}
        return out

    @property
    def method_name(self) -> str:
        """The method's name; a composition named only by its pruner's default gets its preset's name (tamp)."""
        return display_name(self.method, self.pruner, self.allocation, self.tokens)

    def summary(self) -> str:
        """A short markdown summary a person can read in a terminal."""
        lines = [
            f"method {self.method_name} ({self.pruner} x {self.allocation} x {self.tokens}), "
            f"target {self.target} {self.pattern}, {self.num_samples} samples / {self.num_tokens} tokens on {self.device}",
            f"overall sparsity planned {self.planned:.4f}, achieved {self.achieved:.4f}; "
            + ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items()),
        ]
        if self.nm is not None:
            from tamp.sparsity.mixed_nm import describe

            lines.append(describe(self.nm).removeprefix("sparsity: "))
        if any(x.planned_pattern for x in self.linears):
            lines += ["", "| linear | numel | planned | achieved | pattern | achieved pattern |",
                      "|---|---:|---:|---:|---|---|"]
            lines += [f"| {x.name} | {x.numel} | {x.planned:.4f} | {x.achieved:.4f} | {x.planned_pattern} "
                      f"| {x.achieved_pattern} |" for x in self.linears]
            return "\n".join(lines)
        lines += ["", "| linear | numel | planned | achieved |", "|---|---:|---:|---:|"]
        lines += [f"| {x.name} | {x.numel} | {x.planned:.4f} | {x.achieved:.4f} |" for x in self.linears]
        return "\n".join(lines)


#: the summary's earlier name, kept for code written against it (`tamp.PruneReport`)
PruneReport = PruneSummary
