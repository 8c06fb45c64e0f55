"""Benchmark: inference speed of a 2:4 model on the GPU's semi-structured sparse kernels vs dense-with-zeros.

A 2:4 mask saves time only when the matmul skips the zeros. This builds a random Llama decoder of
LLaVA-NeXT-8B's language-model shape (hidden 4096, 32 blocks, 32 / 8 heads, SwiGLU 14336, vocab
32064) in bf16 on the device, prunes every decoder linear to 2:4 by magnitude with tamp's own mask
(`make_mask(|W|, 0.5, "2:4")`), and times, at batch 1 and 16:

- prefill: one forward of 2900 tokens without a KV cache, logits of the last position only
  (`logits_to_keep=1`);
- decode: per-token latency of greedy single-token forwards on the KV cache of that prefill;
- linears (prefill) / linears (decode): block 0's seven linears alone on random inputs of the
  same token counts, the kernels without the rest of the model (attention, norms, Python).

first with the pruned weights stored densely (the reference), then after
`tamp.models.semi_structured.to_semi_structured` swapped them for torch's semi-structured sparse
tensors (cuSPARSELt on an H100). The 2:4 model's prefill logits must be within bf16 tolerance of the
reference: max |diff| / max |reference logit| <= TOLERANCE, over the batch's last-position logits
(argmax agreement is reported too). GPU times are CUDA-event medians after a warm-up; everything runs
eagerly under torch.inference_mode (no torch.compile, no CUDA graphs), as HF generate() would.

    python benchmarks/bench_sparse24.py --device cuda               # the full shape, ~1 min on an H100
    python benchmarks/bench_sparse24.py --device cuda --blocks 4    # quicker
    python benchmarks/bench_sparse24.py --device cpu --tiny         # end to end; the 2:4 rows say why skipped
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SHAPES = {
    "full": {"hidden": 4096, "blocks": 32, "heads": 32, "kv_heads": 8, "intermediate": 14336, "vocab": 32064},
    "tiny": {"hidden": 256, "blocks": 2, "heads": 4, "kv_heads": 2, "intermediate": 512, "vocab": 1024},
}
BATCHES = (1, 16)
#: bf16 tolerance of the 2:4 model's logits: max |diff| relative to the reference's max |logit|
TOLERANCE = 5e-2
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
PHASES = ("prefill", "decode", "linears (prefill)", "linears (decode)")


# ---------------------------------------------------------------------------------------------- model
def build(device: str, shape: dict[str, int], tokens: int) -> torch.nn.Module:
    """A random Llama decoder, created directly in bf16 on ``device`` (bench_pipeline's model builder)."""
    from bench_pipeline import random_llama

    return random_llama(shape, torch.bfloat16, device, tokens + 64, attn_implementation="sdpa")


def decoder_linears(model: torch.nn.Module) -> list[str]:
    """Qualified names of every decoder block's seven linears (not the embedding, not lm_head)."""
    return [f"model.layers.{i}.{p}" for i in range(len(model.model.layers)) for p in PROJECTIONS]


def prune_24(model: torch.nn.Module, names: list[str]) -> None:
    """Prune each named linear to 2:4 by magnitude, in place, with tamp's mask (True = pruned)."""
    from tamp.pruning.masks import make_mask

    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in names:
            weight = modules[name].weight
            weight.masked_fill_(make_mask(weight.abs(), 0.5, "2:4"), 0)


# ---------------------------------------------------------------------------------------------- timing
def median_ms(fn: Callable[[], Any], device: str, warmup: int, repeats: int) -> tuple[float, Any]:
    """(median milliseconds of ``fn`` over ``repeats`` after ``warmup`` calls, its last result)."""
    cuda = device.startswith("cuda")
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            out = fn()
            times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times), out


def prefill(model: torch.nn.Module, ids: torch.Tensor, device: str, warmup: int, repeats: int):
    """(ms, last-position logits [batch, vocab] float32) of one forward without a KV cache."""
    def forward() -> torch.Tensor:
        return model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1]

    ms, logits = median_ms(forward, device, warmup, repeats)
    return ms, logits.float()


