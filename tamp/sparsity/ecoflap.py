"""ECoFLaP allocation (zeroth-order): importance from loss differences under random weight perturbations.

Default, as ECoFLaP's own code and the TAMP code's port compute it ("olmezo-gradient_sum",
`sparsity_ratio_granularity block`): for each weight tensor alone and each of the first `num_samples`
calibration samples, perturb that tensor by +eps*z and -eps*z (z ~ N(0, 1)); (L+ - L-) / (2 eps) is
the gradient projected on z; the tensor's score is the sum of |.| over samples, in expectation
sqrt(2/pi) * num_samples * ||g_t||. A group's score is the sum of its tensors' scores. Groups are a
block's child modules (`...layers.N.self_attn`, `...layers.N.mlp`: 2 per Llama/Qwen block), the
allocator runs on them with sum aggregation and cap target + 0.1, and every linear of a group gets the
group's sparsity. The forwards (block order, cached inputs, restoring the weights, checkpointing) are the
pipeline's perturbation pass (tamp.pipeline.perturbation), reached through the model's
`perturbation_pass`; this module chooses the units, the directions z and the score |(L+ - L-) / (2 eps)|.

z is seeded per (seed, unit index, sample content): the same sample gets the same z on any number of
processes. `num_samples` keeps the first N samples of the whole calibration set (by their global
position, `model.indices`): each process scores those of them it holds, so the subset is the same
on any number of processes.

Options (this allocation's own settings, `method.allocation.*`):
- estimator: per_tensor (default, the original) | joint: perturb every tensor of a group at once and
  score |sum_t g_t . z_t|, in expectation the group's gradient norm ||g|| <= sum_t ||g_t||; it ranks
  groups differently (seven tensors of gradient norm 1 score 7 per tensor, about 2.6 jointly) and
  makes one loss difference per group instead of one per tensor (7x fewer on Llama blocks).
- granularity: module (default) | block (one group per decoder block) | layer (one group per linear;
  then both estimators are the same computation).
- precision: float32 (default) | model. float32 upcasts the decoder blocks, final norm, LM head and
  cached inputs for the scoring pass and restores them bit-exactly afterwards (tamp.pipeline.precision):
  with eps = 1e-3 a bfloat16 loss difference is mostly rounding (see benchmarks/bench_ecoflap_precision.py).
  It costs the float32 copy of the blocks (twice their bf16 size) and float32 matmuls. `model` scores in
  the model's dtype. A float32 model is scored the same way under both.

What the official code does differently, checked in ylsung/ECoFLaP
(LAVIS/lavis/compression/pruners/layer_single_base_pruner.py, `compute_importance_scores_mezo_layer_one`)
and G-JWLee/TAMP (llava/pruners/layer_single_base_pruner.py, same function; llava/pruners/wanda_pruner.py
`get_sparsity`; llava/evaluate.py; scripts/prune/ecoflap.sh):
- z: seeded by `np.random.randint(1e9)` drawn per (tensor, sample) from the run's global NumPy stream,
  then `torch.manual_seed`; here a seed derived from (run seed, tensor index, sample content), so the
  scores do not depend on the number of processes or on what consumed random numbers before.
- z is drawn in the weights' dtype (fp16 there) and the weights are restored by adding back (+1, -2, +1
  times eps z, which does not round-trip in fp16); here z is float32 and the weights are restored by copy.
- the loss is the whole model's forward in fp16 (bf16 autocast for the pruning forwards); here the tail
  from the perturbed block, in float32 by default (the paper's models load in bf16 here).
- samples: the first `num_data_first_stage` batches of an unshuffled batch-size-1 loader; TAMP's port
  leaves it at its default 128 (all 128 calibration samples), ECoFLaP's BLIP-2 scripts default to 32.
  num_noise = 1 (one z per tensor and sample), eps = noise_eps = 1e-3 in both.
- groups: the weight name cut after its fourth component: on T5 (`t5_model.encoder.block.N`) that is a
  whole block, on LLaVA (`model.layers.N.self_attn`) a block's attention or MLP; `module` here is the
  latter on every family (cut one component below the block).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tamp.core.registries import lazy_module, no_grad
from tamp.data.sample import IGNORE_INDEX, CalibSample
from tamp.sparsity.allocate import (
    Group,
    GroupAllocationConfig,
    allocate_groups,
    block_groups,
    layer_groups,
    module_groups,
)
from tamp.sparsity.registry import ScoringModel, register_allocation
from tamp.sparsity.shared import ScoreState

if TYPE_CHECKING:
    import torch
    from torch import nn
else:  # imported when first used: the registry walk imports this module (tamp.core.registries)
    torch, nn = lazy_module("torch"), lazy_module("torch.nn")

__all__ = ["EcoFlapAllocation", "EcoflapConfig", "_seed", "loss_labels", "sample_key", "zeroth_order_scores"]

log = logging.getLogger(__name__)

GRANULARITIES = ("module", "block", "layer")
ESTIMATORS = ("per_tensor", "joint")
PRECISIONS = ("float32", "model")
_GROUPS = {"module": module_groups, "block": block_groups, "layer": layer_groups}


def _one_of(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"method.allocation.{key}='{value}'; valid: {', '.join(valid)}")


@dataclass
class EcoflapConfig(GroupAllocationConfig):
    """ECoFLaP's zeroth-order estimate: how it perturbs, what it groups, in which precision it scores."""

    name: str = "ecoflap"
    eps: float = 1e-3  # perturbation size
    num_samples: int | None = None  # calibration samples used for the estimate (None: all)
    estimator: str = "per_tensor"  # per_tensor (ECoFLaP's own) | joint (one z for a whole group)
    granularity: str = "module"  # module (attention / MLP of a block) | block | layer (one linear)
    precision: str = "float32"  # float32 (score in float32) | model (score in the model's dtype)

    def check(self) -> None:
        _one_of("granularity", self.granularity, GRANULARITIES)
        _one_of("estimator", self.estimator, ESTIMATORS)
        _one_of("precision", self.precision, PRECISIONS)
        super().check()
        if not self.eps > 0:
            raise ValueError(f"method.allocation.eps={self.eps} must be > 0")
        if self.num_samples is not None and self.num_samples < 1:
            raise ValueError(f"method.allocation.num_samples={self.num_samples} must be >= 1 or null")


