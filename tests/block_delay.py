"""A pause after every checkpointed block of a tamp subprocess, so a test can stop a run between two blocks.

The seam is the test's own, not tamp's: `with_block_delay(env, seconds)` returns an environment whose
PYTHONPATH starts with a folder holding a `sitecustomize.py` that, when the subprocess (or any process it
starts: Hydra's launchers, submitit's jobs) imports tamp.pipeline.checkpoint, wraps
`PruneCheckpoint.save_block` to sleep after saving. tamp itself runs unchanged; a renamed `save_block` fails
loudly at import instead of silently not pausing.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

_PLUGIN = '''"""Written by tests/block_delay.py: sleep {seconds} s after each checkpointed block (tests only)."""
import importlib.abc
import sys
import time

_MODULE, _DELAY = "tamp.pipeline.checkpoint", {seconds!r}


def _patch(module):
    save = module.PruneCheckpoint.save_block

    def save_block(self, *args, **kwargs):
        result = save(self, *args, **kwargs)
        time.sleep(_DELAY)
        return result

    module.PruneCheckpoint.save_block = save_block


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != _MODULE:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None:
                run = spec.loader.exec_module

                def exec_module(module, run=run):
                    run(module)
                    _patch(module)

                spec.loader.exec_module = exec_module
                return spec
        return None


sys.meta_path.insert(0, _PatchOnImport())
'''


def with_block_delay(env: dict[str, str], seconds: float) -> dict[str, str]:
    """`env` for a subprocess whose pruning sleeps `seconds` after each checkpointed block."""
    folder = Path(tempfile.mkdtemp(prefix="tamp-block-delay-"))
    atexit.register(shutil.rmtree, folder, True)
    (folder / "sitecustomize.py").write_text(_PLUGIN.format(seconds=float(seconds)))
    path = os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path}
