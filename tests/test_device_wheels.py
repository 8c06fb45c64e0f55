"""The wheels carried to a GPU node (benchmarks/device_wheels.py): what the CLI needs beyond the node's image.

The end-to-end proof needs the network and minutes (`python benchmarks/device_wheels.py --check` runs
gpu_node_check in an environment without the rest); these check the selection against the lock.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import device_wheels  # noqa: E402

pytestmark = pytest.mark.fast


def test_the_cli_stack_is_carried_and_the_image_packages_are_not() -> None:
    carried = device_wheels.chosen()
    for needed in ("hydra-core", "omegaconf", "antlr4-python3-runtime", "lmms-eval", "datasets"):
        assert needed in carried, needed
    assert carried["transformers"] == device_wheels.locked()["transformers"]  # the lock's, over the image's
    for kept in ("torch", "numpy", "pyarrow", "triton", "lightning", "pytest"):
        assert kept not in carried, kept  # from the image: too large to carry, or the same there
    for left in ("wandb", "av", "mkdocs", "ruff", "pycocoevalcap"):
        assert left not in carried, left  # not imported by the check (logger=none, image tasks) or dev-only


def test_the_lock_is_read_for_python_3_12() -> None:
    locked = device_wheels.locked()
    assert set(device_wheels.chosen()) <= set(locked)
    numpy = [line for line in device_wheels.LOCK.read_text().splitlines() if line.startswith("numpy==")]
    if len(numpy) > 1:  # split by a python_full_version marker: the >= 3.12 entry is the device's
        assert f"numpy=={locked['numpy']} ; python_full_version >= '3.12'" in "\n".join(numpy)