@register_allocation("ecoflap", config=EcoflapConfig)
class EcoFlapAllocation:
    """Zeroth-order importance of groups of linears -> the ECoFLaP allocator."""

    def __init__(self, cfg: EcoflapConfig | None = None) -> None:
        self.cfg = cfg or EcoflapConfig()
        self.seed = torch.initial_seed()  # tamp.prune seeds torch with the run's seed just before
        self.scores: dict[str, float] = {}
        self.tensor_scores: dict[str, float] = {}  # per linear, with the per_tensor estimator
        self.group_sparsity: dict[str, float] = {}

    def groups(self, model: ScoringModel) -> list[Group]:
        """The units allocated together: a block's child modules, blocks, or single linears."""
        return _GROUPS[self.cfg.granularity](model)

    def _units(self, model: ScoringModel, groups: list[Group]) -> tuple[list[Unit], list[int]]:
        """(perturbation units, the group index of each). Seeds: a tensor's index among all targeted
        linears (per_tensor), or the group's index (joint, as before)."""
        block_of = {name: b for b, linears in enumerate(model.linears) for name in linears}
        tensor_index = {name: i for i, name in enumerate(block_of)}
        units, owner = [], []
        for g_index, group in enumerate(groups):
            names = list(group.linears)
            if self.cfg.estimator == "joint":
                chunks = [(g_index, names)]
            else:
                chunks = [(tensor_index[name], [name]) for name in names]
            for seed_index, chunk in chunks:
                blocks = {block_of[name] for name in chunk}
                if len(blocks) != 1:
                    raise ValueError(f"ecoflap: group {group.name} spans decoder blocks {sorted(blocks)}")
                units.append(Unit(blocks.pop(), seed_index, [group.linears[name] for name in chunk]))
                owner.append(g_index)
        return units, owner

    @no_grad
    def importance(self, model: ScoringModel, groups: list[Group] | None = None) -> dict[str, float]:
        """{group name: sum of its units' sums over samples of |projected gradient|}, over processes."""
        groups = self.groups(model) if groups is None else groups
        units, owner = self._units(model, groups)
        dtype = torch.float32 if self.cfg.precision == "float32" else None
        totals = zeroth_order_scores(model, units, self.seed, self.cfg.eps, self.cfg.num_samples, dtype)
        scores = {g.name: 0.0 for g in groups}
        for g_index, total in zip(owner, totals, strict=True):
            scores[groups[g_index].name] += total
        if self.cfg.estimator == "per_tensor":
            names = {id(lin): name for g in groups for name, lin in g.linears.items()}
            self.tensor_scores = {names[id(u.linears[0])]: t for u, t in zip(units, totals, strict=True)}
        return scores

    def score(self, model: ScoringModel) -> ScoreState:
        """The groups' (and, per_tensor, the linears') zeroth-order scores: no target involved, shared across a sweep."""
        self.tensor_scores = {}
        group = self.importance(model, self.groups(model))
        return {"group": group, "tensor": dict(self.tensor_scores)}

    def allocate(self, model: ScoringModel, state: ScoreState, target: float) -> dict[str, float]:
        groups = self.groups(model)
        self.scores = dict(state["group"])
        self.tensor_scores = dict(state.get("tensor", {}))
        plan, self.group_sparsity = allocate_groups(groups, self.scores, target, self.cfg)
        return plan

    def plan(self, model: ScoringModel, target: float) -> dict[str, float]:
        return self.allocate(model, self.score(model), target)


