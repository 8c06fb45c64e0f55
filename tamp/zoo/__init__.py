"""The toy zoo: synthetic multimodal data (and tiny trained models) for the offline default.

`build_zoo` lives in `tamp.zoo.build` (not re-exported, so `python -m tamp.zoo.build` runs cleanly).
"""

from tamp.zoo.tasks import TASK_NAMES, TASKS, make_item, task_table, tokenize, vocabulary

__all__ = ["TASKS", "TASK_NAMES", "make_item", "task_table", "tokenize", "vocabulary"]
