"""How fast the CLI answers, against Python's import of Hydra (the floor any Hydra app pays).

Best of N wall times (fresh interpreters, interleaved so a load change hits every command alike) of
`python -c "import hydra"` and of each answer that must not load a model library: `tamp.run --help`,
`--info`, `--cfg job`, a config error, a tab completion and `tamp.report --help`; each with its ratio
to the Hydra import (the goal: at most 3x). `--baseline DIR` times the same commands in another source
tree too (e.g. `git archive <commit> | tar -x -C DIR`; its Python code runs, with this checkout's
configs), interleaved in the same run, so the two columns meet the same load.

The box may be shared: the load average is printed before and after, and beside each wall time the
best CPU time (user + system) of the same command, which another process's load moves much less.

Python's bytecode cache changes the floor and the rest differently: Hydra's modules come precompiled
with the virtualenv, a checkout's are compiled on first import and cached in __pycache__, unless
PYTHONDONTWRITEBYTECODE is set (as on this box), when they are compiled again on every run. By default
the environment decides; `--bytecode-cache` gives every module a cache (a temporary PYTHONPYCACHEPREFIX,
each command run once first to fill it), what an installed tamp or a used checkout has.

    python benchmarks/bench_cli.py [--repeats 3] [--baseline DIR] [--bytecode-cache]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
COMMANDS: dict[str, tuple[list[str], dict[str, str]]] = {
    "import hydra": ([PY, "-c", "import hydra"], {}),
    "tamp.run --help": ([PY, "-m", "tamp.run", "--help"], {}),
    "tamp.run --info": ([PY, "-m", "tamp.run", "--info"], {}),
    "tamp.run --cfg job +experiment=toy_demo": ([PY, "-m", "tamp.run", "--cfg", "job", "+experiment=toy_demo"], {}),
    "tamp.run sparsity.target=2 (error)": ([PY, "-m", "tamp.run", "sparsity.target=2"], {}),
    "completion: tamp-run method=<TAB>": ([PY, "-m", "tamp.run", "-sc", "query=bash"], {"COMP_LINE": "tamp-run method="}),
    "tamp.report --help": ([PY, "-m", "tamp.report", "--help"], {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another source tree whose commands are timed alongside")
    parser.add_argument("--bytecode-cache", action="store_true",
                        help="every module's bytecode cached (a temporary PYTHONPYCACHEPREFIX, filled first)")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline"}
    trees = {"this": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    with tempfile.TemporaryDirectory(prefix="bench_cli_pyc_") as cache:
        if args.bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = cache
            for cmd, extra in COMMANDS.values():  # fill the cache: compiled once, as a user's first run does
                for cwd in trees.values():
                    _timed(cmd, cwd, {**env, **extra})
        _report(args, trees, env)


def _report(args: argparse.Namespace, trees: dict[str, Path], env: dict[str, str]) -> None:
    """Time every command in every tree, interleaved, and print the table."""
    best = {(tree, name): float("inf") for tree in trees for name in COMMANDS}
    cpu = dict(best)
    load = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name, (cmd, extra) in COMMANDS.items():
            for tree, cwd in trees.items():
                wall, used = _timed(cmd, cwd, {**env, **extra})
                best[tree, name] = min(best[tree, name], wall)
                cpu[tree, name] = min(cpu[tree, name], used)
    print(f"load average (1 min) {load:.2f} before, {os.getloadavg()[0]:.2f} after, on {os.cpu_count()} CPUs; "
          + ("bytecode cached for every module" if args.bytecode_cache else
             f"PYTHONDONTWRITEBYTECODE={env.get('PYTHONDONTWRITEBYTECODE', '')!r}"))
    floor = min(best[tree, "import hydra"] for tree in trees)  # the same interpreter in every tree
    cpu_floor = min(cpu[tree, "import hydra"] for tree in trees)
    head = f"{'command':45s} {'best of ' + str(args.repeats):>10s} {'x hydra':>8s} {'CPU':>7s} {'x hydra':>8s}"
    print(head + (f" {'baseline':>10s} {'x hydra':>8s} {'CPU':>7s} {'x hydra':>8s}" if args.baseline else ""))
    for name in COMMANDS:
        line = f"{name:45s}" + "".join(
            f" {best[tree, name]:9.2f}s {best[tree, name] / floor:7.1f}x {cpu[tree, name]:6.2f}s"
            f" {cpu[tree, name] / cpu_floor:7.1f}x" for tree in trees)
        print(line)


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one run of `cmd`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


if __name__ == "__main__":
    main()
