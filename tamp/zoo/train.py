"""Train a zoo model with Lightning Fabric on CPU: AdamW, warmup + cosine, loss on answer tokens only.

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
    """Weight decay on matrices only; the vision tower and projector at `vision_lr_mult` x lr.

    The tower learns shape features through the language loss only slowly, and faster at a
    lower rate than the decoder's (a 3 x 64 tower at 5e-4 stayed near chance on shape questions).
    """
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = defaultdict(list)
    for name, p in model.named_parameters():
        vision = "vision_tower" in name or "multi_modal_projector" in name
        groups[(vision, p.dim() >= 2 and "embed" not in name)].append(p)
    return [{"params": params, "weight_decay": r.weight_decay if decay else 0.0,
             "lr_mult": r.vision_lr_mult if vision else 1.0} for (vision, decay), params in sorted(groups.items())]


def total_steps(n: int, r: TrainRecipe) -> int:
    return max(1, math.ceil(r.epochs * n / r.batch_size))


def train(model: torch.nn.Module, data: EncodedSplit, r: TrainRecipe, pad_id: int,
          progress: bool | None = None, log_every: int = 0) -> dict[str, Any]:
    """Train in place; returns the loss log. progress None: a bar only on a terminal."""
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    order = torch.Generator().manual_seed(r.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(r.seed)
        optimizer = torch.optim.AdamW(param_groups(model, r), lr=r.lr, betas=(0.9, 0.98))
        model, optimizer = fabric.setup(model, optimizer)
        model.train()
        steps = total_steps(len(data), r)
        quiet = not (progress if progress is not None else sys.stderr.isatty())
        bar = tqdm(total=steps, desc="zoo training", unit="step", disable=quiet)
        perm, cursor, losses, start = torch.randperm(len(data), generator=order), 0, [], time.perf_counter()
        for step in range(steps):
            if cursor + r.batch_size > len(perm):
                perm, cursor = torch.randperm(len(data), generator=order), 0
            rows = perm[cursor : cursor + r.batch_size]
            cursor += r.batch_size
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
