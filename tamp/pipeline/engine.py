"""The method-agnostic layer-wise engine: capture, dense scoring pass, block-by-block pruning.

The engine knows blocks, linears, samples and devices; it never knows which method runs. A method
(`tamp.core.protocols.LayerwiseMethod`) plans per-linear sparsity, observes linear inputs/outputs per sample, and
turns its statistics into masks at the end of each block. An allocation sees the engine only as a
`tamp.core.protocols.ScoringModel`: the linears, `block_name`, and the dense passes (`scoring_pass`,
`perturbation_pass`) with `reduce_` and `on_device`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from tamp.core.progress import Progress, progress_bar, resume
from tamp.core.protocols import BlockObserver, LayerwiseMethod, PerturbedUnit
from tamp.data.sample import CalibSample, global_index
from tamp.models.base import DEFAULT_TARGETS, FamilyAdapter
from tamp.pipeline.capture import capture_block_inputs, run_block, shared_block_inputs
from tamp.pipeline.checkpoint import PruneCheckpoint
from tamp.pipeline.context import LinearObserver, SampleContext
from tamp.pipeline.hooks import LinearTap
from tamp.pipeline.perturbation import Direction, Score, perturbation_pass
from tamp.pipeline.shared_inputs import BLOCK_INPUTS, InputStore
from tamp.pipeline.store import ActivationStore
from tamp.pipeline.transfer import Transfers

Reducer = Callable[[list[torch.Tensor]], None]


class NonFiniteError(RuntimeError):
    """NaN or inf in activations or statistics: the masks computed from them would be meaningless."""


@dataclass
class EngineTimings:
    capture_s: float = 0.0
    plan_s: float = 0.0
    prune_s: float = 0.0
    blocks_s: list[float] = field(default_factory=list)


class LayerwiseEngine:
    """Runs calibration samples through the decoder blocks one block at a time."""

    def __init__(
        self,
        model: nn.Module,
        adapter: FamilyAdapter,
        samples: Sequence[CalibSample],
        device: str | torch.device = "cpu",
        offload: bool = False,
        targets: Sequence[str] = DEFAULT_TARGETS,
        ignore: Sequence[str] = (),
        progress: bool = True,
        reducer: Reducer | None = None,
    ) -> None:
        if not samples:
            raise ValueError("no calibration samples: the pipeline needs at least one")
        self.model = model
        self.adapter = adapter
        self.samples = list(samples)
        #: each local sample's position in the whole calibration set (seeds and subsets use these)
        self.indices = [global_index(s, i) for i, s in enumerate(self.samples)]
        self.device = torch.device(device)
        self.offload = offload
        self.progress = progress
        self.reducer = reducer
        self.blocks = adapter.decoder_blocks()
        self.linears = adapter.target_linears(targets, ignore)
        if not any(self.linears):
            raise ValueError(f"targets={list(targets)} ignore={list(ignore)} select no linear in the decoder blocks")
        self.timings = EngineTimings()
        #: every host <-> device move of the engine goes through here, counted (tamp.pipeline.transfer)
        self.transfers = Transfers(self.device)
        #: the checkpoint of the run being pruned, if any (scoring passes save their progress there)
        self.checkpoint: PruneCheckpoint | None = None
        self._captured: ActivationStore | None = None
        self._modality_ids: list[torch.Tensor] = []
        #: while planning: the method whose block-0 statistics the first dense scoring pass may gather
        self._early_method: LayerwiseMethod | None = None
        #: that pass did gather them (the pruning pass then skips block 0's statistics forward)
        self._early_ready = False
        #: where block-0 inputs are shared with other runs, and their key (tamp.prune's input_store)
        self.input_store: InputStore | None = None
        self.input_key: Callable[[], dict[str, str]] | None = None

    # ------------------------------------------------------------------ placement
    def _place_model(self) -> None:
        """Put everything on the device, except the decoder blocks when offloading."""
        if not self.offload:
            self.transfers.module_to_device(self.model)
            return
        self.blocks.to("cpu")
        _to_device_except(self.model, self.blocks, self.transfers)

    @contextmanager
    def on_device(self, block: nn.Module, writes: bool = False) -> Iterator[nn.Module]:
        """`block` on the compute device inside the `with` (with offload: a visit from host memory).

        Visits nest (the pruning pass holds a block for its statistics, masks and next inputs at
        once); `writes=True` copies the weights back to the host afterwards (they were pruned), a
        read-only visit puts the untouched host tensors back instead.
        """
        if not self.offload:
            yield block
            return
        with self.transfers.visiting(block, writes) as resident:
            yield resident

    def block_name(self, index: int) -> str:
        """The module path of decoder block `index` (`model.layers.3`)."""
        return f"{self.adapter.blocks_path}.{index}"

    def modality_ids(self, position: int) -> torch.Tensor:
        """The modality ids of a local sample on the device (moved once, at capture)."""
        return self._modality_ids[position]

    # ------------------------------------------------------------------ passes
    def _bar(self, total: int, desc: str, unit: str = "block", every_s: float = 0.0) -> Progress:
        return progress_bar(total, desc, enabled=self.progress, unit=unit, every_s=every_s)

    @torch.no_grad()
    def captured(self) -> ActivationStore:
        """Block-0 inputs of every sample, computed once and reused by every pass."""
        if self._captured is None:
            start = time.perf_counter()
            self._place_model()
            store = ActivationStore(self.device, self.offload, self.transfers)

            def capture() -> ActivationStore:
                with self._bar(len(self.samples), "capture", unit="sample", every_s=30.0) as bar:
                    return capture_block_inputs(self.model, self.blocks[0], self.samples, store, bar)

            shared = self.input_store
            if shared is not None and self.input_key is not None and shared.shares(BLOCK_INPUTS):
                shared_block_inputs(shared, self.input_key(), self.samples, store, capture)
            else:
                capture()
            self._modality_ids = [self.transfers.to_device(s.modality_ids) for s in self.samples]
            self._captured = store
            self.timings.capture_s = time.perf_counter() - start
        return self._captured

    @torch.no_grad()
    def forward_block(
        self, index: int, store: ActivationStore, observer: LinearObserver | None = None, update: bool = True
    ) -> None:
        """Forward every sample through block `index`; optionally tap its linears; advance the store."""
        block = self.blocks[index]
        tap = LinearTap(self.linears[index], observer) if observer is not None else None
        finite = torch.ones((), dtype=torch.bool, device=self.device)  # checked once per block: no per-sample sync
        with self.on_device(block), (tap.attached() if tap is not None else nullcontext()):
            for i, sample in enumerate(self.samples):
                hidden, kwargs = store.get(i)
                if tap is not None:  # the hooks stay for the whole pass; only the sample they report changes
                    tap.ctx = SampleContext(
                        index=self.indices[i],
                        block_index=index,
                        block=block,
                        modality_ids=self.modality_ids(i),
                        labels=sample.labels,
                        block_input=hidden,
                        block_kwargs=kwargs,
                        adapter=self.adapter,
                    )
                out = run_block(block, hidden, kwargs)
                low, high = torch.aminmax(out)  # NaN reaches both, inf is one: isfinite().all() without a [T, C] temporary
                finite &= torch.isfinite(low) & torch.isfinite(high)
                if update:
                    store.replace_hidden(i, out)
            if tap is not None:
                tap.ctx = None
        if not bool(finite):
            raise NonFiniteError(
                f"non-finite activations (NaN/inf) leaving decoder block {index}; "
                "check the model dtype (float16 overflows; use bfloat16 or float32) and the inputs"
            )

    @torch.no_grad()
    def scoring_pass(self, observer: BlockObserver, desc: str = "scoring") -> None:
        """Dense pass over all blocks, every linear tapped (for allocations: DAS, OWL, ...).

        An observer that can save its statistics (`state()` / `load_state()`, summed over processes
        at each block's end) is checkpointed after every block when the run has a checkpoint: an
        interrupted pass replays the completed blocks' dense forwards and goes on from the next block.
        """
        store = self.captured().copy()
        saving = self.checkpoint is not None and hasattr(observer, "state")
        first, state = (self.checkpoint.load_scoring(desc) or (0, None)) if saving else (0, None)  # type: ignore[union-attr]
        if state is not None:
            observer.load_state(state)  # type: ignore[attr-defined]
        with self._bar(len(self.blocks), desc) as bar:
            for index in range(len(self.blocks)):
                if index < first:  # resumed: only the dense inputs of the next block are needed
                    self.forward_block(index, store)
                    bar.update(1)
                    continue
                with self.on_device(self.blocks[index]):
                    early = self._take_early(index)
                    if early is None:
                        self.forward_block(index, store, observer)
                    else:  # the same dense forward of block 0 on the captured inputs feeds both
                        early.begin_block(index, self.linears[index])
                        self.forward_block(index, store, _Both(observer, early))
                    observer.end_block(index, self.linears[index], self)
                if saving:
                    self.checkpoint.save_scoring(desc, index + 1, observer.state())  # type: ignore[union-attr,attr-defined]
                bar.update(1)

    def _take_early(self, index: int) -> LayerwiseMethod | None:
        """The planning method, once, when the scoring pass reaches block 0: its statistics there come from
        the very forward the scoring pass runs (dense block 0, captured inputs), so one pass serves both."""
        if index != 0 or self._early_method is None:
            return None
        method, self._early_method = self._early_method, None
        self._early_ready = True
        return method

    def perturbation_pass(
        self,
        units: Sequence[PerturbedUnit],
        positions: Sequence[int],
        labels: Sequence[torch.Tensor],
        eps: float,
        direction: Direction,
        score: Score,
        dtype: torch.dtype | None = None,
        desc: str = "perturbation scoring",
    ) -> list[float]:
        """Per unit, the sum over the samples at `positions` of `score(L(w + eps d), L(w - eps d))`
        (zeroth-order importance; tamp.pipeline.perturbation), checkpointed per block like `scoring_pass`."""
        return perturbation_pass(self, units, positions, labels, eps, direction, score, dtype, phase=desc)

    def reduce_(self, tensors: list[torch.Tensor]) -> None:
        """Sum statistics across processes in place (no-op on one process)."""
        if self.reducer is not None:
            self.reducer(tensors)

    @torch.no_grad()
    def prune(
        self, method: LayerwiseMethod, checkpoint: PruneCheckpoint | None = None
    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Plan, then prune block by block; return (planned sparsity, masks) per linear name.

        With a checkpoint, a run that was interrupted continues after its last completed block:
        the plan is read back (not recomputed), completed blocks get their pruned weights back and
        the inputs of the next block are recomputed through them.
        """
        store = self.captured()
        masks: dict[str, torch.Tensor] = {}
        self._early_ready = False  # set only by this call's own planning (never left from an earlier call)
        progress = checkpoint.load() if checkpoint is not None else None
        start = time.perf_counter()
        if progress is not None:
            plan = {k: float(v) for k, v in progress["plan"].items()}
            first = int(progress["completed_blocks"])
            if hasattr(method, "restore_plan_state"):
                method.restore_plan_state(checkpoint.plan_state)
        else:
            self.checkpoint = checkpoint  # scoring passes save their progress there
            if getattr(method, "stats_need_no_plan", False) and method.needs_block_forward and self.linears[0]:
                self._early_method = method
            try:
                plan = method.plan(self)
            finally:
                self.checkpoint, self._early_method = None, None
            first = 0
            if checkpoint is not None:
                checkpoint.start(plan, method.plan_state() if hasattr(method, "plan_state") else None)
        self.timings.plan_s = time.perf_counter() - start
        start = time.perf_counter()
        for index in range(first):  # resume: restore and replay the completed blocks
            with self.on_device(self.blocks[index], writes=True):
                masks.update(checkpoint.load_block(index, self.linears[index]))
                try:
                    self.forward_block(index, store)
                except NonFiniteError:  # the pruning run passed this block finite: its saved weights differ
                    raise NonFiniteError(
                        f"non-finite activations (NaN/inf) leaving decoder block {index}, restored from the "
                        f"checkpoint {checkpoint.block_path(index)}: the checkpoint is damaged, not the model; "
                        f"move {checkpoint.dir} away to prune from the start"
                    ) from None
        if progress is not None:
            PruneCheckpoint.restore_rng(progress)
        with self._bar(len(self.blocks), "pruning") as bar:
            resume(bar, first)  # the checkpointed blocks: `(resumed after N)`, outside the ETA's rate
            for index in range(first, len(self.blocks)):
                linears = self.linears[index]
                block_start = time.perf_counter()
                # one visit of the block per pruning step (offload): statistics accumulate on the device,
                # the masks are computed there and the next block's inputs come from the pruned block
                with self.on_device(self.blocks[index], writes=True):
                    gathered = index == 0 and self._early_ready  # by the dense scoring pass (_take_early)
                    if not gathered:
                        method.begin_block(index, linears)
                    if method.needs_block_forward and linears and not gathered:
                        self.forward_block(index, store, method, update=False)
                    block_masks = method.end_block(index, linears, plan, self)
                    if checkpoint is not None:
                        checkpoint.save_block(index, linears, block_masks, plan)
                    masks.update(block_masks)
                    if index + 1 < len(self.blocks):
                        self.forward_block(index, store)  # the next block sees the pruned outputs
                self.timings.blocks_s.append(time.perf_counter() - block_start)
                bar.update(1)
        self.timings.prune_s = time.perf_counter() - start
        self._early_ready = False
        return plan, masks


class _Both:
    """One tap feeding two observers (the scoring pass's and the pruning method's) from one forward."""

    def __init__(self, first: LinearObserver, second: LinearObserver) -> None:
        self.first, self.second = first, second

    def observe(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: SampleContext) -> None:
        self.first.observe(name, x, z, ctx)
        self.second.observe(name, x, z, ctx)


def _to_device_except(root: nn.Module, skip: nn.Module, transfers: Transfers) -> None:
    """Move `root` to the device but leave the `skip` subtree where it is."""
    for child in root.children():
        if child is skip:
            continue
        if any(m is skip for m in child.modules()):
            _to_device_except(child, skip, transfers)
        else:
            transfers.module_to_device(child)
    for _name, param in list(root.named_parameters(recurse=False)):
        param.data = transfers.to_device(param.data, "model")
    for name, buf in list(root.named_buffers(recurse=False)):
        root._buffers[name] = transfers.to_device(buf, "model")


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if present, else cpu; an unavailable device is a one-line error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device='{device}' requested but no CUDA device is present; use 'cpu' or 'auto'")
    return dev
