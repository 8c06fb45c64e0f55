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


def test_only_its_own_wheels_are_replaced_never_a_users(tmp_path: Path) -> None:
    import hashlib

    folder = tmp_path / "wheels"
    folder.mkdir()
    (folder / "theirs-1.0-py3-none-any.whl").write_bytes(b"a user's wheel")
    digest = hashlib.sha256((folder / "theirs-1.0-py3-none-any.whl").read_bytes()).hexdigest()
    with pytest.raises(SystemExit, match="holds wheels this script did not write .theirs-1.0"):
        device_wheels.prepare_folder(folder)
    assert hashlib.sha256((folder / "theirs-1.0-py3-none-any.whl").read_bytes()).hexdigest() == digest

    link = tmp_path / "link"
    link.symlink_to(folder)
    with pytest.raises(SystemExit, match="is a symbolic link"):
        device_wheels.prepare_folder(link)

    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "pkg-2.0-py3-none-any.whl").write_bytes(b"downloaded before")
    (ours / device_wheels.MANIFEST).write_text("pkg-2.0-py3-none-any.whl\n")
    (ours / "notes.txt").write_text("kept")
    device_wheels.prepare_folder(ours)  # a rerun: its own wheels go, nothing else
    assert sorted(p.name for p in ours.iterdir()) == ["notes.txt"]