# --- the zeroth-order estimate: units, directions z, |(L+ - L-) / (2 eps)| ---

@dataclass
class Unit:
    """Weight tensors perturbed together, the block that owns them, and the index that seeds their z."""

    block: int
    seed_index: int
    linears: list[nn.Linear]


def sample_key(sample: CalibSample) -> int:
    """A process-independent identity of a sample: its record id or a checksum of its tokens."""
    if "id" in sample.meta:
        return zlib.crc32(str(sample.meta["id"]).encode())
    tokens = sample.inputs.get("input_ids", sample.modality_ids)
    return zlib.crc32(tokens.detach().cpu().contiguous().numpy().tobytes())


def loss_labels(samples: list[CalibSample]) -> list[torch.Tensor]:
    """Answer labels; a sample without an answer span counts every next token of its input_ids."""
    out, missing = [], 0
    for sample in samples:
        labels = sample.labels
        if labels is None or not bool((labels != IGNORE_INDEX).any()):
            if "input_ids" not in sample.inputs:
                raise ValueError("ecoflap: a calibration sample has neither answer labels nor input_ids")
            labels, missing = sample.inputs["input_ids"], missing + 1
        out.append(labels)
    if missing:
        log.warning(
            "ecoflap: %d sample(s) without answer labels; their loss counts every next token", missing
        )
    return out


def _seed(base: int, unit: int, key: int) -> int:
    return (base * 1_000_003 + unit * 7_919 + key) % (2**63 - 1)


def scored_positions(indices: Sequence[int], num_samples: int | None) -> list[int]:
    """Local positions of the samples scored: those among the first `num_samples` of the whole set."""
    return [i for i, g in enumerate(indices) if num_samples is None or g < num_samples]


def _noise(device: torch.device, weights: list[nn.Parameter], seed: int) -> list[torch.Tensor]:
    """z for one (unit, sample): drawn in float32 on the device, then rounded to the weights' dtype,
    so a float32 and a bfloat16 copy of a model see the same directions."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return [
        torch.randn(w.shape, generator=gen, device=device, dtype=torch.float32).to(w.device, w.dtype)
        for w in weights
    ]


@no_grad
def zeroth_order_scores(
    model: ScoringModel,
    units: list[Unit],
    seed: int,
    eps: float,
    num_samples: int | None,
    dtype: torch.dtype | None = None,
) -> list[float]:
    """Per unit (ordered by block): sum over samples of |projected gradient|, summed over processes.

    `dtype`: score with the model's blocks, final norm, LM head and cached inputs in this dtype.
    """
    positions = scored_positions(model.indices, num_samples)
    samples = [model.samples[i] for i in positions]
    keys = [sample_key(s) for s in samples]

    def direction(unit: int, k: int) -> list[torch.Tensor]:
        weights = [lin.weight for lin in units[unit].linears]
        return _noise(model.device, weights, _seed(seed, units[unit].seed_index, keys[k]))

    def score(plus: float, minus: float) -> float:
        return abs((plus - minus) / (2 * eps))

    return model.perturbation_pass(
        units, positions, loss_labels(samples), eps, direction, score, dtype, desc="ecoflap scoring"
    )
