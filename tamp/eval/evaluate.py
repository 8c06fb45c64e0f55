"""Score a model with lmms-eval: in memory through `TampLMM`, or a saved directory through llava_hf.

lmms-eval is imported inside the functions (about 5 s), so `import tamp` stays fast. The project's
task folders (tamp/eval/tasks) are always on the include path; lmms-eval's ~2000 built-in tasks are
indexed only when a requested name is not one of ours, which keeps the tiny tasks at about a second.
"""

from __future__ import annotations

import difflib
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tamp.eval.batching import DEFAULT_BATCH_SIZE
from tamp.eval.columns import paper_metrics
from tamp.eval.judges import check_judges
from tamp.eval.quiet import quiet_bars
from tamp.eval.task_errors import TaskFailedError, retry_reveals_the_cause  # noqa: F401 - TaskFailedError: raised from here
from tamp.eval.tasks import task_dirs

if TYPE_CHECKING:
    from tamp.eval.doc_media import VideoSampling

#: families whose saved directories lmms-eval's llava_hf wrapper can load (its `model_map`)
LLAVA_HF_MODEL_TYPES = ("llava", "llava_next", "llava_onevision")
_RANK_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
#: huggingface_hub's default when HF_HOME is unset (lmms-eval's video tasks use the same)
DEFAULT_HF_HOME = "~/.cache/huggingface"


class UnknownTaskError(ValueError):
    """A requested task, group or tag is not known to lmms-eval's task manager."""


class TaskExitError(RuntimeError):
    """lmms-eval task code called sys.exit (videomme's and egoschema's utils do on a missing video).

    Raised instead of the SystemExit, which would otherwise end the whole process: a sweep's cell
    fails with this one line and the sweep goes on.
    """


