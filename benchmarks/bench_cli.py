"""How fast the CLI answers, against Python's import of Hydra (the floor any Hydra app pays).

Best of N wall times (fresh interpreters, interleaved so a load change hits every command alike) of
`python -c "import hydra"` and of each answer that must not load a model library: `tamp.run --help`,
`--info`, `--cfg job`, a config error, a tab completion and `tamp.report --help`; each with its ratio
to the Hydra import (the goal: at most 3x).

    python benchmarks/bench_cli.py [--repeats 3]
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
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline"}
    best = dict.fromkeys(COMMANDS, float("inf"))
    for _ in range(args.repeats):
        for name, (cmd, extra) in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, env={**env, **extra}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            best[name] = min(best[name], time.perf_counter() - start)
    floor = best["import hydra"]
    print(f"{'command':45s} {'best of ' + str(args.repeats):>10s} {'x hydra':>8s}")
    for name, seconds in best.items():
        print(f"{name:45s} {seconds:9.2f}s {seconds / floor:7.1f}x")


if __name__ == "__main__":
    main()
