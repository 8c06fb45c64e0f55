"""SparseGPT: prune a linear layer with the blocked Optimal Brain Surgeon update.

Written from the method's definition (Frantar & Alistarh, 2023). Columns are processed left to right
in blocks; inside a block every pruned weight's error is spread over the not-yet-processed columns of
the block through the upper Cholesky factor of H^-1, and the block's accumulated error is applied to
all later columns in one matmul (the "lazy batch" update).

How H^-1 is factored (`damping`):
- `always` (the original SparseGPT): H + percdamp * mean(diag H) * I, always; 10x more, up to 3
  times, if that is still not positive definite.
- `on_failure` (the TAMP repository's `fastprune`, which the paper's SparseGPT rows came from): the
  Cholesky factor of H as it is; only when that fails (or has NaN) is percdamp * mean(diag H) added to
  the diagonal, again on every further failure; the same for the upper factor of H^-1, with
  percdamp * mean(|diag H^-1|); +-inf entries of H and H^-1 are replaced by their 0.999 / 0.001
  quantiles first. With more calibration tokens than columns H is positive definite and undamped.

Below the math: `HessianStats` (the ``sum X^T X`` statistic), the method's settings and its pruner binding.
`sparsegpt_prune` is `inverse_factor` (H^-1's factor) then `pruned_with_factor` (the OBS pass): the pruner
factors once for consecutive linears given the very same statistic (q, k, v share one: tamp.methods.composed).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tamp.core.config import MethodConfig
from tamp.core.registries import lazy_module
from tamp.pruning.base import NM, Pruner, all_finite, token_rows
from tamp.pruning.masks import lowest_mask
from tamp.pruning.registry import register_pruner

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    torch, nn = lazy_module("torch"), lazy_module("torch.nn")

__all__ = [
    "DAMPINGS", "HessianStats", "InverseFactor", "SparseGPTError", "SparseGPTMethodConfig", "SparseGPTPruner",
    "inverse_factor", "pruned_with_factor", "sparsegpt_prune",
]

log = logging.getLogger(__name__)

_DAMP_RETRIES = 3
_DAMP_GROWTH = 10.0
#: how H^-1 is factored: always damped (the original), damped only when Cholesky fails (TAMP repository)
DAMPINGS = ("always", "on_failure")
#: `on_failure` adds its damping again after every failed factorisation; this many tries, then an error
_ON_FAILURE_TRIES = 1000


class SparseGPTError(RuntimeError):
    """The Hessian could not be inverted even after increasing the dampening."""


@dataclass
class InverseFactor:
    """What SparseGPT needs of a Hessian, whatever weight it prunes: the upper Cholesky factor U of H^-1
    (float32, [in, in], H with its dead inputs neutralised) and those dead inputs (diag H == 0).

    Linears that read the same input (q, k, v; gate, up) have the same H: one factor serves them all.
    """

    upper: Tensor
    dead: Tensor


def _check_damping(damping: str) -> None:
    if damping not in DAMPINGS:
        raise ValueError(f"unknown SparseGPT damping {damping!r}; valid: {', '.join(DAMPINGS)}")


def inverse_factor(
    hessian: Tensor, percdamp: float = 0.01, damping: str = "always", name: str | None = None,
    device: torch.device | str | None = None,
) -> InverseFactor:
    """H^-1's upper factor as `sparsegpt_prune` uses it, on `device` (the weight's; default H's).

    A dead input (diag H == 0) never fires, so its weights are free to prune and H stays invertible
    with H_ii = 1 (`pruned_with_factor` zeroes its weights). `name` only labels warnings and errors.
    """
    _check_damping(damping)
    h = hessian.detach().to(device=hessian.device if device is None else device, dtype=torch.float32, copy=True)
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    upper = _inverse_factor(h, percdamp, name) if damping == "always" else _inverse_factor_on_failure(h, percdamp, name)
    return InverseFactor(upper, dead)


def _upper_cholesky_of_inverse(h: Tensor, damp: float) -> Tensor | None:
    """Upper U with (H + damp I)^-1 = U^T U, or None if H + damp I is not (numerically) PD."""
    damped = h + damp * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    lower, info = torch.linalg.cholesky_ex(damped)
    if info.item() != 0 or not all_finite(lower):
        return None
    upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
    if info.item() != 0 or not all_finite(upper):
        return None
    return upper


def _inverse_factor(h: Tensor, percdamp: float, name: str | None) -> Tensor:
    """Dampen with ``percdamp * mean(diag H)``; on failure retry with 10x the damping, 3 times."""
    damp = percdamp * torch.diagonal(h).mean().item()
    for attempt in range(_DAMP_RETRIES + 1):
        if attempt:
            damp *= _DAMP_GROWTH
            log.warning("SparseGPT %s: Hessian not positive definite, retrying with damping %.3g",
                        name or "<unnamed>", damp)
        upper = _upper_cholesky_of_inverse(h, damp)
        if upper is not None:
            return upper
    raise SparseGPTError(
        f"SparseGPT: Cholesky of the Hessian failed for layer {name or '<unnamed>'} "
        f"(last damping tried: {damp:.3g}); check the calibration inputs for NaN/Inf"
    )


def _quantile(values: Tensor, q: float) -> Tensor:
    """torch.quantile's linear interpolation, for tensors of any size (torch.quantile stops at 2^24)."""
    flat = torch.sort(values.flatten()).values
    pos = q * (flat.numel() - 1)
    lo, hi = int(pos), min(int(pos) + 1, flat.numel() - 1)
    return flat[lo] + (flat[hi] - flat[lo]) * (pos - lo)


