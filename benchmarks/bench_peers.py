"""Benchmark: tamp against llm-compressor (the peer) on the same model and calibration tokens.

One run, two environments. This script (the project's .venv) builds a random Llama decoder with
`save_pretrained` and text calibration samples as token ids (the docstrings of a fixed list of Python
standard-library modules, tokenized with a byte-level BPE trained on them) in a temporary folder.
Each method then runs in fresh processes: tamp's here, llm-compressor's `oneshot` in the peer's own
virtual environment (`benchmarks/bench_peers_llmcompressor.py`, run by `--peer-python`; `make
bench-peers` creates it as .venv-peers, never touching the project's lock). Both load the same saved
model in float32 on the CPU, prune every linear of the decoder blocks at 50% and zero the weights;
a mask is `weight == 0` on both sides. The table gives the wall time of the pruning call alone
(tamp.prune / oneshot; model loading, imports and the recipe's construction excluded), their ratio and
the mask agreement: the share of equal mask entries over all pruned linears.

Settings matched: sparsity 0.5; 2:4 as mask_structure "2:4"; SparseGPT block 128 and dampening 0.01 of
mean(diag H), always applied (tamp's `damping: always`); every nn.Linear inside the decoder layers
(llm-compressor targets ["LlamaDecoderLayer"], its sequential pipeline over the same layers); the next
layer's inputs come from the pruned layer on both sides (propagate_error=True); samples in order,
batch 1, no padding.

What differs: the peer's own torch and transformers (it pins torch <= 2.14; the versions are printed);
llm-compressor forces eager attention during calibration (tamp runs the model's SDPA) and also
propagates through the last layer, whose outputs nobody reads; its statistics are running means
rescaled per sample, tamp's sums scaled once, so float rounding differs. Wanda's masks are equal;
SparseGPT's agree exactly in the first layer's q/k/v and drift by about 1% by the last layer, as the
rounding of each side's reconstructed weights feeds the next layer.

    python benchmarks/bench_peers.py --peer-python .venv-peers/bin/python
    python benchmarks/bench_peers.py --peer-python .venv-peers/bin/python --samples 8 --repeats 3

On a CPU shared with other jobs, `--threads 1` (the default) and `--repeats` give steadier numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEER_SCRIPT = Path(__file__).resolve().with_name("bench_peers_llmcompressor.py")
#: method -> (tamp preset, pattern); the peer script maps the same names to its modifiers
METHODS: dict[str, tuple[str, str]] = {
    "wanda": ("wanda", "unstructured"),
    "wanda_2:4": ("wanda", "2:4"),
    "sparsegpt": ("sparsegpt", "unstructured"),
    "sparsegpt_2:4": ("sparsegpt", "2:4"),
}
SPECIALS = ("<s>", "</s>", "<pad>")
#: the calibration text: these modules' docstrings and their public members' (fixed per Python version)
TEXT_MODULES = (
    "argparse", "asyncio", "collections", "concurrent.futures", "configparser", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "email.message", "enum", "fractions", "functools", "http.client",
    "inspect", "itertools", "json", "logging", "pathlib", "pickle", "re", "shutil", "socket", "sqlite3",
    "statistics", "string", "subprocess", "tarfile", "textwrap", "threading", "typing", "unittest",
    "urllib.parse", "zipfile",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", help="python of the environment with llm-compressor (.venv-peers/bin/python)")
    p.add_argument("--methods", nargs="+", default=["wanda", "wanda_2:4", "sparsegpt"], choices=list(METHODS))
    p.add_argument("--samples", type=int, default=16, help="calibration samples")
    p.add_argument("--tokens", type=int, default=512, help="tokens per sample")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1376)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=8192, help="BPE vocabulary size (the model's vocab_size)")
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads on both sides")
    p.add_argument("--repeats", type=int, default=1, help="runs per method and side (interleaved); best kept")
    p.add_argument("--keep", metavar="DIR", help="build the model, tokens and masks in DIR (new) and keep them")
    p.add_argument("--worker", nargs=2, metavar=("WORKDIR", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is None and not args.peer_python:
        p.error("--peer-python is required: the python of the environment with llm-compressor "
                "(make bench-peers creates .venv-peers/bin/python)")
    if not 0.0 < args.sparsity < 1.0:
        p.error(f"--sparsity {args.sparsity} is out of range; valid: 0 < sparsity < 1")
    return args


# ---------------------------------------------------------------------------------------------- inputs
def calibration_text() -> str:
    """English prose that is the same on every machine with this Python: standard-library docstrings."""
    import importlib
    import inspect

    parts: list[str] = []
    for name in TEXT_MODULES:
        module = importlib.import_module(name)
        parts.append(inspect.getdoc(module) or "")
        for attr in sorted(vars(module)):
            obj = getattr(module, attr)
            if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            parts.append(inspect.getdoc(obj) or "")
    return "\n\n".join(p for p in parts if p)


def token_ids(samples: int, tokens: int, vocab: int):
    """([samples, tokens] int64 ids, tokenizer): the text through a byte-level BPE trained on it, cut in order."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    text = calibration_text()
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, show_progress=False, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([text], trainer=trainer)
    ids = tokenizer.encode(text).ids
    need = samples * tokens
    if len(ids) < need:
        raise SystemExit(f"--samples {samples} x --tokens {tokens} needs {need} calibration tokens; the text has "
                         f"{len(ids)}: valid: samples x tokens <= {len(ids)}")
    return torch.tensor(ids[:need], dtype=torch.int64).view(samples, tokens), tokenizer


