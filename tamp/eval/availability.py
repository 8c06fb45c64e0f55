"""Is every requested lmms-eval task's dataset on this machine? Asked before pruning, not 229 s into scoring.

lmms-eval loads a task's documents with `datasets.load_dataset(dataset_path, dataset_name,
**dataset_kwargs)` when scoring starts; offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) a Hub dataset
that is not cached then fails after the whole pruning run, with a retry error that names no task.
Here each requested task (groups and tags expanded to their tasks through lmms-eval's own
TaskManager index, YAMLs read with their `include`s and without importing their code) is checked
from its YAML: local builders (`dataset_path: json` etc.) need their `data_files`, `load_from_disk`
and local paths need the folder, and offline a Hub id needs a snapshot in the hub cache or a
prepared copy in the datasets cache. The first missing one is one line naming task and dataset.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

#: the generic builders whose data are the YAML's own `data_files` (lmms-eval's `_LOCAL_BUILDERS`)
LOCAL_BUILDERS = frozenset({"csv", "json", "parquet", "text", "pandas", "arrow"})
_TRUE = ("1", "true", "yes", "on")


class DatasetUnavailableError(FileNotFoundError):
    """A task's documents cannot be loaded here; the message names the task and the dataset."""


def offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _hf_home() -> Path:
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface"


def hub_cache() -> Path:
    """huggingface_hub's cache folder, read from the environment now (not at import)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return Path(explicit).expanduser() if explicit else _hf_home() / "hub"


def datasets_caches(kwargs: Mapping[str, Any]) -> list[Path]:
    """Where `datasets` may hold a prepared copy: the task's cache_dir, lmms-eval's and datasets' own."""
    found = [kwargs.get("cache_dir"), os.environ.get("LMMS_EVAL_DATASETS_CACHE"), os.environ.get("HF_DATASETS_CACHE")]
    return [Path(str(p)).expanduser() for p in found if p] + [_hf_home() / "datasets"]


def hub_dataset_cached(repo_id: str, kwargs: Mapping[str, Any]) -> bool:
    """A Hub dataset has a snapshot in the hub cache or a prepared folder in a datasets cache."""
    snapshots = hub_cache() / f"datasets--{repo_id.replace('/', '--')}" / "snapshots"
    if snapshots.is_dir() and any(snapshots.iterdir()):
        return True
    from datasets.naming import camelcase_to_snakecase

    namespace, _, name = repo_id.rpartition("/")
    # datasets names a prepared copy `namespace___snake_case_name` (builder._relative_data_dir)
    prepared = {repo_id.replace("/", "___"), f"{namespace}___{camelcase_to_snakecase(name)}" if namespace else name}
    return any((cache / folder).is_dir() for cache in datasets_caches(kwargs) for folder in prepared)


def _data_files(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _data_files(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _data_files(item)


def _local_file_missing(name: str, yaml_dir: Path) -> bool:
    if "://" in name:
        return False  # a URL: datasets downloads it (and says so itself when offline)
    candidates = [Path(name).expanduser()] if Path(name).expanduser().is_absolute() else [Path(name), yaml_dir / name]
    if any(ch in name for ch in "*?["):
        return not any(glob.glob(str(c)) for c in candidates)
    return not any(c.exists() for c in candidates)


def dataset_problem(config: Mapping[str, Any], yaml_dir: Path) -> str | None:
    """Why a task config's documents cannot be loaded on this machine now, or None."""
    path = config.get("dataset_path")
    if not isinstance(path, str) or not path:
        return None  # a python task or a task without a dataset: nothing to check from its YAML
    kwargs = config.get("dataset_kwargs") if isinstance(config.get("dataset_kwargs"), Mapping) else {}
    subset = config.get("dataset_name")
    label = f"dataset {path}" + (f" ({subset})" if subset else "")
    if path in LOCAL_BUILDERS:
        for name in _data_files(kwargs.get("data_files")):
            if _local_file_missing(name, yaml_dir):
                return f"{label} data file {name} does not exist (relative paths are read from {yaml_dir})"
        return None
    local = Path(path).expanduser()
    if kwargs.get("load_from_disk") or path.startswith(("/", ".", "~")):
        return None if local.exists() else f"{label}: folder {local} does not exist"
    if local.exists() or not offline():
        return None
    if hub_dataset_cached(path, kwargs):
        return None
    return (f"{label} is not in the Hugging Face cache ({hub_cache()}) and the network is off "
            f"(HF_HUB_OFFLINE=1); valid: `hf download --repo-type dataset {path}` where there is network "
            "(same HF_HOME), or leave the task out of eval.tasks")


def leaf_configs(manager: Any, name: str, seen: set[str] | None = None) -> Iterator[tuple[str, dict, Path]]:
    """(task, its YAML config with includes, the YAML's folder) of every task a name stands for."""
    from lmms_eval.utils import load_yaml_config

    seen = set() if seen is None else seen
    if name in seen or name not in manager.task_index:
        return
    seen.add(name)
    entry = manager.task_index[name]
    kind, yaml_path = entry.get("type"), entry.get("yaml_path", -1)
    subtasks = entry.get("task")
    if kind == "tag" and isinstance(subtasks, list):
        for sub in subtasks:
            yield from leaf_configs(manager, sub, seen)
        return
    if yaml_path == -1:
        return
    config = load_yaml_config(yaml_path, mode="simple")  # `!function`s are not imported
    if kind == "group" or isinstance(config.get("task"), list):
        for sub in config.get("task") or []:
            if isinstance(sub, str):
                yield from leaf_configs(manager, sub, seen)
            elif isinstance(sub, Mapping) and isinstance(sub.get("task"), str):
                if "dataset_path" in sub:
                    yield sub["task"], dict(sub), Path(yaml_path).parent
                else:
                    yield from leaf_configs(manager, sub["task"], seen)
        return
    yield name, config, Path(yaml_path).parent


def check_task_datasets(manager: Any, names: list[str]) -> None:
    """Raise DatasetUnavailableError (one line naming task and dataset) for the first task that cannot load."""
    for requested in names:
        for task, config, folder in leaf_configs(manager, requested):
            problem = dataset_problem(config, folder)
            if problem is not None:
                within = f" (in '{requested}')" if task != requested else ""
                raise DatasetUnavailableError(f"eval task '{task}'{within} cannot load its documents: {problem}")
