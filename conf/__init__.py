"""tamp's Hydra configs, shipped inside the package so a regular `pip install .` finds them.

CONF_DIR is the one place that says where they are (the CLI, `tamp.prune` by preset name and the tests
compose from it); `experiment/` holds the paper's studies (`+experiment=table2_llava_next`).
"""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent
