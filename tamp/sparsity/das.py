"""Diversity-Aware Sparsity (DAS): output-token diversity of a linear, per modality and across modalities.

For one sample, Z (T x C) is a linear's output and every token has a modality code (0 text, 1 image,
2 video, 3 audio). The intra-modality diversity of m is the mean cosine distance over the pairs i != j of
m's tokens; the inter-modality diversity of (a, b) is the mean over i in a, j in b. The layer score is the
mean of the terms that exist (the paper's (s_v + s_l + s_vl) / 3 for image-text).

Variant "paper" needs no T x T matrix: with unit vectors u_t and per-modality sums S_m,
sum_{i != j in m} <u_i, u_j> = |S_m|^2 - sum_{i in m} |u_i|^2 (= |S_m|^2 - n_m) and
sum_{i in a, j in b} <u_i, u_j> = <S_a, S_b>.
Variant "reference" reproduces the official TAMP code: the intra similarity averages only the positive
entries of the strict upper triangle of the cosine-similarity matrix (inter is the plain mean).

Everything below the float-returning helpers stays on the tensors' device without host synchronisation,
so the pipeline can accumulate a score per linear per sample cheaply on GPU.

The allocations (`DasConfig`, `DasAllocation`, ..., at the end) bind these scores to the layer-wise plan:
"das": one score per linear, the mean of its available diversity terms (intra per modality, inter
per modality pair), each term averaged over the samples where it is defined; the allocator runs on
the linears with cap target + delta. "das_all_token" (Table 4b): one term over all tokens,
modalities ignored. "das_block" (Table 4b): a block's score is the mean of its linears' scores;
the allocator runs on blocks, every linear of a block gets the block's sparsity.

A calibration set without non-text tokens leaves only the intra-text term: DAS then ranks linears
by text diversity alone and says so with a warning (it is no longer the multimodal score).
Per sample the paper variant costs O(T * C) (per-modality sums, no T x T matrix); the "reference"
variant (the official code's positive upper-triangle filter) is inherently O(T^2 * C), computed in
row chunks.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tamp.core.registries import lazy_module
from tamp.sparsity.allocate import Group, GroupAllocationConfig, allocate_groups, block_groups, layer_groups
from tamp.sparsity.registry import ScoringModel, register_allocation
from tamp.sparsity.shared import ScoreState

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
    from torch import nn
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    torch, F, nn = lazy_module("torch"), lazy_module("torch.nn.functional"), lazy_module("torch.nn")

log = logging.getLogger(__name__)

NUM_MODALITIES = 4
VARIANTS = ("paper", "reference")
Key = int | tuple[int, int]

# Rows of the T x T similarity matrix materialised at once by the reference variant (bounds memory).
_ROW_CHUNK = 4096


def term_keys(num_modalities: int = NUM_MODALITIES) -> list[Key]:
    """Fixed layout of the term vector: intra terms 0..M-1, then the pairs (a, b), a < b, in order."""
    pairs = [(a, b) for a in range(num_modalities) for b in range(a + 1, num_modalities)]
    return [*range(num_modalities), *pairs]


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown DAS variant {variant!r}; expected one of {VARIANTS}")


def unit_rows(outputs: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm in float32 (zero rows stay zero, like a cosine with an eps)."""
    return F.normalize(outputs.detach().float(), dim=-1)


