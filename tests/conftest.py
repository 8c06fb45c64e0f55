"""Test-wide environment: offline, W&B offline, quiet progress bars, fixtures directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# tiny tensors: one thread per process is faster than two fighting over CI's two cores (subprocesses inherit)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
