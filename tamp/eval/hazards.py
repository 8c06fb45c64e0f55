"""Known ways an lmms-eval task fails or reaches the network only after the pruning, checked before it.

Read from the tasks' YAML files and the code they name, without loading any dataset or model:
- a task whose code calls `nltk.download(...)` when lmms-eval imports it (nextqa's utils) while those
  NLTK resources are not on this machine: on a node without network the call fails or hangs;
- a video task (`dataset_kwargs.video`) whose video folder `$HF_HOME/<cache_dir>` is missing or holds
  no video file: lmms-eval would then download and unpack the whole video archive from the Hub (offline:
  fail), and videomme's / egoschema's utils end the process on the first missing video;
- an audio task (its doc_to_visual returns audio) while torchcodec has no FFmpeg to decode datasets'
  `Audio()` feature with: every document fails.
`check_task_hazards` raises `TaskHazardError` with one line naming the task, what is missing and how
to get it. Whether a task's dataset itself is in the cache is checked elsewhere.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tamp.data.media import VIDEO_EXTENSIONS

DEFAULT_HF_HOME = "~/.cache/huggingface"
#: NLTK's data folders (nltk.data.find looks in <data dir>/<one of these>/<resource>[.zip])
_NLTK_KINDS = ("corpora", "taggers", "tokenizers", "chunkers", "grammars", "misc", "models", "sentiment",
               "stemmers", "help")
_NLTK_DOWNLOAD = re.compile(r"nltk\.download\(\s*['\"]([\w.\-]+)['\"]")
#: at most this many folder entries are looked at when searching a video folder for one video
_SCAN_LIMIT = 20000


class TaskHazardError(ValueError):
    """An eval task would fail or need the network after the pruning: one line saying what to do."""


class _Function(str):
    """A `!function module.name` value of a task YAML (kept as its dotted name)."""


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!function", lambda loader, node: _Function(loader.construct_scalar(node)))


# ---------------------------------------------------------------------------------------- tasks
def leaf_tasks(manager: Any, names: Sequence[str]) -> list[tuple[str, Path]]:
    """(task, YAML path) of every single task under the names (groups and tags expanded), in order."""
    out: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in manager.task_index:
            return
        seen.add(name)
        entry = manager.task_index[name]
        members = entry.get("task") if isinstance(entry.get("task"), list) else None
        path = entry.get("yaml_path")
        if entry.get("type") == "group" and members is None and isinstance(path, str):
            listed, _ = task_config(Path(path))
            members = [m if isinstance(m, str) else m.get("task") for m in listed.get("task") or []]
        if members is not None:
            for member in members:
                if isinstance(member, str):
                    visit(member)
        elif isinstance(path, str):
            out.append((name, Path(path)))

    for name in names:
        visit(name)
    return out


def task_config(path: Path) -> tuple[dict[str, Any], list[Path]]:
    """A task YAML with its `include`s merged (later keys win, as lmms-eval merges them), and the
    Python files its `!function`s name (each resolved next to the YAML that names it)."""
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader) or {}
    except (OSError, yaml.YAMLError):  # unreadable here: lmms-eval reports it when it loads the task
        return {}, []
    if not isinstance(raw, dict):
        return {}, []
    include = raw.pop("include", None)
    merged: dict[str, Any] = {}
    files: list[Path] = []
    for item in [include] if isinstance(include, str) else (include or []):
        base = Path(item) if Path(item).is_absolute() else path.parent / item
        if base.is_file():
            inner, inner_files = task_config(base)
            merged.update(inner)
            files += inner_files
    modules = {value.split(".")[0] for value in _values(raw) if isinstance(value, _Function)}
    files += [path.parent / f"{module}.py" for module in sorted(modules)]
    merged.update(raw)
    return merged, files


def _values(node: Any) -> Iterator[Any]:
    if isinstance(node, Mapping):
        for value in node.values():
            yield from _values(value)
    elif isinstance(node, list):
        for value in node:
            yield from _values(value)
    else:
        yield node


# ---------------------------------------------------------------------------------------- checks
def check_task_hazards(manager: Any, names: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """Raise TaskHazardError (one line) for the first hazard of the named tasks; see the module doc."""
    env = os.environ if env is None else env
    problems: list[tuple[str, str]] = []
    folders: set[Path] = set()
    for task, path in leaf_tasks(manager, names):
        config, files = task_config(path)
        found = _nltk_problems(task, files) + _video_problems(task, config, env, folders) + _audio_problems(task, config)
        problems += [(task, line) for line in found]
    if problems:
        others = list(dict.fromkeys(task for task, _ in problems[1:]))
        more = f" (problems in {len(others)} more: {', '.join(others[:5])}{', ...' if len(others) > 5 else ''})"
        raise TaskHazardError(problems[0][1] + (more if others else ""))


def nltk_missing(resources: Sequence[str], paths: Sequence[str] | None = None) -> list[str]:
    """The NLTK resources found in none of NLTK's data folders (`nltk.data.path`)."""
    if paths is None:
        import nltk

        paths = list(nltk.data.path)
    return [
        r for r in resources
        if not any((Path(p) / kind / name).exists() for p in paths for kind in _NLTK_KINDS
                   for name in (r, f"{r}.zip"))
    ]