def decode(model: torch.nn.Module, ids: torch.Tensor, device: str, steps: int, warmup: int, repeats: int) -> float:
    """Milliseconds per generated token: greedy single-token forwards on the prompt's KV cache."""
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    state = {"cache": out.past_key_values, "token": out.logits[:, -1:].argmax(-1)}
    del out

    def step() -> None:
        nxt = model(input_ids=state["token"], past_key_values=state["cache"], use_cache=True, logits_to_keep=1)
        state["token"] = nxt.logits[:, -1:].argmax(-1)

    def chunk() -> None:
        for _ in range(steps):
            step()

    for _ in range(warmup):
        step()
    ms, _ = median_ms(chunk, device, 0, repeats)
    state.clear()  # the KV cache (6 GB at batch 16, full shape) goes before the next phase
    return ms / steps


def linears(model: torch.nn.Module, tokens: int, device: str, warmup: int, repeats: int) -> float:
    """Milliseconds of block 0's seven linears applied in turn to random [tokens, in_features] inputs."""
    block = model.model.layers[0]
    mods = [block.get_submodule(p) for p in PROJECTIONS]
    gen = torch.Generator(device=device).manual_seed(2)
    inputs = {m.in_features: torch.randn(tokens, m.in_features, generator=gen, device=device, dtype=torch.bfloat16)
              for m in mods}

    def run_all() -> None:
        for m in mods:
            m(inputs[m.in_features])

    ms, _ = median_ms(run_all, device, warmup, repeats)
    return ms


def compare(reference: torch.Tensor, logits: torch.Tensor) -> dict[str, Any]:
    """max |diff| / max |reference| of last-position logits, and how many rows keep the same argmax."""
    rel = float((logits - reference).abs().max() / reference.abs().max().clamp_min(1e-12))
    same = int((logits.argmax(-1) == reference.argmax(-1)).sum())
    return {"rel_max_diff": rel, "argmax_same": same, "rows": reference.shape[0], "ok": rel <= TOLERANCE}


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _measure(model: torch.nn.Module, ids: torch.Tensor, device: str, plan: dict[str, int]) -> dict[str, Any]:
    """Every phase's milliseconds at one batch (keyed by phase) and the prefill logits."""
    batch, tokens = ids.shape
    ms, logits = prefill(model, ids, device, plan["warmup"], plan["repeats"])
    found: dict[str, Any] = {"prefill": ms, "logits": logits}
    _free(device)
    found["decode"] = decode(model, ids, device, plan["steps"], plan["warmup_steps"], plan["repeats"])
    _free(device)
    found["linears (prefill)"] = linears(model, batch * tokens, device, plan["warmup"] + 1, plan["repeats"] + 2)
    found["linears (decode)"] = linears(model, batch, device, plan["warmup"] + 1, plan["repeats"] + 2)
    _free(device)
    return found


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


# ---------------------------------------------------------------------------------------------- run
def run(
    device: str = "cuda",
    blocks: int | None = None,
    tiny: bool = False,
    tokens: int | None = None,
    steps: int | None = None,
    repeats: int | None = None,
    backend: str | None = None,
) -> list[dict[str, Any]]:
    """Rows (batch, phase, tokens, dense_ms, sparse_ms, speedup, check, ok, note): dense-with-zeros,
    then the same model on semi-structured kernels; the 2:4 rows carry the reason when skipped."""
    from tamp.models.semi_structured import to_semi_structured

    shape = dict(SHAPES["tiny" if tiny else "full"])
    if blocks:
        shape["blocks"] = blocks
    tokens = tokens or (64 if tiny else 2900)
    cuda = device.startswith("cuda")
    plan = {"warmup": 1, "repeats": repeats or (3 if cuda else 2), "steps": steps or (8 if cuda else 2),
            "warmup_steps": 3 if cuda else 1}
    model = build(device, shape, tokens)
    names = decoder_linears(model)
    prune_24(model, names)
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, shape["vocab"], (max(BATCHES), tokens), generator=gen).to(device)
    inputs = {b: prompt[:b].contiguous() for b in BATCHES}

    with torch.inference_mode():
        dense = {b: _measure(model, inputs[b], device, plan) for b in BATCHES}
    # the dense model's own rounding across batch sizes (different GEMM tilings), for scale
    noise = compare(dense[max(BATCHES)]["logits"][:1], dense[1]["logits"][:1])["rel_max_diff"]

    sparse: dict[int, dict[str, Any]] = {}
    errors: dict[tuple[int, str], str] = {}
    skip = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's "prototype" warning
            report = to_semi_structured(model, names, backend=backend)
        skip_note = f"{len(report.converted)} linears on {report.backend}"
    except Exception as error:  # noqa: BLE001 - a refusal (CPU, old GPU) or a kernel failure is a row note
        skip, skip_note = f"skipped: {_one_line(error)}", ""
    _free(device)
    if not skip:
        for b in BATCHES:
            try:
                with torch.inference_mode():
                    sparse[b] = _measure(model, inputs[b], device, plan)
            except Exception as error:  # noqa: BLE001 - keep the other batch's numbers
                errors.update({(b, p): f"failed: {_one_line(error)}" for p in PHASES})
            _free(device)

    rows = []
    for b in BATCHES:
        for phase in PHASES:
            per_call = b * tokens if phase in ("prefill", "linears (prefill)") else b
            row: dict[str, Any] = {"batch": b, "phase": phase, "tokens": per_call,
                                   "dense_ms": round(dense[b][phase], 3), "sparse_ms": None, "speedup": None,
                                   "check": "", "ok": None, "note": skip or errors.get((b, phase), skip_note)}
            if b in sparse:
                row["sparse_ms"] = round(sparse[b][phase], 3)
                row["speedup"] = round(dense[b][phase] / sparse[b][phase], 3)
                if phase == "prefill":
                    check = compare(dense[b]["logits"], sparse[b]["logits"])
                    row["ok"] = check["ok"]
                    row["check"] = (f"max|Δ|/max|ref| {check['rel_max_diff']:.1e} "
                                    f"{'<=' if check['ok'] else '>'} {TOLERANCE:.0e}; "
                                    f"argmax {check['argmax_same']}/{check['rows']}")
            if phase == "prefill" and b == 1:
                row["dense_batch_noise"] = noise
            rows.append(row)
    return rows


