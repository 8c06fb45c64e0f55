"""Every benchmark of the paper's eval suites runs through lmms-eval's own task code on a tiny model.

Each test writes a 2-document local copy of the official task (tests/paper_tasks.py), scores it with
`tamp.eval.evaluate.evaluate` (TampLMM) on a tiny model of the family its table uses, and checks
that lmms-eval's own process_results and aggregation produce every metric as a finite number.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest
import yaml
from paper_tasks import FFMPEG, NO_FFMPEG, PAPER_TASKS, TASKS_ROOT, hf_home, write_local_tasks
from tiny_models import fresh_tiny

from tamp.core.paths import EXPERIMENTS_DIR
from tamp.eval.judges import JUDGED, JudgeRequiredError, check_judges

REPO = Path(__file__).resolve().parents[1]
PAPER_TASKS_ROOT = TASKS_ROOT
SUITES = ("llava_next_suite", "audio_visual_suite", "onevision_suite")
#: modules lmms-eval 0.7.3's task code imports without depending on them: tamp depends on them (pyproject)
NEEDS = {
    "mathvista_testmini": "Levenshtein",  # mathvista_evals.py: `from Levenshtein import distance`
    "llava_interleave_bench_in_domain": "rouge",  # llava_interleave_bench/utils.py: `from rouge import Rouge`
}
SLOW = {"mvbench"}


@pytest.mark.parametrize("task", sorted(NEEDS))
def test_the_scorers_lmms_eval_does_not_install_are_installed(task: str) -> None:
    importlib.import_module(NEEDS[task])  # 20 sub-tasks, each with its own videos


def _suite_tasks() -> set[str]:
    names = {
        n for s in SUITES for n in yaml.safe_load((REPO / "conf/eval" / f"{s}.yaml").read_text())["tasks"]
    }
    for path in EXPERIMENTS_DIR.glob("*.yaml"):
        names |= set((yaml.safe_load(path.read_text()) or {}).get("eval", {}).get("tasks", []))
    return names


@pytest.fixture(scope="module")
def tiny():

    cache: dict[str, object] = {}

    def get(family: str):
        if family not in cache:
            cache[family] = fresh_tiny(family)
        return cache[family]

    return get


def _stub_judge(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """lmms-eval's own judge code path with a stand-in reply ("A"), the API key it checks for set."""
    monkeypatch.setenv("API_TYPE", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key-not-used")
    if name.startswith("mmbench"):
        module = importlib.import_module("lmms_eval.tasks.mmbench.mmbench_evals")
        monkeypatch.setattr(module.MMBench_Evaluator, "get_chat_response", lambda self, prompt, **kw: "A")
    else:
        module = importlib.import_module("lmms_eval.tasks.mathvista.mathvista_evals")
        monkeypatch.setattr(module.MathVistaEvaluator, "get_chat_response", lambda self, prompt, **kw: "A")


def test_every_suite_benchmark_has_a_local_copy():
    missing = _suite_tasks() - set(PAPER_TASKS)
    assert not missing, f"benchmarks named in conf/eval or experiments without a local copy: {missing}"


def _marks(name: str) -> list:
    marks = [pytest.mark.slow] if name in SLOW else []
    if PAPER_TASKS[name].audio_columns:
        marks.append(pytest.mark.skipif(not FFMPEG, reason=NO_FFMPEG))
    return marks


def _delivered(task) -> str:
    """The type the real dataset hands doc_to_visual's caller: what must reach the model."""
    if task.audio_columns:
        return "AudioDecoder"  # datasets 5's decoded Audio() feature (torchcodec)
    return "str" if task.family == "qwen2_5_omni" else "Image"  # video file paths; PIL from Image()


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in PAPER_TASKS])
def test_official_task_scores_on_a_tiny_model(name, tmp_path, monkeypatch, tiny):
    from tamp.eval.doc_media import MediaReader
    from tamp.eval.evaluate import evaluate

    task = PAPER_TASKS[name]
    seen: list[str] = []
    read = MediaReader.read

    def spy(self, visuals):
        items = visuals if isinstance(visuals, (list, tuple)) else [visuals]
        seen.extend(type(v).__name__ for v in items if v is not None)
        return read(self, visuals)

    monkeypatch.setattr(MediaReader, "read", spy)
    monkeypatch.chdir(tmp_path)  # MMBench's and MMMU's aggregations write submission files under ./submissions
    monkeypatch.setenv("HF_HOME", str(hf_home(tmp_path)))  # the video utils read it when lmms-eval loads them
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    if name in JUDGED:
        _stub_judge(monkeypatch, name)
    include = write_local_tasks(tmp_path, [name])
    bundle = tiny(task.family)
    out = evaluate(
        bundle.model,
        bundle.processor,
        bundle.adapter,
        [name],
        include_paths=include,
        batch_size=1,
        gen_kwargs={"max_new_tokens": 4},
        bootstrap_iters=0,
    )
    # a group without aggregate_metric_list (mvbench) reports its sub-tasks only
    scored = {name: out["scores"][name]} if name in out["scores"] else out["scores"]
    assert scored, f"{name} produced no scores"
    for task_name, scores in scored.items():
        for metric in task.metrics:
            assert metric in scores, f"{task_name}: {metric} missing from {sorted(scores)}"
            assert math.isfinite(scores[metric]), f"{task_name}: {metric}={scores[metric]}"
    assert sum(out["n_samples"][t]["effective"] for t in out["n_samples"]) >= 2
    kind = _delivered(task)
    assert seen and all(t == kind or (kind == "Image" and t.endswith("ImageFile")) for t in seen), (
        f"{name}: doc_to_visual handed {sorted(set(seen))}, expected {kind} as the real dataset delivers it"
    )