def _replace_inf(m: Tensor) -> None:
    """+inf entries -> the 0.999 quantile of m, -inf -> the 0.001 quantile, in place (TAMP repository)."""
    for where, q in ((torch.isposinf(m), 0.999), (torch.isneginf(m), 0.001)):
        if where.any():
            m[where] = _quantile(m, q)


def _cholesky_until_ok(m: Tensor, damp: float, upper: bool, name: str | None) -> Tensor:
    """Cholesky factor of m; on a failure (or NaN) add `damp` to m's diagonal in place and try again."""
    for _ in range(_ON_FAILURE_TRIES):
        factor, info = torch.linalg.cholesky_ex(m, upper=upper)
        if info.item() == 0 and not bool(torch.isnan(torch.stack(torch.aminmax(factor))).any()):  # NaN reaches min and max
            return factor
        m.diagonal().add_(damp)
    raise SparseGPTError(
        f"SparseGPT (damping on_failure): Cholesky failed {_ON_FAILURE_TRIES} times for layer "
        f"{name or '<unnamed>'}; check the calibration inputs for NaN/Inf"
    )


def _inverse_factor_on_failure(h: Tensor, percdamp: float, name: str | None) -> Tensor:
    """The TAMP repository's `fastprune`: H undamped unless its Cholesky fails, then H^-1's upper factor."""
    h = h.clone()
    _replace_inf(h)
    lower = _cholesky_until_ok(h, percdamp * torch.diagonal(h).mean().item(), upper=False, name=name)
    hinv = torch.cholesky_inverse(lower)
    _replace_inf(hinv)
    return _cholesky_until_ok(hinv, percdamp * torch.diagonal(hinv).abs().mean().item(), upper=True, name=name)


def _unstructured_block_mask(w_block: Tensor, hinv_diag: Tensor, sparsity: float) -> Tensor:
    """Prune the block's ``int(numel * sparsity) + 1`` lowest ``w^2 / diag(Hinv)^2`` (all rows together).

    The original compares with ``<=`` against the ``int(numel * sparsity)``-th smallest score, which
    prunes exactly that many plus one when scores are distinct (float32 weights) and every tied entry
    besides when they are not. Weights loaded in bf16 or fp16 tie often (a column shares its Hinv
    diagonal, and a 7-bit mantissa has few magnitudes), so the original over-prunes them by a few
    weights per block; here ties are broken by position (a stable sort), so the count is the plan's.
    """
    score = w_block.square() / hinv_diag.square()[None, :]
    flat = score.flatten()
    k = min(int(flat.numel() * sparsity), flat.numel() - 1)
    return lowest_mask(flat, k + 1).view_as(score)  # the first k + 1 of a stable sort, without sorting


