"""ECoFLaP allocation (zeroth-order): importance from loss differences under random weight perturbations.

Default, as ECoFLaP's own code and the TAMP code's port compute it ("olmezo-gradient_sum",
`sparsity_ratio_granularity block`): for each weight tensor alone and each of the first `num_samples`
calibration samples, perturb that tensor by +eps*z and -eps*z (z ~ N(0, 1)); (L+ - L-) / (2 eps) is
the gradient projected on z; the tensor's score is the sum of |.| over samples, in expectation
sqrt(2/pi) * num_samples * ||g_t||. A group's score is the sum of its tensors' scores. Groups are a
block's child modules (`...layers.N.self_attn`, `...layers.N.mlp`: 2 per Llama/Qwen block), the
allocator runs on them with sum aggregation and cap target + 0.1, and every linear of a group gets the
group's sparsity. The mechanics (block order, cached inputs, seeds, restoring) are in
tamp.sparsity.zeroth_order.

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

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from tamp.pipeline.precision import scoring_modules, upcast
from tamp.sparsity.groups import (
    Group,
    GroupAllocationConfig,
    allocate_groups,
    block_groups,
    layer_groups,
    module_groups,
)
from tamp.sparsity.registry import register_allocation
from tamp.sparsity.zeroth_order import Unit, loss_labels, sample_key, zeroth_order_scores
from tamp.sparsity.zeroth_order import unit_seed as _seed

if TYPE_CHECKING:
    from tamp.pipeline.engine import LayerwiseEngine

__all__ = ["EcoFlapAllocation", "EcoflapConfig", "_seed", "loss_labels", "sample_key"]

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

    def groups(self, engine: LayerwiseEngine) -> list[Group]:
        """The units allocated together: a block's child modules, blocks, or single linears."""
        return _GROUPS[self.cfg.granularity](engine)

    def _units(self, engine: LayerwiseEngine, groups: list[Group]) -> tuple[list[Unit], list[int]]:
        """(perturbation units, the group index of each). Seeds: a tensor's index among all targeted
        linears (per_tensor), or the group's index (joint, as before)."""
        block_of = {name: b for b, linears in enumerate(engine.linears) for name in linears}
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

    @torch.no_grad()
    def importance(self, engine: LayerwiseEngine, groups: list[Group] | None = None) -> dict[str, float]:
        """{group name: sum of its units' sums over samples of |projected gradient|}, over processes."""
        groups = self.groups(engine) if groups is None else groups
        units, owner = self._units(engine, groups)
        dtype = torch.float32 if self.cfg.precision == "float32" else None
        with upcast(scoring_modules(engine), dtype) if dtype else nullcontext(False) as changed:
            totals = zeroth_order_scores(
                engine, units, self.seed, self.cfg.eps, self.cfg.num_samples, dtype if changed else None
            )
        scores = {g.name: 0.0 for g in groups}
        for g_index, total in zip(owner, totals, strict=True):
            scores[groups[g_index].name] += total
        if self.cfg.estimator == "per_tensor":
            names = {id(lin): name for g in groups for name, lin in g.linears.items()}
            self.tensor_scores = {names[id(u.linears[0])]: t for u, t in zip(units, totals, strict=True)}
        return scores

    def plan(self, engine: LayerwiseEngine, target: float) -> dict[str, float]:
        groups = self.groups(engine)
        self.scores = self.importance(engine, groups)
        plan, self.group_sparsity = allocate_groups(groups, self.scores, target, self.cfg)
        return plan