def test_judged_tasks_are_refused_before_any_work_without_a_key(tmp_path, monkeypatch):
    from tamp.eval.evaluate import evaluate

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("API_TYPE", raising=False)
    include = write_local_tasks(tmp_path, ["mmbench_en_dev"])
    with pytest.raises(JudgeRequiredError) as err:  # no model is needed to fail
        evaluate(None, None, None, ["mmbench_en_dev"], include_paths=include)
    message = str(err.value)
    assert "\n" not in message and "OPENAI_API_KEY" in message and "mmbench_en_dev_static" in message


def test_check_judges_passes_with_a_key_and_for_unjudged_tasks():
    check_judges(["mme", "chartqa", "mmbench_en_dev_static"], env={})
    check_judges(["mathvista_testmini", "mmbench_en_dev"], env={"OPENAI_API_KEY": "k"})
    check_judges(["mmbench_en_dev"], env={"API_TYPE": "azure", "AZURE_API_KEY": "k"})
    with pytest.raises(JudgeRequiredError, match="mathvista_testmini.*drop it offline"):
        check_judges(["mme", "mathvista_testmini"], env={"API_TYPE": "azure", "OPENAI_API_KEY": "k"})


# --------------------------------------------------------------------------------------- generation
def _yaml_max_new_tokens(folder: str, task: str) -> int:
    """The task's own max_new_tokens, read from lmms-eval's installed YAML (includes resolved)."""
    from lmms_eval.utils import load_yaml_config

    for path in sorted((PAPER_TASKS_ROOT / folder).glob("*.yaml")):
        cfg = load_yaml_config(str(path), mode="simple")
        if cfg.get("task") == task:
            return int(cfg["generation_kwargs"]["max_new_tokens"])
    raise KeyError(task)


@pytest.mark.parametrize("name", ["chartqa", "mathvista_testmini"])
def test_each_task_generates_with_its_own_settings_unless_overridden(name, tmp_path, monkeypatch, tiny):
    """No eval.max_new_tokens: generate() gets each task's own max_new_tokens (MathVista's 16,384)."""
    from tamp.eval.evaluate import evaluate

    task = PAPER_TASKS[name]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    if name in JUDGED:
        _stub_judge(monkeypatch, name)
    include = write_local_tasks(tmp_path, [name])
    bundle = tiny(task.family)
    received: list[int] = []
    generate = type(bundle.model).generate

    def spy(model, *args, **kwargs):
        received.append(kwargs["max_new_tokens"])
        return generate(model, *args, **{**kwargs, "max_new_tokens": 2})  # what was asked is recorded

    monkeypatch.setattr(type(bundle.model), "generate", spy)
    kwargs = dict(include_paths=include, batch_size=1, bootstrap_iters=0)
    evaluate(bundle.model, bundle.processor, bundle.adapter, [name], **kwargs)
    own = {_yaml_max_new_tokens(task.folder, t) for t in _official_leaves(task)}
    assert set(received) == own, f"{name}: generate() got {sorted(set(received))}, the task asks {own}"
    received.clear()
    evaluate(bundle.model, bundle.processor, bundle.adapter, [name], gen_kwargs={"max_new_tokens": 5}, **kwargs)
    assert set(received) == {5}  # an explicit override wins everywhere


def _official_leaves(task) -> list[str]:
    from paper_tasks import _members, _official

    return _members(task.name, _official(task.folder))


def test_paper_suites_leave_generation_to_the_tasks(compose_cfg, monkeypatch):
    """eval.max_new_tokens is null in the paper suites, and the runner then passes no override."""
    from tamp.cli import runner
    from tamp.cli.schema import validate

    seen: dict = {}
    monkeypatch.setattr("tamp.eval.evaluate.evaluate", lambda *a, **kw: seen.update(kw) or {})
    import torch

    fabric = type("F", (), {"global_rank": 0, "world_size": 1, "device": torch.device("cpu")})()
    model = torch.nn.Linear(1, 1)  # placed for evaluation (on the Fabric device) before lmms-eval runs
    for suite in SUITES:
        settings = validate(compose_cfg([f"eval={suite}", "model=tiny_llava"]))
        assert settings.eval.max_new_tokens is None, suite
        seen.clear()
        runner.evaluate_model(settings, model, None, None, fabric, None)
        assert seen["gen_kwargs"] is None, suite
        assert (seen["video"].num_frames, seen["video"].fps) == (settings.eval.video.num_frames, settings.eval.video.fps)
    settings = validate(compose_cfg(["eval=llava_next_suite", "eval.max_new_tokens=64"]))
    runner.evaluate_model(settings, model, None, None, fabric, None)
    assert seen["gen_kwargs"] == {"max_new_tokens": 64}
