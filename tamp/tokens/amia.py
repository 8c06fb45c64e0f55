"""Adaptive Multimodal Input Activation (AMIA): which tokens of a sample feed a linear's statistics.

Per sample and linear (docs/DESIGN.md, "AMIA"): the last attention row `a` says how much each token matters;
a 3-nearest-neighbour graph on the output tokens (cosine distance D = 1 - U U^T) spreads it to
neighbours (variant "paper": a token's 3 nearest other tokens, Eqs. 3-5; "reference": the official
code's 4 nearest minus the first, which is a duplicated token's twin, not itself, when outputs repeat); tokens are then picked greedily by that contribution, penalising the neighbours of every
pick, until the picked set represents the whole sample in maximum mean discrepancy:
MMD^2(all, S) < mmd_scale * sqrt(div), with kernel K = exp(-D) and div the sample's output diversity.

Cost: D is built once from one product U U^T (its upper triangle, mirrored, so K is exactly symmetric)
and serves the graph, the kernel and the diversity. On CPU the graph's nearest neighbours come from
`row_smallest`, which gives torch.topk's answer from a few column groups per row instead of a heap pass
over the whole row (rows where topk's answer is not unique go to topk). The MMD of every prefix is updated in O(T) per pick
from K's column sums and a running sum of the picked rows, so the greedy part is O(T) per step instead of
the O(T^2) a direct evaluation needs. On CUDA the greedy steps run in chunks without host
synchronisation; the stop condition is read once per chunk from a device-side MMD trace (earlier picks
never depend on later ones, so the steps run past the stop point are simply discarded). On CPU, where a
read is free but each tensor op costs microseconds of dispatch, the same steps run on NumPy views of the
same tensors, with the same float32 / float64 operations in the same order (so the same picks and the
same MMD values, bit for bit), and the stop is checked after every pick.

The selector "amia" (`AmiaConfig`, `AmiaSelector`, at the end) binds `select_tokens` to the pipeline: per
linear, from that linear's own output Z, with the block's attention row (tamp.tokens.attention), which is
one per sample and block, memoised in the sample context; Z differs per linear, so the selection does too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tamp.core.config import TokensConfig
from tamp.core.registries import lazy_module
from tamp.sparsity.das import score_tensor, similarity_terms, unit_rows
from tamp.tokens.attention import last_row_attention
from tamp.tokens.registry import register_selector

if TYPE_CHECKING:
    import numpy as np
    import torch

    from tamp.pipeline.context import SampleContext
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    np, torch = lazy_module("numpy"), lazy_module("torch")

VARIANTS = ("paper", "reference")
_CPU_CHUNK = 8
_GRAM_BLOCK = 256
#: rows per product on the CPU: MKL gives 128 the same bits as 256 on every shape checked (T up to 2900,
#: widths 40-2816), with a tighter triangle (10% faster at T = 300-600); 64 changes bits at T = 65-200
_CPU_GRAM_BLOCK = 128
_CUDA_CHUNKS = (16, 128)  # first chunk, largest chunk (doubling in between)
_MIN_GROUP_SIZE = 8  # row_smallest: rows narrower than 32 groups of 8 (T < 256) go to torch.topk directly


@dataclass
class _Problem:
    """Everything the greedy loop needs, computed once per call."""

    gain: torch.Tensor  # [T] float32: a_i + neighbours' attention weighted by exp(-graph_gamma * D)
    neighbours: torch.Tensor  # [T, k] long
    penalty: torch.Tensor  # [T, k] float32: exp(-penalty_gamma * D_ij) for j in knn(i)
    kernel: torch.Tensor  # [T, T] float32: exp(-D)
    col_sums: torch.Tensor  # [T] float64: sum_i K_ij
    threshold: torch.Tensor  # 0-d float64 on device: mmd_scale * sqrt(max(div, 0))


def _validate(
    outputs: torch.Tensor, attention: torch.Tensor, modality_ids: torch.Tensor, variant: str, knn: int
) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown AMIA variant {variant!r}; expected one of {VARIANTS}")
    if outputs.dim() != 2:
        raise ValueError(f"outputs must be [T, C], got shape {tuple(outputs.shape)}")
    num_tokens = outputs.shape[0]
    if attention.shape != (num_tokens,) or modality_ids.shape != (num_tokens,):
        raise ValueError(
            f"attention and modality_ids must be [T={num_tokens}], got "
            f"{tuple(attention.shape)} and {tuple(modality_ids.shape)}"
        )
    if knn < 0:
        raise ValueError(f"knn must be >= 0, got {knn}")


def _cosine_gram(units: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """U U^T computed by row blocks over the upper triangle only and mirrored: about half the FLOPs of
    one full product, and exactly symmetric (so the kernel's rows and columns agree bit for bit).

    The products keep their shapes (a BLAS product's bits can depend on them: a smaller block changes
    some entries); only the mirroring is done with fewer passes.
    """
    if block is None:
        block = _CPU_GRAM_BLOCK if units.device.type == "cpu" else _GRAM_BLOCK
    num_tokens = units.shape[0]
    if num_tokens <= block:
        gram = units @ units.T
        return torch.triu(gram) + torch.triu(gram, 1).T
    gram = torch.empty(num_tokens, num_tokens, dtype=units.dtype, device=units.device)
    upper = torch.ones(block, block, dtype=torch.bool, device=units.device).triu_()
    for start in range(0, num_tokens, block):
        stop = min(num_tokens, start + block)
        gram[start:stop, start:] = units[start:stop] @ units[start:].T
        diag = gram[start:stop, start:stop]
        size = stop - start
        diag.copy_(torch.where(upper[:size, :size], diag, diag.T))
        gram[stop:, start:stop] = gram[start:stop, stop:].T.contiguous()  # faster than one strided copy
    return gram


def _ascending_picks(values: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's `count` smallest entries in ascending order (values, positions), by `count` rounds of
    min and overwrite with +inf (in place). A tie goes to either entry and, once only +inf is left, an
    entry can come twice: trust the result only where the values are strictly increasing."""
    picked_values, picked_index = [], []
    for _ in range(count):
        value, index = values.min(1, keepdim=True)
        values.scatter_(1, index, float("inf"))
        picked_values.append(value)
        picked_index.append(index)
    return torch.cat(picked_values, 1), torch.cat(picked_index, 1)


def row_smallest(matrix: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.topk(matrix, count, dim=1, largest=False)` (values, indices), bit for bit, at a fraction of the cost.

    topk pushes every element of a row through a heap (~1.5 ms for 600 x 600 on one thread). Here the
    columns fall into G interleaved groups; the count + 1 groups with the smallest minima hold the row's
    count + 1 smallest values (any other element has count + 1 distinct candidates at or below it: those
    groups' minima), so a search over those groups' columns finds them. Where these values are strictly
    increasing the answer is unique, hence topk's own; rows with a tie or a NaN among them (topk's order
    is then its heap's) go to torch.topk itself.
    """
    rows, width = matrix.shape
    wanted = count + 1
    balanced = 2 ** round(math.log2(math.sqrt(wanted * width)))  # about as many groups as candidates
    num_groups = max(32, min(balanced, 2 ** int(math.log2(max(width // _MIN_GROUP_SIZE, 1)))))
    group_size = width // num_groups
    if matrix.device.type != "cpu" or group_size < _MIN_GROUP_SIZE or wanted > num_groups:
        return torch.topk(matrix, count, dim=1, largest=False)
    head = group_size * num_groups  # column j * num_groups + g is in group g, and so is tail column head + g
    grouped = matrix[:, :head].unflatten(1, (group_size, num_groups))
    minima = grouped.amin(1)  # NaN propagates; num_groups is a multiple of the SIMD width: amin vectorises
    tail = width - head  # < num_groups
    if tail:
        torch.minimum(minima[:, :tail], matrix[:, head:], out=minima[:, :tail])
    has_nan = minima.isnan().any(1)
    groups = _ascending_picks(minima, wanted)[1]  # [rows, wanted]
    members = grouped.gather(2, groups[:, None, :].expand(rows, group_size, wanted))
    extra = matrix[:, head:].gather(1, groups.clamp_max(max(tail - 1, 0))) if tail else members[:, 0]
    extra = extra.masked_fill(groups >= tail, float("inf"))  # the groups without a tail column
    candidates = torch.cat([members, extra[:, None, :]], 1).view(rows, -1)  # [rows, (group_size + 1) * wanted]
    values, position = _ascending_picks(candidates, wanted)
    index = groups.gather(1, position % wanted) + num_groups * torch.div(position, wanted, rounding_mode="floor")
    unique = (values[:, 1:] > values[:, :-1]).all(1) & ~has_nan
    values, index = values[:, :count].contiguous(), index[:, :count].contiguous()
    if not bool(unique.all()):
        redo = torch.nonzero(~unique).flatten()
        values[redo], index[redo] = torch.topk(matrix[redo], count, dim=1, largest=False)
    return values, index


def nearest_others(distance: torch.Tensor, k: int) -> torch.Tensor:
    """[T, k] indices of each token's k nearest other tokens (the paper's N_i: i is never in it).

    The official code takes the k + 1 smallest distances and drops the first, assuming that is the
    token itself; when outputs are duplicated (LLaVA-NeXT's repeated image-newline token) a twin can
    come first and the token becomes its own neighbour. Here the diagonal is left out, and where
    equal distances straddle the k-th place the lower indices win (a stable sort of those rows).
    """
    num_tokens = distance.shape[0]
    if k <= 0:
        return torch.empty(num_tokens, 0, dtype=torch.long, device=distance.device)
    diagonal = distance.diagonal().clone()
    distance.fill_diagonal_(float("inf"))
    try:
        extra = min(k + 1, num_tokens - 1)  # one more than needed, to see a tie at the k-th place
        values, index = row_smallest(distance, extra)
        index = index[:, :k].clone()
        if extra > k:
            tied = torch.nonzero(values[:, k - 1] == values[:, k]).flatten()
            if tied.numel():
                index[tied] = torch.sort(distance[tied], dim=1, stable=True).indices[:, :k]
    finally:
        distance.diagonal().copy_(diagonal)
    return index


def _prepare(
    outputs: torch.Tensor,
    attention: torch.Tensor,
    modality_ids: torch.Tensor,
    variant: str,
    knn: int,
    graph_gamma: float,
    penalty_gamma: float,
    mmd_scale: float,
) -> _Problem:
    """One product U U^T, reused for the kNN graph, the kernel and the sample's diversity."""
    units = unit_rows(outputs)
    similarity = _cosine_gram(units)
    sims, defined = similarity_terms(outputs, modality_ids, variant, similarity=similarity, units=units)
    div = score_tensor(sims, defined).nan_to_num(0.0)
    threshold = mmd_scale * div.clamp_min(0.0).sqrt()

    # The T x T buffer is reused in place: similarity -> distance -> kernel (bitwise 1 - S, exp(-D)).
    distance = similarity.neg_().add_(1.0)
    k = min(knn, outputs.shape[0] - 1)
    attn = attention.detach().to(device=units.device, dtype=torch.float32)
    if variant == "paper":
        neighbours = nearest_others(distance, k)
    else:  # the official code: k + 1 smallest distances per row, dropping the first (not always the token itself)
        neighbours = row_smallest(distance, k + 1)[1][:, 1:]
    near = distance.gather(1, neighbours)
    gain = attn + (torch.exp(-graph_gamma * near) * attn[neighbours]).sum(1)
    penalty = torch.exp(-penalty_gamma * near)
    kernel = distance.neg_().exp_()
    return _Problem(gain, neighbours, penalty, kernel, kernel.sum(0, dtype=torch.float64), threshold)


def _chunks(num_tokens: int, device: torch.device):
    """Step ranges between stop checks: small on CPU (a check is free), growing on CUDA (a check syncs)."""
    size, largest = (_CPU_CHUNK, _CPU_CHUNK) if device.type == "cpu" else _CUDA_CHUNKS
    start = 0
    while start < num_tokens:
        stop = min(num_tokens, start + size)
        yield start, stop
        start, size = stop, min(2 * size, largest)


def _host_picks(gain: np.ndarray, neighbours: np.ndarray, penalty: np.ndarray) -> Iterator[int]:
    """The greedy picks alone, on NumPy (float32 gains and penalties): the order depends on the kNN graph
    and the attention only; the kernel is needed for the stop, not the order. `gain` is updated in place.

    The same IEEE operations in the same order as the tensor form of the gain update (torch.argmax,
    clamp_min, index_add_; tests/test_amia_speed_equivalence.py keeps it), so picks are identical.
    """
    zero = np.float32(0.0)
    for _ in range(gain.shape[0]):
        s = int(gain.argmax())  # first index on ties, NaN counts as the largest: as torch.argmax
        best = gain[s]
        picked = zero if best < zero else best  # clamp_min(0): NaN and -0.0 pass through
        gain[neighbours[s]] -= penalty[s] * picked  # distinct indices: one fancy-indexed update is index_add_
        gain[s] = -np.inf
        yield s


def _host_steps(problem: _Problem) -> Iterator[tuple[int, float]]:
    """The greedy loop on NumPy views of a CPU problem: yields (pick, MMD^2 of the picks so far) per step,
    MMD^2 updated in O(T) from K's column sums and the picked rows' running sum.

    Each value is computed by the same IEEE operations in the same order as the tensor form of the
    recurrence (float32 gains and penalties, float64 MMD terms; tests/test_amia_speed_equivalence.py
    keeps it), so picks and MMD values are identical bit for bit; a step costs a few microseconds
    instead of ~14 tensor dispatches.
    """
    num_tokens = problem.gain.shape[0]
    gain = problem.gain.numpy().copy()
    neighbours, penalty = problem.neighbours.numpy(), problem.penalty.numpy()
    kernel, col_sums = problem.kernel.numpy(), problem.col_sums.numpy()
    full_mean = float(problem.col_sums.sum() / float(num_tokens) ** 2)  # the tensor form's 0-d value
    row_acc = np.zeros(num_tokens, dtype=np.float64)  # sum_{t in S} K[t, :]
    pair_sum = cross_sum = 0.0  # sum_{s, t in S} K_st and sum_{i, s in S} K_is
    for t, s in enumerate(_host_picks(gain, neighbours, penalty)):
        pair_sum += 2.0 * float(row_acc[s]) + float(kernel[s, s])
        row_acc += kernel[s]
        cross_sum += float(col_sums[s])
        count = float(t + 1)
        mmd = full_mean + pair_sum / count**2 - 2.0 * cross_sum / (num_tokens * count)
        yield s, (0.0 if mmd < 0.0 else mmd)


def _select_on_host(problem: _Problem) -> torch.Tensor:
    """The greedy loop on the host (the CPU path): stops at the first prefix whose MMD^2 is below the threshold."""
    threshold = float(problem.threshold)
    order = []
    for s, mmd in _host_steps(problem):
        order.append(s)
        if mmd < threshold:
            break
    return torch.tensor(order, dtype=torch.long)


def _select_by_order(problem: _Problem) -> torch.Tensor:
    """The CUDA path: the picks on the host (`_host_picks`, one copy of the [T] gains and the [T, k] graph),
    then the MMD^2 of every prefix of a chunk of picks at once on the device, from the kernel's entries
    among the picks (K is symmetric: pair_sum(n) = sum_{i < n} (2 sum_{j < i} K[o_i, o_j] + K[o_i, o_i])).

    A chunk costs a dozen kernels and one read of its first stop, instead of a dozen kernels per pick;
    the picks are the host loop's, the MMD values its recurrence's up to float64 summation order.
    """
    kernel, device = problem.kernel, problem.kernel.device
    num_tokens = kernel.shape[0]
    picks = _host_picks(
        problem.gain.cpu().numpy().copy(), problem.neighbours.cpu().numpy(), problem.penalty.cpu().numpy()
    )
    full_mean = problem.col_sums.sum() / float(num_tokens) ** 2
    pair_before = torch.zeros(1, dtype=torch.float64, device=device)
    cross_before = torch.zeros(1, dtype=torch.float64, device=device)
    order: list[int] = []
    index = torch.empty(0, dtype=torch.long, device=device)
    for start, stop in _chunks(num_tokens, device):
        order.extend(next(picks) for _ in range(stop - start))
        index = torch.tensor(order, dtype=torch.long, device=device)
        new = index[start:]
        block = kernel.index_select(0, new).index_select(1, index).double()  # [stop - start, stop]
        position = torch.arange(start, stop, device=device)
        earlier = torch.arange(stop, device=device)[None, :] < position[:, None]
        own = block.gather(1, position[:, None]).view(-1)  # K[o_i, o_i]
        pair = pair_before + (2.0 * block.masked_fill(~earlier, 0.0).sum(1) + own).cumsum(0)
        cross = cross_before + problem.col_sums.index_select(0, new).cumsum(0)
        count = (position + 1).double()
        mmd = (full_mean + pair / count**2 - 2.0 * cross / (num_tokens * count)).clamp_min(0.0)
        hits = torch.nonzero(mmd < problem.threshold)
        if hits.numel():
            return index[: start + int(hits[0, 0]) + 1]
        pair_before, cross_before = pair[-1:], cross[-1:]
    return index


def select_tokens(
    outputs: torch.Tensor,
    attention: torch.Tensor,
    modality_ids: torch.Tensor,
    variant: str = "paper",
    knn: int = 3,
    graph_gamma: float = 1.0,
    penalty_gamma: float = 0.2,
    mmd_scale: float = 0.1,
) -> torch.LongTensor:
    """Indices of the tokens AMIA selects for this sample's linear, in the order chosen.

    `outputs` [T, C] is the linear's dense output, `attention` [T] the head-averaged last attention row,
    `modality_ids` [T] the tokens' modality codes. div ("paper": the DAS score of this sample,
    "reference": 1 - mean of the official code's similarity terms) sets the stop threshold; div <= 0 or
    undefined makes the threshold 0, so every token is selected. At least one token is always selected
    and the loop ends when all are.
    """
    _validate(outputs, attention, modality_ids, variant, knn)
    if outputs.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=outputs.device)
    problem = _prepare(outputs, attention, modality_ids, variant, knn, graph_gamma, penalty_gamma, mmd_scale)
    if problem.gain.device.type == "cpu":
        return _select_on_host(problem)
    return _select_by_order(problem)


def selected_mask(indices: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Bool mask [T] of the selected indices (for statistics that take a mask)."""
    mask = torch.zeros(num_tokens, dtype=torch.bool, device=indices.device)
    mask[indices] = True
    return mask


# --- the selector: AMIA's settings and its binding to the layer-wise pipeline ---


@dataclass
class AmiaConfig(TokensConfig):
    """AMIA's graph and penalty settings (the paper's defaults)."""

    name: str = "amia"
    variant: str = "paper"  # paper | reference
    knn: int = 3
    graph_gamma: float = 1.0
    penalty_gamma: float = 0.2
    mmd_scale: float = 0.1

    def check(self) -> None:
        if self.variant not in VARIANTS:
            valid = ", ".join(VARIANTS)
            raise ValueError(f"method.tokens.variant='{self.variant}' is unknown; valid: {valid}")
        if self.knn < 1:
            raise ValueError(f"method.tokens.knn={self.knn} is invalid; valid: an integer >= 1")
        if self.mmd_scale < 0:
            raise ValueError(f"method.tokens.mmd_scale={self.mmd_scale} is invalid; valid: >= 0")

    def variant_notes(self) -> dict[str, str]:
        if self.variant == "reference":
            return {"tokens": "AMIA as the official code (top-4 neighbours minus the first, its similarity; "
                              "as published)"}
        return {"tokens": "AMIA as the paper's Eqs. 3-5 (a token is never its own neighbour)"}


@register_selector("amia", config=AmiaConfig)
class AmiaSelector:
    """Adaptive Multimodal Input Activation (TAMP's token selection)."""

    def __init__(self, cfg: AmiaConfig) -> None:
        self.cfg = cfg

    def select(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: SampleContext) -> torch.Tensor:
        cfg = self.cfg
        index = select_tokens(
            z,
            last_row_attention(ctx),
            ctx.modality_ids.to(z.device),
            variant=cfg.variant,
            knn=cfg.knn,
            graph_gamma=cfg.graph_gamma,
            penalty_gamma=cfg.penalty_gamma,
            mmd_scale=cfg.mmd_scale,
        )
        return index.to(x.device)