def _nltk_problems(task: str, files: Sequence[Path]) -> list[str]:
    wanted: list[str] = []
    for file in files:
        if file.is_file():
            wanted += [r for r in _NLTK_DOWNLOAD.findall(file.read_text(errors="replace")) if r not in wanted]
    missing = nltk_missing(wanted) if wanted else []
    if not missing:
        return []
    return [
        f"eval task {task}: its lmms-eval code calls nltk.download({', '.join(map(repr, missing))}) when it "
        f"loads, and NLTK has no such data here (a node without network fails or hangs there, after the "
        f"pruning); fetch it once where there is network: python -m nltk.downloader {' '.join(missing)} "
        "(NLTK_DATA=DIR to put it elsewhere)"
    ]


def hf_home(env: Mapping[str, str]) -> Path:
    return Path(os.path.expanduser(env.get("HF_HOME") or DEFAULT_HF_HOME))


def _video_problems(task: str, config: Mapping[str, Any], env: Mapping[str, str], seen: set[Path]) -> list[str]:
    kwargs = config.get("dataset_kwargs") or {}
    if not (isinstance(kwargs, Mapping) and kwargs.get("video") and kwargs.get("cache_dir")):
        return []
    cache = os.path.expanduser(os.path.expandvars(str(kwargs["cache_dir"])))
    folder = Path(cache) if os.path.isabs(cache) else hf_home(env) / cache
    if folder in seen:
        return []
    seen.add(folder)
    where = f"its videos under $HF_HOME/{kwargs['cache_dir']} ({folder})"
    fetch = ("lmms-eval fetches and unpacks the task's video archives there from the Hub when the folder is "
             "missing (offline: a failure after the pruning); put them there first, or set HF_HOME to where they are")
    if not folder.is_dir():
        return [f"eval task {task} reads {where}, which does not exist; {fetch}"]
    if not _has_video(folder):
        return [f"eval task {task} reads {where}, which holds no video file; {fetch}"]
    return []


def _has_video(folder: Path) -> bool:
    looked = 0
    for _root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        for name in files:
            if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                return True
        looked += len(files) + len(dirs)
        if looked > _SCAN_LIMIT:
            return True  # a large folder: assume the videos are in it rather than walk it all
    return False


def ffmpeg_major_version() -> int | None:
    """The FFmpeg major version torchcodec loaded (None: torchcodec or FFmpeg's libraries are missing)."""
    try:
        import torchcodec
    except Exception:  # noqa: BLE001 - not installed, or its native libraries do not load
        return None
    return getattr(torchcodec, "ffmpeg_major_version", None)


def _audio_problems(task: str, config: Mapping[str, Any]) -> list[str]:
    visual = config.get("doc_to_visual") or config.get("doc_to_audio")
    if not (isinstance(visual, str) and "audio" in visual.rsplit(".", 1)[-1].lower()):
        return []
    if ffmpeg_major_version() is not None:
        return []
    return [
        f"eval task {task} reads audio, which datasets decodes (Audio() feature) with torchcodec, and "
        "torchcodec found no FFmpeg shared libraries (major versions 4-9); install FFmpeg: apt-get install "
        "ffmpeg (Debian/Ubuntu, or `make system-deps`), conda install ffmpeg, or module load ffmpeg on a cluster"
    ]
