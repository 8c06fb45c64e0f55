"""Which tamp/*.py files one `python -m tamp.run ...` executes (issue 33: the run's footprint).

Usage: `python benchmarks/trace_files.py [--list] [override ...]`, overrides as for `python -m tamp.run`
(default: `method=tamp eval=none logger=none runner.progress=false`). A profiler hook (sys.setprofile,
every thread) records the file of every Python frame entered in this process; the run's own package is
the one `import tamp` would find (PYTHONPATH decides, so an older checkout can be measured the same way).
Three counts: files with any code run (imports included), files with a function called beyond the module
body, and files with a function called while no import is under way (what the run itself uses).
Workers of a multi-process runner are other processes and are not traced: use a one-process runner.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
import tempfile
import threading
from pathlib import Path

DEFAULT_OVERRIDES = ["method=tamp", "eval=none", "logger=none", "runner.progress=false"]


def package_dir() -> Path:
    """The tamp package `import tamp` would load, found without importing it (its import is traced)."""
    spec = importlib.util.find_spec("tamp")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("trace_files: no tamp package on sys.path (run from the repository or set PYTHONPATH)")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def trace_run(overrides: list[str]) -> tuple[Path, dict[str, set[str]], set[str]]:
    """Run `python -m tamp.run overrides` in this process; return the package, {file: code names run} and
    the files with a function called outside any import."""
    root = package_dir()
    prefix = str(root) + "/"
    seen: dict[str, set[str]] = {}
    used: set[str] = set()
    importing = threading.local()  # per thread: how many imports are under way (_find_and_load frames)

    def hook(frame, event, arg) -> None:  # noqa: ANN001 - the profiler's own signature
        code = frame.f_code
        if code.co_name == "_find_and_load" and "importlib" in code.co_filename:
            importing.depth = getattr(importing, "depth", 0) + (1 if event == "call" else -1 if event == "return" else 0)
        elif event == "call" and code.co_filename.startswith(prefix):
            seen.setdefault(code.co_filename, set()).add(code.co_name)
            if code.co_name != "<module>" and not getattr(importing, "depth", 0):
                used.add(code.co_filename)

    with tempfile.TemporaryDirectory(prefix="tamp_trace_") as out:
        sys.argv = ["tamp.run", *overrides, f"hydra.run.dir={out}/run"]
        threading.setprofile(hook)
        sys.setprofile(hook)
        try:
            runpy.run_module("tamp.run", run_name="__main__", alter_sys=True)
        except SystemExit as stop:
            if stop.code not in (0, None):
                raise
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
    return root, seen, used


def main(argv: list[str]) -> None:
    show = "--list" in argv
    overrides = [a for a in argv if a != "--list"] or DEFAULT_OVERRIDES
    root, seen, used = trace_run(overrides)
    called = {f for f, names in seen.items() if names - {"<module>"}}
    print(f"package: {root}", file=sys.stderr)
    print(f"tamp files executed (any code, imports included): {len(seen)}", file=sys.stderr)
    print(f"tamp files with a function called: {len(called)}", file=sys.stderr)
    print(f"tamp files with a function called outside an import: {len(used)}", file=sys.stderr)
    if show:  # R: used by the run, F: a function called while importing only, m: module body only
        for f in sorted(seen):
            mark = "R" if f in used else "F" if f in called else "m"
            print(f"  {mark} {Path(f).relative_to(root.parent)}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