def build_inputs(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Save the random Llama model and its tokenizer (workdir/model) and the token ids (workdir/ids.pt).

    The tokenizer is saved because llm-compressor's oneshot refuses a dataset without a processor, even
    one already tokenized; neither side tokenizes anything. Returns the model's shape.
    """
    import torch
    import transformers as tf

    ids, tokenizer = token_ids(args.samples, args.tokens, args.vocab)
    config = tf.LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=max(2048, args.tokens),
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(config).eval()
    model.save_pretrained(workdir / "model")
    bos, eos, pad = SPECIALS
    tf.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos,
                               pad_token=pad).save_pretrained(workdir / "model")
    torch.save(ids, workdir / "ids.pt")
    return {"hidden": args.hidden, "layers": args.layers, "intermediate": args.intermediate,
            "heads": args.heads, "vocab": args.vocab, "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


# ---------------------------------------------------------------------------------------------- tamp side
def tamp_worker(args: argparse.Namespace) -> None:
    """Prune the saved model with tamp, save `weight == 0` per pruned linear, print the timing as JSON."""
    import torch
    import transformers as tf

    import tamp
    from tamp.data.sample import TEXT, CalibSample
    from tamp.methods.presets import prune_config
    from tamp.models.decoder_lm import DecoderLMAdapter

    torch.set_num_threads(args.threads)
    workdir, method = Path(args.worker[0]), args.worker[1]
    preset, pattern = METHODS[method]
    model = tf.LlamaForCausalLM.from_pretrained(workdir / "model", dtype=torch.float32).eval()
    ids = torch.load(workdir / "ids.pt")
    samples = [CalibSample(inputs={"input_ids": row[None].clone()},
                           modality_ids=torch.full((row.numel(),), TEXT, dtype=torch.long)) for row in ids]
    cfg = prune_config(preset, args.sparsity, pattern, device="cpu", progress=False)
    adapter = DecoderLMAdapter(model, None)
    start, cpu_start = time.perf_counter(), cpu_seconds()
    summary = tamp.prune(model, samples, cfg, adapter=adapter)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    names = [linear.name for linear in summary.linears]
    modules = dict(model.named_modules())
    torch.save({n: modules[n].weight.detach() == 0 for n in names}, workdir / f"masks_tamp_{method}.pt")
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "timings": summary.timings}))


def cpu_seconds() -> float:
    """User + system CPU time of this process: far less sensitive than wall time to other jobs' load."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------------- driver
def run_side(cmd: list[str], threads: int, side: str, method: str) -> dict[str, Any]:
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{side} {method} failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def agreement(workdir: Path, method: str) -> dict[str, float]:
    """Share of equal mask entries over all pruned linears, and each side's share of zeros."""
    import torch

    ours = torch.load(workdir / f"masks_tamp_{method}.pt")
    theirs = torch.load(workdir / f"masks_peer_{method}.pt")
    if set(ours) != set(theirs):
        only = sorted(set(ours) ^ set(theirs))
        raise SystemExit(f"{method}: tamp and llm-compressor pruned different linears, e.g. {only[:3]}")
    total = sum(m.numel() for m in ours.values())
    equal = sum(int((ours[n] == theirs[n]).sum()) for n in ours)
    return {
        "agreement": equal / total,
        "tamp_sparsity": sum(int(m.sum()) for m in ours.values()) / total,
        "peer_sparsity": sum(int(m.sum()) for m in theirs.values()) / total,
        "linears": len(ours),
    }


def versions(python: str) -> str:
    code = "import torch, transformers, importlib.metadata as m; print(torch.__version__, transformers.__version__, "
    code += "m.version('llmcompressor') if m.packages_distributions().get('llmcompressor') else '-')"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=False).stdout.strip()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        tamp_worker(args)
        return
    peer_python = Path(args.peer_python)
    if not peer_python.is_file():
        raise SystemExit(f"--peer-python {peer_python}: no such file; valid: the python of the environment "
                         "with llm-compressor (make bench-peers creates .venv-peers/bin/python)")
    if args.keep:
        workdir = Path(args.keep)
        if workdir.exists() or workdir.is_symlink():  # never write into (or through) what this run did not make
            raise SystemExit(f"--keep {workdir}: already exists; valid: a path that does not exist yet")
        workdir.mkdir(parents=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="tamp-bench-peers-"))
    try:
        shape = build_inputs(args, workdir)
        common = ["--sparsity", str(args.sparsity), "--threads", str(args.threads)]
        best: dict[str, dict[str, float]] = {m: {} for m in args.methods}  # "tamp", "peer" + "_cpu"
        for _ in range(args.repeats):
            for method in args.methods:
                tamp_cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(workdir), method, *common]
                peer_cmd = [str(peer_python), str(PEER_SCRIPT), str(workdir), method, *common]
                for side, cmd in (("tamp", tamp_cmd), ("peer", peer_cmd)):
                    timing = run_side(cmd, args.threads, side, method)
                    for key, value in ((side, timing["wall_s"]), (f"{side}_cpu", timing["cpu_s"])):
                        best[method][key] = min(best[method].get(key, float("inf")), value)
        print(report(args, shape, best, workdir, peer_python))
    finally:
        if not args.keep:
            shutil.rmtree(workdir)


