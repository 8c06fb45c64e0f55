"""How fast the CLI answers, against Python's import of Hydra (the floor any Hydra app pays).

Best of N wall times (fresh interpreters, interleaved so a load change hits every command alike) of
`python -c "import hydra"` and of each answer that must not load a model library: `tamp.run --help`,
`--info`, `--cfg job`, a config error, a tab completion and `tamp.report --help`; each with its ratio
to the Hydra import (the goal: at most 3x). `--baseline DIR` times the same commands in another source
tree too (e.g. `git archive <commit> | tar -x -C DIR`; its Python code runs, with this checkout's
configs), interleaved in the same run, so the two columns meet the same load.

    python benchmarks/bench_cli.py [--repeats 3] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
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
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline"}
    trees = {"this": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    best = {(tree, name): float("inf") for tree in trees for name in COMMANDS}
    for _ in range(args.repeats):
        for name, (cmd, extra) in COMMANDS.items():
            for tree, cwd in trees.items():
                start = time.perf_counter()
                subprocess.run(cmd, cwd=cwd, env={**env, **extra}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                best[tree, name] = min(best[tree, name], time.perf_counter() - start)
    floor = min(best[tree, "import hydra"] for tree in trees)  # the same interpreter in every tree
    head = f"{'command':45s} {'best of ' + str(args.repeats):>10s} {'x hydra':>8s}"
    print(head + (f" {'baseline':>10s} {'x hydra':>8s}" if args.baseline else ""))
    for name in COMMANDS:
        line = f"{name:45s} {best['this', name]:9.2f}s {best['this', name] / floor:7.1f}x"
        if args.baseline:
            line += f" {best['baseline', name]:9.2f}s {best['baseline', name] / floor:7.1f}x"
        print(line)


if __name__ == "__main__":
    main()