def evaluate(
    model: torch.nn.Module,
    processor: Any,
    adapter: Any,
    tasks: Sequence[str],
    include_paths: Sequence[str] = (),
    limit: int | float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    log_samples: bool = False,
    gen_kwargs: Mapping[str, Any] | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    max_new_tokens: int | None = None,
    bootstrap_iters: int = 1000,
    system_prompt: str | None = None,
    video: VideoSampling | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Run lmms-eval on an in-memory model; see `summarise` for the returned dict.

    `gen_kwargs` override the tasks' generation_kwargs (e.g. {"max_new_tokens": 16}); without them
    each task generates with its own (lmms-eval's YAML), and `max_new_tokens` only fills in where a
    task sets none. `video` (tamp.eval.doc_media.VideoSampling) says how many frames of each video
    are decoded; `device` moves the whole model there first (None: it stays where it is, on one
    device). Under a Lightning Fabric / torch.distributed world each rank scores its shard of
    the documents and every rank gets the gathered result (rank and world size default to
    torch.distributed's).
    """
    manager, names = resolve_tasks(tasks, include_paths)
    check_judges(names)  # a judged task without a judge would retry an unreachable API, then score garbage
    from tamp.eval.lmms_model import DEFAULT_MAX_NEW_TOKENS, TampLMM

    lm = TampLMM(
        model,
        processor,
        adapter,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
        rank=rank,
        world_size=world_size,
        gen_kwargs=gen_kwargs,
        system_prompt=system_prompt,
        video=video,
        device=device,
    )
    return _run(lm, names, manager, limit, log_samples, bootstrap_iters, lm.rank, lm.world_size)


def evaluate_saved(
    model_dir: str | Path,
    tasks: Sequence[str],
    include_paths: Sequence[str] = (),
    limit: int | float | None = None,
    batch_size: int = 1,
    log_samples: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
    force_simple: bool = False,
    bootstrap_iters: int = 1000,
) -> dict[str, Any]:
    """Evaluate a saved LLaVA-family directory with lmms-eval's own `llava_hf` wrapper.

    The check that a pruned checkpoint loads and scores outside tamp, on generation tasks only.
    By default this is the class lmms-eval's CLI picks for `--model llava_hf` (the chat class);
    `force_simple=True` picks the older "simple" one. Limits of llava_hf in lmms-eval 0.7.3 on
    transformers 5 (found on tiny models, CPU):
    - it imports `decord` at module level and lmms-eval does not depend on it (ImportError here);
    - its default `device_map=""` is rejected by from_pretrained, so `device_map=device` is passed;
    - neither class serves loglikelihood (multiple-choice) tasks: the chat task type asserts
      "messages is used for generation only", and the simple class's loglikelihood runs the
      processor on a context holding `<image>` without images, which transformers 5 refuses
      (and lmms-eval 0.7.3 would turn its (loss, greedy) tuples into strings anyway);
    - neither applies the task's `until` strings to the output.
    Such tasks are refused here with one line before the model is loaded.
    """
    import transformers

    model_type = transformers.AutoConfig.from_pretrained(str(model_dir)).model_type
    if model_type not in LLAVA_HF_MODEL_TYPES:
        raise ValueError(
            f"lmms-eval's llava_hf loads {', '.join(LLAVA_HF_MODEL_TYPES)} directories, not '{model_type}' "
            f"({model_dir}); use tamp.eval.evaluate.evaluate(*tamp.models.loading.load_model(dir), ...)"
        )
    manager, names = resolve_tasks(tasks, include_paths)
    check_judges(names)
    scored = [name for name in names if _output_types(manager, name) & {"loglikelihood", "multiple_choice"}]
    if scored:
        raise ValueError(
            f"lmms-eval's llava_hf cannot score loglikelihood/multiple-choice tasks on transformers 5: "
            f"{', '.join(scored)}; evaluate the loaded model with tamp.eval.evaluate.evaluate instead"
        )
    try:
        import decord  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "lmms-eval's llava_hf wrapper imports `decord` at module level and lmms-eval 0.7.3 does not "
            "depend on it: `pip install decord==0.6.0` to evaluate saved directories through llava_hf"
        ) from err
    from lmms_eval import models

    cls = models.get_model("llava_hf", force_simple=force_simple)
    # llava_hf's default device_map="" reaches from_pretrained, which transformers 5 rejects
    lm = cls(pretrained=str(model_dir), device=device, device_map=device, dtype=dtype, batch_size=batch_size)
    return _run(lm, names, manager, limit, log_samples, bootstrap_iters, 0, 1)


# ---------------------------------------------------------------------------------------- tasks
def resolve_tasks(tasks: Sequence[str], include_paths: Sequence[str] = ()) -> tuple[Any, list[str]]:
    """(TaskManager, names): ours only when every name is ours, else with lmms-eval's built-ins.

    An unknown name raises `UnknownTaskError` with one line naming it and the available tasks,
    before any model is built.
    """
    if isinstance(tasks, str):
        tasks = [tasks]
    names = list(tasks)
    if not names:
        raise UnknownTaskError("no lmms-eval task requested")
    # importing lmms_eval.models sets lmms-eval's loguru sink to WARNING (lmms_eval.tasks alone logs DEBUG)
    import lmms_eval.models  # noqa: F401
    from lmms_eval.tasks import TaskManager

    paths = [*task_dirs(), *(str(Path(p).resolve()) for p in include_paths)]
    ours = TaskManager(verbosity="WARNING", include_path=paths, include_defaults=False)
    if all(_self_contained(ours, name) for name in names):
        return ours, names
    everything = TaskManager(verbosity="WARNING", include_path=paths, include_defaults=True)
    missing = [name for name in names if name not in everything.all_tasks]
    if missing:
        raise UnknownTaskError(_unknown_message(missing, ours.all_tasks, everything.all_tasks))
    return everything, names


def _self_contained(manager: Any, name: str) -> bool:
    """Whether `name` and every task a group of it names are in `manager` (tamp's wrappers of built-ins are not)."""
    if name not in manager.all_tasks:
        return False
    entry = manager.task_index[name]
    if entry["type"] != "group" or entry["yaml_path"] == -1:
        return True
    from lmms_eval.utils import load_yaml_config

    members = load_yaml_config(entry["yaml_path"], mode="simple").get("task") or []
    names = [m.get("task") if isinstance(m, dict) else m for m in members]
    return all(isinstance(n, str) and _self_contained(manager, n) for n in names)


def _output_types(manager: Any, name: str) -> set[str]:
    """The output_type of a task, or of every task under a tag or group (read from the YAMLs)."""
    from lmms_eval.utils import load_yaml_config

    entry = manager.task_index[name]
    if entry["type"] in ("tag", "group") and isinstance(entry.get("task"), list):
        return set().union(*(_output_types(manager, t) for t in entry["task"] if t in manager.task_index))
    if entry["yaml_path"] == -1:
        return set()
    config = load_yaml_config(entry["yaml_path"], mode="simple")
    if entry["type"] == "group":
        tasks = [t for t in config.get("task", []) if isinstance(t, str) and t in manager.task_index]
        return set().union(*(_output_types(manager, t) for t in tasks))
    return {config["output_type"]} if isinstance(config.get("output_type"), str) else set()


def _unknown_message(missing: list[str], ours: list[str], everything: list[str]) -> str:
    close = sorted(
        {c for name in missing for c in difflib.get_close_matches(name, everything, n=5, cutoff=0.6)}
    )
    builtin = len(set(everything) - set(ours))
    hint = f"; close matches: {', '.join(close)}" if close else ""
    return (
        f"unknown lmms-eval task {', '.join(repr(m) for m in missing)}{hint}; available: "
        f"{', '.join(ours)} (tamp's) and {builtin} lmms-eval built-ins (`python -m lmms_eval --tasks list`)"
    )


# ---------------------------------------------------------------------------------------- running
def _run(
    lm: Any,
    names: list[str],
    manager: Any,
    limit: int | float | None,
    log_samples: bool,
    bootstrap_iters: int,
    rank: int,
    world_size: int,
) -> dict[str, Any]:
    """simple_evaluate with the rank variables lmms-eval reads set, and the caller's RNG kept."""
    from lmms_eval.evaluator import simple_evaluate

    dist = torch.distributed
    distributed = world_size > 1
    initialised = dist.is_available() and dist.is_initialized()
    if distributed and not initialised:
        raise RuntimeError(
            f"world_size={world_size} needs torch.distributed initialised (e.g. by Fabric.launch())"
        )
    if initialised and dist.get_world_size() != world_size:
        # simple_evaluate calls dist.barrier() whenever a process group exists: one rank alone hangs
        raise RuntimeError(
            f"torch.distributed has {dist.get_world_size()} ranks but evaluation was asked for "
            f"world_size={world_size}: every rank must call it (lmms-eval synchronises them)"
        )
    # lmms-eval's video utils read $HF_HOME (nextqa's with os.environ["HF_HOME"]: a KeyError when unset)
    os.environ.setdefault("HF_HOME", os.path.expanduser(DEFAULT_HF_HOME))
    with (_rank_environment(rank, world_size), _preserved_rng(), quiet_bars(), _task_exit_is_an_error(names),
          retry_reveals_the_cause(names)):  # lmms-eval's @retry hides the task's own exception
        raw = simple_evaluate(
            model=lm,
            tasks=names,
            task_manager=manager,
            limit=limit,
            log_samples=log_samples,
            bootstrap_iters=bootstrap_iters,
            # "torchrun" uses torch.distributed directly (Fabric's process group); "accelerate"
            # would build an Accelerator, which Fabric-launched processes do not expect
            distributed_executor_backend="torchrun",
            process_docs_parallel=1,
            verbosity="WARNING",
        )
    result = summarise(raw, log_samples) if raw is not None else None
    if distributed:
        box = [result]
        dist.broadcast_object_list(box, src=0)
        result = box[0]
    return result


def summarise(raw: Mapping[str, Any], log_samples: bool = False) -> dict[str, Any]:
    """The parts of lmms-eval's result dict tamp records.

    scores: {task: {"metric,filter": number}}; stderr: the same for "metric_stderr,filter";
    primary_metric: {task: "metric,filter"} from the first entry of the task's metric_list, or the
    list of the paper's column metrics for a task the paper reads several of (MME: cognition and
    perception, tamp.eval.columns); versions, n_samples, higher_is_better; groups (lmms-eval's
    group -> sub-tasks); samples (per-document logs) when log_samples.
    """
    scores: dict[str, dict[str, float]] = {}
    stderr: dict[str, dict[str, float]] = {}
    for task, values in raw.get("results", {}).items():
        for key, value in values.items():
            if not _is_number(value) or "," not in key:
                continue
            target = stderr if "_stderr" in key.split(",")[0] else scores
            target.setdefault(task, {})[key] = float(value)
    primary = {
        task: _primary_metric(task, raw.get("configs", {}).get(task, {}), scores.get(task, {})) for task in scores
    }
    out: dict[str, Any] = {
        "scores": scores,
        "stderr": stderr,
        "primary_metric": {task: key for task, key in primary.items() if key is not None},
        "versions": dict(raw.get("versions", {})),
        "n_samples": dict(raw.get("n-samples", {})),
        "higher_is_better": dict(raw.get("higher_is_better", {})),
        # lmms-eval's group -> sub-tasks (mvbench -> its 20 tasks): what a group column averages
        "groups": {g: list(subs) for g, subs in (raw.get("group_subtasks") or {}).items() if subs},
    }
    if log_samples:
        out["samples"] = raw.get("samples", {})
    return out


def _primary_metric(task: str, config: Mapping[str, Any], scores: Mapping[str, float]) -> str | list[str] | None:
    metrics = config.get("metric_list") or []
    filters = config.get("filter_list") or []
    filter_name = filters[0]["name"] if filters and isinstance(filters[0], Mapping) else "none"
    paper = paper_metrics(task, scores, filter_name)
    if paper:
        return paper
    if metrics:
        key = f"{metrics[0]['metric']},{filter_name}"
        if key in scores:
            return key
        matching = [k for k in scores if k.split(",")[0] == metrics[0]["metric"]]
        if matching:
            return matching[0]
    return next(iter(scores), None)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@contextmanager
def _task_exit_is_an_error(names: Sequence[str]) -> Iterator[None]:
    """A SystemExit from task code becomes a TaskExitError naming the tasks and the code's message."""
    try:
        yield
    except SystemExit as exit_:
        code = exit_.code
        reason = f"sys.exit({code!r})" if not isinstance(code, str) else code
        raise TaskExitError(
            f"lmms-eval task code exited while scoring {', '.join(names)}: {reason}"
        ) from None


@contextmanager
def _rank_environment(rank: int, world_size: int) -> Iterator[None]:
    """RANK / WORLD_SIZE / LOCAL_RANK as lmms-eval's evaluator reads them, restored afterwards."""
    saved = {name: os.environ.get(name) for name in _RANK_VARS}
    local = os.environ.get("LOCAL_RANK", str(rank)) if world_size > 1 else "0"
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=local)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _preserved_rng() -> Iterator[None]:
    """simple_evaluate reseeds python, numpy and torch; give the caller its streams back."""
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