def report(args: argparse.Namespace, shape: dict[str, Any], best: dict[str, dict[str, float]], workdir: Path,
           peer_python: Path) -> str:
    tamp_v, peer_v = versions(sys.executable), versions(str(peer_python))
    lines = [
        f"Random LlamaForCausalLM: hidden {shape['hidden']}, {shape['layers']} layers, {shape['heads']} heads, "
        f"SwiGLU {shape['intermediate']}, vocab {shape['vocab']} ({shape['params_m']:.1f} M parameters), float32, "
        f"CPU, torch threads {args.threads}; {args.samples} samples x {args.tokens} tokens of standard-library "
        f"docstrings; sparsity {args.sparsity}; best wall of {args.repeats} interleaved run(s) of the pruning call, "
        "each in a fresh process (CPU s: user + system time of that process during the call, best of the runs; "
        "steadier than wall time when other jobs share the CPU).",
        f"tamp: torch / transformers {tamp_v.removesuffix(' -')}; llm-compressor: torch / transformers / llmcompressor {peer_v}",
        "",
        "| method | tamp s | llm-compressor s | llm-compressor / tamp | mask agreement | tamp CPU s | "
        "llm-compressor CPU s | CPU ratio | tamp sparsity | llm-compressor sparsity |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, walls in best.items():
        a = agreement(workdir, method)
        lines.append(
            f"| {method} | {walls['tamp']:.2f} | {walls['peer']:.2f} | {walls['peer'] / walls['tamp']:.2f}x | "
            f"{a['agreement']:.4f} | {walls['tamp_cpu']:.2f} | {walls['peer_cpu']:.2f} | "
            f"{walls['peer_cpu'] / walls['tamp_cpu']:.2f}x | {a['tamp_sparsity']:.4f} | {a['peer_sparsity']:.4f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