def _nm_group_mask(w_group: Tensor, hinv_diag: Tensor, n: int) -> Tensor:
    """In a [rows, m] slice, mark the ``n`` lowest ``w^2 / diag(Hinv)^2`` of each row."""
    score = w_group.square() / hinv_diag.square()[None, :]
    lowest = torch.topk(score, n, dim=1, largest=False).indices
    return torch.zeros_like(score, dtype=torch.bool).scatter_(1, lowest, True)


def _prune_block(
    w1: Tensor, hinv1: Tensor, sparsity: float, prune_n: int, prune_m: int
) -> tuple[Tensor, Tensor]:
    """OBS over one block's columns; returns (pruned block, scaled errors for the lazy update).

    Column by column, as the original: every weight sees the same operations in the same order, so the
    result is bitwise the original's. The block is held transposed (a column is a contiguous row) and a
    column is never updated after its own step (nothing reads it again), which halves the loop's memory
    traffic; the pruned column is read off the held values once, after the loop.
    """
    count = w1.shape[1]
    diag = torch.diagonal(hinv1)
    if prune_n == 0:
        mask_t = _unstructured_block_mask(w1, diag, sparsity).T.contiguous()
    else:
        mask_t = torch.zeros(count, w1.shape[0], dtype=torch.bool, device=w1.device)
    w_t = w1.T.contiguous()  # [count, rows]
    err_t = torch.empty_like(w_t)
    update = torch.empty_like(w_t)
    h_col = hinv1.unsqueeze(-1)  # [count, count, 1]
    for i in range(count):
        if prune_n != 0 and i % prune_m == 0:
            group = w_t[i:i + prune_m].T.contiguous()  # the current [rows, m] values, laid out as the original's
            mask_t[i:i + prune_m] = _nm_group_mask(group, diag[i:i + prune_m], prune_n).T
        w = w_t[i]
        err = torch.sub(w, torch.where(mask_t[i], 0.0, w), out=err_t[i]).div_(hinv1[i, i])
        rest = count - i - 1
        if rest:  # spread this column's error over the block's remaining columns (OBS update)
            torch.mul(h_col[i, i + 1:], err, out=update[:rest])
            w_t[i + 1:].sub_(update[:rest])
    q_t = torch.where(mask_t, 0.0, w_t)  # row i of w_t is column i as its step saw it
    return q_t.T.contiguous(), err_t.T.contiguous()


def _check_args(columns: int, sparsity: float, prune_n: int, prune_m: int, blocksize: int) -> int:
    """Validate and return the block size; N:M groups must not straddle a block boundary."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    if blocksize < 1:
        raise ValueError(f"blocksize must be >= 1, got {blocksize}")
    if prune_n or prune_m:
        if not 0 < prune_n < prune_m:
            raise ValueError(f"N:M pattern needs 0 < N < M, got {prune_n}:{prune_m}")
        if columns % prune_m != 0:
            raise ValueError(f"N:M {prune_n}:{prune_m} needs in_features divisible by {prune_m}, "
                             f"got in_features={columns}")
        blocksize = max(prune_m, blocksize // prune_m * prune_m)
    return blocksize


def _prune(
    weight: Tensor, hessian_shape: tuple[int, ...], factor: Callable[[], InverseFactor], sparsity: float,
    prune_n: int, prune_m: int, blocksize: int, damping: str,
) -> Tensor:
    """`sparsegpt_prune` with H^-1's factor from `factor()` (for a Hessian of `hessian_shape`), called only
    when the weight is really pruned: linears sharing a Hessian pass one factor's getter."""
    _check_damping(damping)
    if weight.dim() != 2 or tuple(hessian_shape) != (weight.shape[1], weight.shape[1]):
        raise ValueError(f"weight [out, in] and hessian [in, in] expected, got {tuple(weight.shape)} "
                         f"and {tuple(hessian_shape)}")
    blocksize = _check_args(weight.shape[1], sparsity, prune_n, prune_m, blocksize)
    if prune_n == 0 and sparsity == 0.0:
        return weight.detach().clone()
    return pruned_with_factor(weight, factor(), sparsity, prune_n, prune_m, blocksize)


