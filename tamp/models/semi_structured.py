"""Run a 2:4-pruned model's linears on the GPU's semi-structured sparse kernels (inference only).

A 2:4 mask (at most 2 non-zeros in every 4 consecutive input weights of a row) only pays off in
speed when the matmul skips the zeros: NVIDIA's sparse tensor cores (compute capability >= 8.0) do,
through cuSPARSELt or CUTLASS, which PyTorch exposes as `torch.sparse.to_sparse_semi_structured`.
`to_semi_structured` swaps each 2:4 linear's weight for that compressed tensor, so `F.linear` calls
the sparse kernel. The mask and the kept values are unchanged: the same model with its zeros stored
densely ("dense-with-zeros") is the reference its outputs are compared with (bf16 rounding apart).

Constraints, from torch/sparse/semi_structured.py (torch 2.15):
- CUDA tensors only, 2-D, contiguous (`_validate_device_dim_dtype_shape`).
- cuSPARSELt (the default backend): int8, fp8, fp16, bf16; weight rows and columns >= 16 and
  multiples of 16 for fp16/bf16. The input's token count and width are padded to a multiple of 8
  by the op itself (`cusparselt_mm`), so any batch or length works.
- CUTLASS (`_FORCE_CUTLASS`, the fallback when cuSPARSELt is missing): rows a multiple of 32 and
  columns of 64 for fp16/bf16; its matmul runs on compute capability 8.x only
  (`sparse_semi_structured_mad_op`: "Supported only on GPUs with compute capability 8.x"), so not
  on an H100.
- Inference only: the converted weight has no gradient, and `.to()` / `.half()` on it are refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "MIN_CAPABILITY",
    "SemiStructuredReport",
    "check_device",
    "choose_backend",
    "is_two_four",
    "plan_conversion",
    "to_semi_structured",
]

#: the first GPUs with sparse tensor cores (Ampere)
MIN_CAPABILITY = (8, 0)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16)
#: (rows, cols) a weight's dimensions must be multiples of (and at least), per backend, fp16/bf16
_FALLBACK_MULTIPLES = {"cusparselt": (16, 16), "cutlass": (32, 64)}


@dataclass
class SemiStructuredReport:
    """What `to_semi_structured` did: the converted linears, the skipped ones with why, the backend."""

    backend: str
    converted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def is_two_four(weight: Tensor) -> bool:
    """True when every group of 4 consecutive input weights (along dim 1) has at most 2 non-zeros."""
    if weight.dim() != 2 or weight.shape[1] % 4 != 0 or weight.numel() == 0:
        return False
    groups = weight.detach().reshape(weight.shape[0], -1, 4)
    return bool((groups != 0).sum(-1, dtype=torch.int8).le(2).all())


def _sparse_class(backend: str) -> type:
    from torch.sparse import SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    return SparseSemiStructuredTensorCUSPARSELT if backend == "cusparselt" else SparseSemiStructuredTensorCUTLASS


def _multiples(backend: str, dtype: torch.dtype) -> tuple[int, int]:
    """The kernels' (rows, cols) block for a weight, read from torch (fallback: the 2.15 values)."""
    constraints = getattr(_sparse_class(backend), "_DTYPE_SHAPE_CONSTRAINTS", {}).get(dtype)
    if constraints is None:
        return _FALLBACK_MULTIPLES[backend]
    return constraints.sparse_min_rows, constraints.sparse_min_cols


def _is_converted(weight: Tensor) -> bool:
    from torch.sparse import SparseSemiStructuredTensor

    return isinstance(weight, SparseSemiStructuredTensor)


def _linears(model: nn.Module, names: Iterable[str] | None) -> dict[str, nn.Linear]:
    """The candidate linears by qualified name: the named ones (checked to exist) or every nn.Linear."""
    modules = dict(model.named_modules())
    if names is None:
        return {name: m for name, m in modules.items() if isinstance(m, nn.Linear)}
    chosen: dict[str, nn.Linear] = {}
    for name in names:
        module = modules.get(name)
        if module is None:
            raise ValueError(f"to_semi_structured: no module named {name!r} in the model; valid: qualified "
                             "names of nn.Linear modules, as model.named_modules() gives them")
        if not isinstance(module, nn.Linear):
            raise ValueError(f"to_semi_structured: {name!r} is a {type(module).__name__}, not an nn.Linear; "
                             "only nn.Linear weights can be converted")
        chosen[name] = module
    return chosen


