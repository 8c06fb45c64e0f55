"""The project's own lmms-eval task folders.

Every sub-folder here (tiny/, zoo/, paper/) holds lmms-eval task YAMLs; lmms-eval's TaskManager
walks an include path recursively, so passing this one folder registers all of them. Task names
start with `tamp_` so they never collide with lmms-eval's built-in tasks (built-ins win on a clash).
paper/ holds tamp's groups of lmms-eval built-ins (tamp_mathvista_testmini: one prompt variant with
its generation settings), which load only with the built-ins indexed (tamp.eval.evaluate.resolve_tasks).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

TASKS_DIR = Path(__file__).resolve().parent


def task_dirs() -> list[str]:
    """Include paths for lmms-eval's TaskManager: this folder (it is searched recursively)."""
    return [str(TASKS_DIR)]


def prompted(question: str, lmms_eval_specific_kwargs: Mapping[str, Any] | None = None) -> str:
    """A document's question wrapped in the model's pre_prompt / post_prompt (the doc_to_text of our tasks)."""
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{question}{kwargs.get('post_prompt', '')}"