def pruned_with_factor(
    weight: Tensor, factor: InverseFactor, sparsity: float, prune_n: int = 0, prune_m: int = 0,
    blocksize: int = 128,
) -> Tensor:
    """The blocked OBS pass of `sparsegpt_prune` on a factor from `inverse_factor` (arguments checked)."""
    w = weight.detach().to(dtype=torch.float32, copy=True)
    w[:, factor.dead] = 0.0
    hinv = factor.upper
    columns = w.shape[1]
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        q1, err1 = _prune_block(w[:, i1:i2].clone(), hinv[i1:i2, i1:i2], sparsity, prune_n, prune_m)
        w[:, i1:i2] = q1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w.to(dtype=weight.dtype)


def sparsegpt_prune(
    weight: Tensor,
    hessian: Tensor,
    sparsity: float,
    prune_n: int = 0,
    prune_m: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
    name: str | None = None,
    damping: str = "always",
) -> Tensor:
    """Return the SparseGPT-pruned (and error-compensated) copy of ``weight`` [out, in].

    ``hessian`` [in, in] is ``(2/n) sum X^T X`` (HessianStats.hessian()). Unstructured when
    ``prune_n == 0`` (mask per block, by ``sparsity``), else N:M with ``sparsity`` ignored. The math
    runs in float32; the result has the weight's dtype and device. Inputs are never modified.
    Sparsity 0 (unstructured) returns an exact copy: the original would still prune the block's
    single lowest weight because of its ``<=`` threshold. ``damping``: how H^-1 is factored (`always`,
    the original; `on_failure`, the TAMP repository's; module docstring).
    """
    return _prune(
        weight, tuple(hessian.shape),
        lambda: inverse_factor(hessian, percdamp, damping, name, weight.device),
        sparsity, prune_n, prune_m, blocksize, damping,
    )


class HessianStats:
    """``sum X^T X`` over samples; ``hessian()`` = ``(2 / n_samples) * sum`` as SparseGPT averages it."""

    def __init__(self, in_features: int, device: torch.device | str | None = None) -> None:
        self.in_features = in_features
        self.sum = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.counts = torch.zeros(1, dtype=torch.int64, device=device)

    @property
    def n_samples(self) -> int:
        return int(self.counts[0].item())

    def add(self, x: Tensor) -> None:
        """Accumulate one sample's (selected) tokens with a single matmul."""
        tokens, samples = token_rows(x, self.in_features)
        tokens = tokens.to(self.sum.device)
        if tokens.shape[0] > 0:
            self.sum.addmm_(tokens.T, tokens)
        self.counts[0] += samples

    def hessian(self) -> Tensor:
        """``(2 / n_samples) * sum X^T X`` (a new tensor); zeros when nothing was counted."""
        return self.sum * (2.0 / self.counts[0].clamp(min=1).to(torch.float32))

    def tensors(self) -> list[Tensor]:
        """The state tensors themselves (not copies): all-reduce(sum) them in place to merge processes."""
        return [self.sum, self.counts]

    def copy(self) -> HessianStats:
        """An independent statistic with the same sums (a linear leaving a shared statistic keeps its past)."""
        other = HessianStats.__new__(HessianStats)
        other.in_features, other.sum, other.counts = self.in_features, self.sum.clone(), self.counts.clone()
        return other