def choose_backend() -> str:
    """cuSPARSELt when torch was built with it (any capability >= 8.0), else CUTLASS (8.x only)."""
    return "cusparselt" if torch.backends.cusparselt.is_available() else "cutlass"


def check_device(linears: dict[str, nn.Linear], backend: str) -> None:
    """One-line error unless every candidate weight is on a CUDA GPU the backend's kernels run on."""
    for name, linear in linears.items():
        device = linear.weight.device
        if device.type != "cuda":
            raise RuntimeError(f"to_semi_structured: {name!r} is on {device}; semi-structured sparse kernels "
                               f"need CUDA tensors on a GPU with compute capability >= "
                               f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}: move the model to the GPU first")
    for device in sorted({str(m.weight.device) for m in linears.values()}):
        capability = torch.cuda.get_device_capability(device)
        if capability < MIN_CAPABILITY:
            raise RuntimeError(f"to_semi_structured: {device} has compute capability {capability[0]}.{capability[1]}; "
                               f"semi-structured sparse kernels need >= {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} "
                               "(Ampere or newer)")
        if backend == "cutlass" and capability[0] != 8:
            raise RuntimeError(f"to_semi_structured: {device} has compute capability {capability[0]}.{capability[1]}"
                               " and this torch has no cuSPARSELt; the CUTLASS fallback runs on 8.x only")


def plan_conversion(
    model: nn.Module, names: Iterable[str] | None = None, backend: str = "cusparselt"
) -> tuple[dict[str, nn.Linear], dict[str, str]]:
    """(linears to convert, {skipped name: reason}), device aside; a named linear that cannot be
    converted (not 2:4, dtype, shape) is a one-line ValueError naming it, an unnamed one is skipped."""
    named = names is not None
    convert: dict[str, nn.Linear] = {}
    skipped: dict[str, str] = {}
    for name, linear in _linears(model, names).items():
        weight = linear.weight
        if _is_converted(weight):
            skipped[name] = "already semi-structured"
            continue
        if not is_two_four(weight):
            if named:
                raise ValueError(f"to_semi_structured: {name!r} is not 2:4 along its input dimension (some group "
                                 "of 4 consecutive input weights has more than 2 non-zeros); valid: weights "
                                 "pruned with pattern '2:4'")
            skipped[name] = "not 2:4"
            continue
        if weight.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"to_semi_structured: {name!r} has dtype {weight.dtype}; the sparse kernels take "
                             "torch.bfloat16 or torch.float16: cast the model first")
        rows, cols = weight.shape
        min_rows, min_cols = _multiples(backend, weight.dtype)
        if rows < min_rows or rows % min_rows or cols < min_cols or cols % min_cols:
            reason = (f"shape {rows}x{cols} (out x in) is refused by {backend}: both must be multiples of "
                      f"(and at least) {min_rows}x{min_cols}")
            if named:
                raise ValueError(f"to_semi_structured: {name!r} has {reason}")
            skipped[name] = reason
            continue
        convert[name] = linear
    return convert, skipped


def to_semi_structured(
    model: nn.Module, names: Iterable[str] | None = None, backend: str | None = None
) -> SemiStructuredReport:
    """Replace the weight of each 2:4 linear (the ``names`` given, default every 2:4 nn.Linear) by
    torch's semi-structured sparse tensor, in place; checks everything before changing anything
    (the linears first, then the device of those it converts).

    ``backend``: "cusparselt" or "cutlass" (default: cuSPARSELt when torch has it). Errors are one
    line naming the problem: not CUDA, capability < 8.0, a dtype other than bf16/fp16, a named
    linear that is not 2:4 or has a shape the kernels refuse, nothing to convert.
    """
    backend = backend or choose_backend()
    if backend not in _FALLBACK_MULTIPLES:
        raise ValueError(f"to_semi_structured: unknown backend {backend!r}; valid: 'cusparselt', 'cutlass'")
    convert, skipped = plan_conversion(model, None if names is None else list(names), backend)
    if not convert:
        why = ", ".join(sorted(set(skipped.values()))) or "the model has no nn.Linear"
        raise ValueError(f"to_semi_structured: nothing to convert among {len(skipped)} linear(s) ({why}); "
                         "valid: nn.Linear weights pruned 2:4 along the input dimension")
    check_device(convert, backend)
    report = SemiStructuredReport(backend=backend, skipped=skipped)
    sparse_class = _sparse_class(backend)
    with torch.no_grad():
        for name, linear in convert.items():
            sparse = sparse_class.from_dense(linear.weight.detach().contiguous())
            linear.weight = nn.Parameter(sparse, requires_grad=False)
            report.converted.append(name)
    return report