def environment(device: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    env: dict[str, Any] = {"torch": torch.__version__, "device": device,
                           "cusparselt": torch.backends.cusparselt.version()}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(device)
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        env["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
    return env


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per (batch, phase); a 2:4 cell that was not measured says why in the notes."""
    head = ("| batch | phase | tokens per forward | dense-with-zeros ms | 2:4 semi-structured ms | speed-up "
            "| outputs vs dense | notes |")
    lines = [head, "|" + "---|" * 8]
    notes = {r["note"] for r in rows}
    shared = notes.pop() if len(notes) == 1 and str(next(iter(notes))).startswith("skipped") else None
    for r in rows:
        sparse = "—" if r["sparse_ms"] is None else f"{r['sparse_ms']:.3f}"
        speedup = "—" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        check = r["check"] or "—"
        if r["ok"] is False:
            check = f"FAIL: {check}"
        lines.append(f"| {r['batch']} | {r['phase']} | {r['tokens']} | {r['dense_ms']:.3f} | {sparse} | "
                     f"{speedup} | {check} | {'skipped (below)' if shared else r['note']} |")
    if shared:
        lines += ["", f"2:4 rows {shared}"]
    noise = [r["dense_batch_noise"] for r in rows if "dense_batch_noise" in r]
    if noise:
        lines.append("")
        lines.append(f"Dense model's own batch-1 vs batch-16 logit difference (same prompt): max|Δ|/max|ref| "
                     f"{noise[0]:.1e}. Tolerance: {TOLERANCE:.0e}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu (dense only, a smoke run)")
    p.add_argument("--blocks", type=int, default=None, help="decoder blocks (default: 32; --tiny: 2)")
    p.add_argument("--tiny", action="store_true", help="a small shape (hidden 256) for CPU runs and tests")
    p.add_argument("--tokens", type=int, default=None, help="prompt tokens (default 2900; --tiny: 64)")
    p.add_argument("--steps", type=int, default=None, help="decode tokens per timed repeat (8; cpu: 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per phase (3; cpu: 2)")
    p.add_argument("--backend", choices=("cusparselt", "cutlass"), default=None,
                   help="sparse kernels (default: cuSPARSELt when torch has it)")
    p.add_argument("--json", type=Path, default=None, help="write the rows and the environment here")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no CUDA GPU; use --device cpu --tiny for a smoke run")
    began = time.perf_counter()
    rows = run(args.device, args.blocks, args.tiny, args.tokens, args.steps, args.repeats, args.backend)
    env = environment(args.device)
    env["wall_s"] = round(time.perf_counter() - began, 1)
    print(table(rows))
    print(f"\n{json.dumps(env)}")
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "rows": rows}, indent=2))
    failed = [r for r in rows if r["ok"] is False or str(r["note"]).startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