@dataclass
class SparseGPTMethodConfig(MethodConfig):
    """A method with the SparseGPT pruner: its column block size, Hessian dampening and when it applies.

    `damping: always` is the original SparseGPT; `on_failure` the TAMP repository's `fastprune` (damped
    only when Cholesky fails), which the paper's SparseGPT rows came from (preset sparsegpt_official).
    """

    pruner: str = "sparsegpt"
    blocksize: int = 128
    percdamp: float = 0.01
    damping: str = "always"  # always | on_failure

    def check(self) -> None:
        if self.blocksize <= 0 or not math.isfinite(self.percdamp) or self.percdamp < 0:
            bad = f"method.blocksize={self.blocksize}" if self.blocksize <= 0 else f"method.percdamp={self.percdamp}"
            raise ValueError(f"{bad} is out of range; valid: method.blocksize >= 1, method.percdamp >= 0")
        if self.damping not in DAMPINGS:
            raise ValueError(f"method.damping='{self.damping}' is unknown; valid: {', '.join(DAMPINGS)}")

    def variant_notes(self) -> dict[str, str]:
        if self.damping == "on_failure":
            return {"pruner": "SparseGPT as the TAMP repository's fastprune (undamped Hessian, damped only "
                              "when Cholesky fails; as published)"}
        return {"pruner": "the original SparseGPT (Hessian always damped)"}


@register_pruner("sparsegpt", config=SparseGPTMethodConfig)
class SparseGPTPruner(Pruner):
    """OBS reconstruction from the input Hessian; the mask is read off the zeros it leaves."""

    name = "sparsegpt"
    input_only_stats = True  # HessianStats: in_features and device, then the rows

    def __init__(
        self, blocksize: int | SparseGPTMethodConfig = 128, percdamp: float = 0.01, damping: str = "always"
    ) -> None:
        if isinstance(blocksize, SparseGPTMethodConfig):
            blocksize, percdamp, damping = blocksize.blocksize, blocksize.percdamp, blocksize.damping
        self.blocksize = blocksize
        self.percdamp = percdamp
        self.damping = damping
        #: the last factor of H^-1 and what it was computed from (`_factor`), until `block_done`
        self._kept: tuple[HessianStats, tuple, InverseFactor] | None = None

    def new_stats(self, linear: nn.Linear) -> HessianStats:
        return HessianStats(linear.in_features, linear.weight.device)

    def planned_pruned(self, linear: nn.Linear, sparsity: float, nm: NM) -> int:
        if nm or sparsity == 0.0:
            return super().planned_pruned(linear, sparsity, nm)
        # SparseGPT thresholds each column block at its int(numel * p)-th score and prunes `<=` it
        rows, cols = linear.weight.shape
        widths = [min(self.blocksize, cols - i) for i in range(0, cols, self.blocksize)]
        return sum(int(rows * w * sparsity) + 1 for w in widths)

    def prune(self, linear: nn.Linear, stats: HessianStats, sparsity: float, nm: NM, name: str) -> torch.Tensor:
        n, m = nm or (0, 0)
        weight = linear.weight.data
        pruned = _prune(
            weight, tuple(stats.sum.shape), lambda: self._factor(stats, weight.device, name), sparsity, n, m,
            self.blocksize, self.damping,
        )
        linear.weight.data.copy_(pruned)
        return pruned == 0

    def _factor(self, stats: HessianStats, device: torch.device, name: str) -> InverseFactor:
        """H^-1's factor of `stats`, computed once for consecutive linears given the very same statistic
        (q, k, v reading one input share it: tamp.methods.composed). The last one is kept, with the
        statistic itself (compared by identity, so a new statistic at a reused address never matches) and
        its tensors' version counters (an `add` or all-reduce after the factor invalidates it)."""
        key = (_versions(stats), device, self.percdamp, self.damping)
        kept = self._kept
        if kept is not None and kept[0] is stats and key[0] is not None and kept[1] == key:
            return kept[2]
        self._kept = None  # not held while the next one is computed
        factor = inverse_factor(stats.hessian(), self.percdamp, self.damping, name, device)
        self._kept = (stats, key, factor)
        return factor

    def block_done(self) -> None:
        """Drop the kept factor: the next block's statistics are new, and its memory is one [in, in]."""
        self._kept = None


def _versions(stats: HessianStats) -> tuple[int, ...] | None:
    """The version counters of the statistic's tensors (bumped by every in-place write); None where
    tensors have none (made under torch.inference_mode): then no factor is reused."""
    try:
        return tuple(t._version for t in stats.tensors())
    except RuntimeError:
        return None