def _pair_index(num_modalities: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = torch.triu_indices(num_modalities, num_modalities, offset=1, device=device)
    return pairs[0], pairs[1]


def _reference_intra(
    units: torch.Tensor, ids: torch.Tensor, onehot: torch.Tensor, similarity: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per modality: sum and count of the positive strict-upper-triangle similarities within the modality."""
    num_tokens = units.shape[0]
    cols = torch.arange(num_tokens, device=units.device)
    valid = onehot.sum(1) > 0
    rows_ids = ids.clamp(0, onehot.shape[1] - 1)
    sums = torch.zeros(onehot.shape[1], dtype=torch.float64, device=units.device)
    counts = torch.zeros_like(sums)
    for start in range(0, num_tokens, _ROW_CHUNK):
        stop = min(start + _ROW_CHUNK, num_tokens)
        block = similarity[start:stop] if similarity is not None else units[start:stop] @ units.T
        same = (ids[start:stop, None] == ids[None, :]) & valid[start:stop, None]
        keep = same & (cols[None, :] > cols[start:stop, None]) & (block > 0)
        row_sums = torch.where(keep, block, torch.zeros((), device=block.device, dtype=block.dtype)).sum(1)
        sums.index_add_(0, rows_ids[start:stop], row_sums.double())
        counts.index_add_(0, rows_ids[start:stop], keep.sum(1).double())
    return sums, counts


def similarity_terms(
    outputs: torch.Tensor,
    modality_ids: torch.Tensor,
    variant: str = "paper",
    num_modalities: int = NUM_MODALITIES,
    similarity: torch.Tensor | None = None,
    units: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cosine similarity of every term (float64, layout `term_keys`) and which terms are defined.

    No host synchronisation. `similarity` (U U^T) and `units` may be passed in when the caller already has
    them (AMIA builds U U^T anyway). Intra needs >= 2 tokens of the modality, inter >= 1 of each. In the
    reference variant an intra term whose pairs are all non-positive has similarity 0 (the official code
    would give NaN). Tokens whose code is outside [0, num_modalities) are ignored.
    """
    _check_variant(variant)
    if outputs.dim() != 2 or modality_ids.shape != outputs.shape[:1]:
        raise ValueError(
            f"expected outputs [T, C] and modality_ids [T], got {tuple(outputs.shape)} "
            f"and {tuple(modality_ids.shape)}"
        )
    ids = modality_ids.to(outputs.device).long()
    # One-hot by comparison (F.one_hot may synchronise on CUDA); codes outside [0, M) are ignored.
    onehot = (ids[:, None] == torch.arange(num_modalities, device=outputs.device)).float()
    if units is None and variant == "paper":
        # Fused: fold 1/|z_i| into the one-hot instead of materialising the unit rows (T x C).
        z = outputs.float()
        norms = torch.linalg.vector_norm(z, dim=1)
        nonzero = (norms > 0).float()
        inv = nonzero / norms.clamp_min(torch.finfo(torch.float32).tiny)
        sums = ((onehot * inv[:, None]).T @ z).double()  # [M, C]
        self_sq = (onehot.T @ nonzero).double()  # sum of |u_i|^2: 1 per non-zero row
    else:
        units = unit_rows(outputs) if units is None else units
        onehot = onehot.to(units.dtype)
        sums = (onehot.T @ units).double()  # [M, C] per-modality sums in float32, Gram in float64
        self_sq = (onehot.T @ (units * units).sum(1)).double()  # n_m unless zero rows
    gram = sums @ sums.T  # [M, M]
    n = onehot.sum(0).double()

    intra_defined = n >= 2
    if variant == "paper":
        intra = (gram.diagonal() - self_sq) / (n * (n - 1)).clamp_min(1.0)
    else:
        pos_sum, pos_count = _reference_intra(units, ids, onehot, similarity)
        intra = pos_sum / pos_count.clamp_min(1.0)

    a, b = _pair_index(num_modalities, outputs.device)
    inter = gram[a, b] / (n[a] * n[b]).clamp_min(1.0)
    inter_defined = (n[a] >= 1) & (n[b] >= 1)
    values = torch.cat([intra, inter])
    defined = torch.cat([intra_defined, inter_defined])
    return torch.where(defined, values, torch.zeros_like(values)), defined


def score_tensor(similarity: torch.Tensor, defined: torch.Tensor) -> torch.Tensor:
    """Layer score on device: mean cosine distance over the defined terms (NaN when none is)."""
    distance = torch.where(defined, 1.0 - similarity, torch.zeros_like(similarity))
    return distance.sum() / defined.sum()


@dataclass(frozen=True)
class DiversityTerms:
    """Diversity terms of one sample (or averaged over samples): distances and the similarities behind them.

    `intra` {modality: mean cosine distance}, `inter` {(a, b): mean cosine distance} with a < b, and
    `similarity` {modality or (a, b): mean cosine similarity} (distance = 1 - similarity). Only the terms
    that are defined appear.
    """

    intra: dict[int, float] = field(default_factory=dict)
    inter: dict[tuple[int, int], float] = field(default_factory=dict)
    similarity: dict[Key, float] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """Mean of the available terms (NaN when there is none, e.g. a one-token sample)."""
        values = [*self.intra.values(), *self.inter.values()]
        return sum(values) / len(values) if values else math.nan

    @classmethod
    def from_tensors(
        cls, similarity: torch.Tensor, defined: torch.Tensor, num_modalities: int
    ) -> DiversityTerms:
        sims = similarity.detach().cpu().tolist()
        mask = defined.detach().cpu().tolist()
        present = {key: sim for key, sim, ok in zip(term_keys(num_modalities), sims, mask, strict=True) if ok}
        intra = {k: 1.0 - v for k, v in present.items() if isinstance(k, int)}
        inter = {k: 1.0 - v for k, v in present.items() if isinstance(k, tuple)}
        return cls(intra=intra, inter=inter, similarity=present)


def diversity(
    outputs: torch.Tensor,
    modality_ids: torch.Tensor,
    variant: str = "paper",
    num_modalities: int = NUM_MODALITIES,
) -> DiversityTerms:
    """DAS terms of one sample's linear output `outputs` [T, C] with per-token modality codes [T]."""
    sims, defined = similarity_terms(outputs, modality_ids, variant, num_modalities)
    return DiversityTerms.from_tensors(sims, defined, num_modalities)


def all_token(outputs: torch.Tensor, variant: str = "paper") -> float:
    """All-token DAS (ablation das_all_token): one intra term over every token, modalities ignored."""
    ids = torch.zeros(outputs.shape[0], dtype=torch.long, device=outputs.device)
    return diversity(outputs, ids, variant, num_modalities=1).score


class DiversityAccumulator:
    """Averages each DAS term over the samples where it is defined; the layer score is the mean of those.

    Call `update` once per sample. The state is two float64 tensors (per-term sums of distances and
    counts of samples), returned live by `tensors()`: an in-place all-reduce(sum) of both across ranks
    gives exactly the result of one process seeing every sample.
    """

    def __init__(
        self,
        variant: str = "paper",
        num_modalities: int = NUM_MODALITIES,
        all_token: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        _check_variant(variant)
        self.variant = variant
        self.all_token = all_token
        self.num_modalities = 1 if all_token else num_modalities
        size = len(term_keys(self.num_modalities))
        self._sums = torch.zeros(size, dtype=torch.float64, device=device)
        self._counts = torch.zeros(size, dtype=torch.float64, device=device)

    def update(self, outputs: torch.Tensor, modality_ids: torch.Tensor | None = None) -> None:
        """Add one sample's output [T, C] (modality ids [T]; ignored in all-token mode)."""
        if self.all_token or modality_ids is None:
            if not self.all_token and self.num_modalities != 1:
                raise ValueError("modality_ids is required unless all_token=True")
            modality_ids = torch.zeros(outputs.shape[0], dtype=torch.long, device=outputs.device)
        sims, defined = similarity_terms(outputs, modality_ids, self.variant, self.num_modalities)
        self._sums = self._sums.to(sims.device)
        self._counts = self._counts.to(sims.device)
        self._sums += torch.where(defined, 1.0 - sims, torch.zeros_like(sims))
        self._counts += defined.double()

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The live (sums, counts) tensors: reduce them in place across ranks before reading the result."""
        return self._sums, self._counts

    def merge(self, other: DiversityAccumulator) -> None:
        """Fold another accumulator of the same layout into this one (same as summing the tensors)."""
        if other._sums.shape != self._sums.shape:
            raise ValueError("cannot merge DiversityAccumulators with different term layouts")
        self._sums += other._sums.to(self._sums.device)
        self._counts += other._counts.to(self._counts.device)

    def result(self) -> DiversityTerms:
        """Per-term average distance over the samples where the term was defined."""
        defined = self._counts > 0
        mean_distance = self._sums / self._counts.clamp_min(1.0)
        return DiversityTerms.from_tensors(1.0 - mean_distance, defined, self.num_modalities)

    @property
    def score(self) -> float:
        """Layer score: mean of the available averaged terms (NaN before any term was seen)."""
        return self.result().score


# --- the DAS allocations: a dense scoring pass, then the shared allocator ---


@dataclass
class DasConfig(GroupAllocationConfig):
    """DAS and its Table 4b variants (das_all_token, das_block): the score variant plus the allocator's knobs."""

    name: str = "das"
    variant: str = "paper"  # paper | reference

    def check(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"method.allocation.variant='{self.variant}' is unknown; valid: {', '.join(VARIANTS)}")
        super().check()

    def variant_notes(self) -> dict[str, str]:
        das = ("the official code's similarity (positive upper-triangle entries; as published)"
               if self.variant == "reference" else "the paper's mean cosine distances")
        return {"allocation": f"DAS: {das}", **super().variant_notes()}


class DiversityObserver:
    """Accumulates every targeted linear's DAS terms over the samples of a scoring pass."""

    def __init__(self, model: ScoringModel, variant: str, all_token: bool) -> None:
        self.accumulators = {
            name: DiversityAccumulator(variant, all_token=all_token, device=model.device)
            for linears in model.linears
            for name in linears
        }

    def observe(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: Any) -> None:
        acc = self.accumulators.get(name)
        if acc is not None:
            acc.update(z, ctx.modality_ids)

    def end_block(self, index: int, linears: dict[str, nn.Linear], model: ScoringModel) -> None:
        """The block's linears have seen every sample: sum their terms over processes now."""
        model.reduce_([t for name in linears if name in self.accumulators for t in self.accumulators[name].tensors()])

    def state(self) -> dict[str, torch.Tensor]:
        """Every linear's (sums, counts), for the scoring checkpoint (complete blocks are summed over processes)."""
        return {f"{name}/{i}": t for name, acc in self.accumulators.items() for i, t in enumerate(acc.tensors())}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, acc in self.accumulators.items():
            for i, tensor in enumerate(acc.tensors()):
                tensor.copy_(state[f"{name}/{i}"].to(tensor.device))


def layer_diversity(model: ScoringModel, variant: str, all_token: bool) -> dict[str, float]:
    """{linear name: DAS score} from a dense scoring pass, statistics summed over processes block by block."""
    observer = DiversityObserver(model, variant, all_token)
    model.scoring_pass(observer, desc="das scoring")
    accumulators = observer.accumulators
    if not all_token and accumulators:
        terms = next(iter(accumulators.values())).result()
        if not terms.inter and set(terms.intra) <= {0}:
            log.warning(
                "DAS: the calibration samples hold no non-text tokens; layer scores use the intra-text "
                "diversity only (not the multimodal DAS of the paper)"
            )
    return {name: acc.score for name, acc in accumulators.items()}


@register_allocation("das", config=DasConfig)
class DasAllocation:
    """Per-linear DAS scores -> allocator over linears (TAMP's allocation)."""

    all_token = False

    def __init__(self, cfg: DasConfig | None = None) -> None:
        self.cfg = cfg or DasConfig()
        self.scores: dict[str, float] = {}

    def groups(self, model: ScoringModel) -> list[Group]:
        """DAS gives every linear its own sparsity."""
        return layer_groups(model)

    def score(self, model: ScoringModel) -> ScoreState:
        """Every linear's DAS score on the dense model (the target plays no part: shared across a sweep)."""
        return {"layer": layer_diversity(model, self.cfg.variant, self.all_token)}

    def allocate(self, model: ScoringModel, state: ScoreState, target: float) -> dict[str, float]:
        self.scores = dict(state["layer"])
        plan, _ = allocate_groups(layer_groups(model), self.scores, target, self.cfg)
        return plan

    def plan(self, model: ScoringModel, target: float) -> dict[str, float]:
        return self.allocate(model, self.score(model), target)


@register_allocation("das_all_token", config=DasConfig)
class DasAllTokenAllocation(DasAllocation):
    """Table 4b's All-token DAS: one diversity term over every token of the sample."""

    all_token = True


@register_allocation("das_block", config=DasConfig)
class DasBlockAllocation:
    """Table 4b's Block-wise DAS: block score = mean layer score; uniform inside a block."""

    def __init__(self, cfg: DasConfig | None = None) -> None:
        self.cfg = cfg or DasConfig(name="das_block")
        self.scores: dict[str, float] = {}
        self.layer_scores: dict[str, float] = {}
        self.block_sparsity: dict[str, float] = {}

    def groups(self, model: ScoringModel) -> list[Group]:
        """Block-wise DAS gives one sparsity per decoder block."""
        return block_groups(model)

    def score(self, model: ScoringModel) -> ScoreState:
        """Every linear's DAS score on the dense model; blocks average them in `allocate`."""
        return {"layer": layer_diversity(model, self.cfg.variant, all_token=False)}

    def plan(self, model: ScoringModel, target: float) -> dict[str, float]:
        return self.allocate(model, self.score(model), target)

    def allocate(self, model: ScoringModel, state: ScoreState, target: float) -> dict[str, float]:
        self.layer_scores = dict(state["layer"])
        groups = block_groups(model)
        self.scores = {g.name: sum(self.layer_scores[n] for n in g.linears) / len(g.linears) for g in groups}
        plan, self.block_sparsity = allocate_groups(groups, self.scores, target, self.cfg)
        return plan
