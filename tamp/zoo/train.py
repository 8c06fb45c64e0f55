"""Train a zoo model with Lightning Fabric on CPU: AdamW, warmup + cosine, loss on answer tokens only.

Batches come from `CurriculumSampler`: the recipe's curriculum stages first (a few core templates
only), then the whole split, by task weight when the recipe gives weights.

Deterministic for a given recipe and thread count: the initial weights and the batch order come
from the recipe's seed (the caller's RNG state is left alone). `answer_accuracy` is the quick
check the build prints per task: the greedy first answer token, teacher-forced, in batches (every
zoo answer is one token, so it is the decision lmms-eval's exact match scores, without decoding).
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from typing import Any

import torch
from tqdm import tqdm

from tamp.zoo.encode import IGNORE, EncodedSplit
from tamp.zoo.recipe import TrainRecipe


def lr_factor(step: int, total: int, r: TrainRecipe) -> float:
    """Linear warmup, then cosine decay to `min_lr_ratio`."""
    if step < r.warmup_steps:
        return (step + 1) / r.warmup_steps
    span = max(1, total - r.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - r.warmup_steps) / span)))
    return r.min_lr_ratio + (1 - r.min_lr_ratio) * cosine


def param_groups(model: torch.nn.Module, r: TrainRecipe) -> list[dict[str, Any]]:
    """Weight decay on matrices only; the projector (and the tower, unless frozen) at `vision_lr_mult` x lr.

    Frozen parameters are left out. An unfrozen tower lost its pretrained colour features at
    decoder learning rates of 1e-3 and above (colour questions fell to chance), hence the multiplier.
    """
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = defaultdict(list)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        vision = "vision_tower" in name or "multi_modal_projector" in name
        groups[(vision, p.dim() >= 2 and "embed" not in name)].append(p)
    return [{"params": params, "weight_decay": r.weight_decay if decay else 0.0,
             "lr_mult": r.vision_lr_mult if vision else 1.0} for (vision, decay), params in sorted(groups.items())]


class CurriculumSampler:
    """Batches of row indices: epochs of a seeded permutation over the rows the current stage allows."""

    def __init__(self, data: EncodedSplit, r: TrainRecipe, generator: torch.Generator) -> None:
        self.generator, self.batch_size = generator, r.batch_size
        self.stages: list[tuple[int, torch.Tensor]] = []
        end = 0
        for steps, names in r.curriculum:
            wanted = set(names)
            rows = [i for i, (task, tpl) in enumerate(zip(data.tasks, data.templates or data.tasks, strict=True))
                    if task in wanted or tpl in wanted]
            if not rows:
                raise ValueError(f"zoo curriculum stage {names}: no training item has these task or template names")
            end += steps
            self.stages.append((end, torch.tensor(rows)))
        self.everything = torch.arange(len(data))
        weight = dict(r.task_weights)
        self.weights = None
        if weight:
            self.weights = torch.tensor([weight.get(tpl, weight.get(task, 1.0)) for task, tpl in
                                         zip(data.tasks, data.templates or data.tasks, strict=True)], dtype=torch.double)
        self.pool: torch.Tensor | None = None
        self.perm, self.cursor = torch.empty(0, dtype=torch.long), 0

    def rows(self, step: int) -> torch.Tensor:
        pool = next((rows for end, rows in self.stages if step < end), self.everything)
        if pool is self.everything and self.weights is not None:
            return torch.multinomial(self.weights, self.batch_size, replacement=True, generator=self.generator)
        if pool is not self.pool or self.cursor + self.batch_size > len(self.perm):
            self.pool, self.cursor = pool, 0
            self.perm = pool[torch.randperm(len(pool), generator=self.generator)]
        out = self.perm[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return out


def total_steps(n: int, r: TrainRecipe) -> int:
    return max(1, math.ceil(r.epochs * n / r.batch_size))


def train(model: torch.nn.Module, data: EncodedSplit, r: TrainRecipe, pad_id: int,
          progress: bool | None = None, log_every: int = 0) -> dict[str, Any]:
    """Train in place; returns the loss log. progress None: a bar only on a terminal."""
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    if r.freeze_vision:
        model.model.vision_tower.requires_grad_(False)
    order = torch.Generator().manual_seed(r.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(r.seed)
        optimizer = torch.optim.AdamW(param_groups(model, r), lr=r.lr, betas=(0.9, 0.98))
        model, optimizer = fabric.setup(model, optimizer)
        model.train()
        steps = total_steps(len(data), r)
        quiet = not (progress if progress is not None else sys.stderr.isatty())
        bar = tqdm(total=steps, desc="zoo training", unit="step", disable=quiet)
        sampler, losses, start = CurriculumSampler(data, r, order), [], time.perf_counter()
        for step in range(steps):
            rows = sampler.rows(step)
            for group in optimizer.param_groups:
                group["lr"] = r.lr * group["lr_mult"] * lr_factor(step, steps, r)
            loss = model(**data.batch(rows, pad_id)).loss
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            if r.grad_clip:
                fabric.clip_gradients(model, optimizer, max_norm=r.grad_clip)
            optimizer.step()
            losses.append(loss.item())
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
            if log_every and (step + 1) % log_every == 0 and quiet:
                recent = losses[-log_every:]
                print(f"zoo training: step {step + 1}/{steps}, loss {sum(recent) / len(recent):.4f}", flush=True)
        bar.close()
    model.eval()
    window = max(1, steps // 20)
    curve = [sum(losses[i : i + window]) / len(losses[i : i + window]) for i in range(0, steps, window)]
    return {"steps": steps, "seconds": time.perf_counter() - start, "final_loss": curve[-1], "loss_curve": curve,
            "samples_per_s": steps * r.batch_size / max(1e-9, time.perf_counter() - start)}


@torch.inference_mode()
def answer_accuracy(model: torch.nn.Module, data: EncodedSplit, pad_id: int, batch_size: int = 256) -> dict[str, float]:
    """Per task: is the argmax at the first answer position the answer token (teacher-forced prompt)?"""
    model.eval()
    hits: dict[str, list[bool]] = defaultdict(list)
    for lo in range(0, len(data), batch_size):
        rows = torch.arange(lo, min(lo + batch_size, len(data)))
        batch = data.batch(rows, pad_id)
        labels = batch.pop("labels")
        logits = model(**batch).logits
        first = (labels != IGNORE).int().argmax(dim=1)  # first answer position
        picked = logits[torch.arange(len(rows)), first - 1].argmax(-1)
        for i, row in enumerate(rows.tolist()):
            hits[data.tasks[row]].append(bool(picked[i] == labels[i, first[i]]))
    return {task: sum(v) / len(v) for task, v in sorted(hits.items())}
