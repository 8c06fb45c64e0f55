"""Offline hazards of lmms-eval's own task code are caught before any pruning, one line each.

The checks read lmms-eval's installed task YAMLs and code (videomme, egoschema, nextqa, mvbench,
clotho_aqa, chartqa), with $HF_HOME and NLTK's data folders pointed at temporary folders.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tamp.eval import hazards
from tamp.eval.hazards import TaskHazardError, check_task_hazards, leaf_tasks, nltk_missing

TASKS = ["videomme", "egoschema_subset", "nextqa_mc_test", "mvbench", "clotho_aqa_test", "chartqa"]
NLTK = ("averaged_perceptron_tagger", "wordnet", "punkt")  # what nextqa's utils download on import


@pytest.fixture(scope="module")
def manager():
    from tamp.eval.evaluate import resolve_tasks

    return resolve_tasks(TASKS)[0]


@pytest.fixture
def nltk_data(tmp_path, monkeypatch):
    import nltk

    folder = tmp_path / "nltk_data"
    folder.mkdir()
    monkeypatch.setattr(nltk.data, "path", [str(folder)])
    return folder


def _with_nltk(folder: Path) -> None:
    for kind, name in (("taggers", NLTK[0]), ("corpora", f"{NLTK[1]}.zip"), ("tokenizers", NLTK[2])):
        (folder / kind).mkdir(exist_ok=True)
        target = folder / kind / name
        target.write_bytes(b"") if name.endswith(".zip") else target.mkdir()


def _videos(home: Path, *folders: str) -> None:
    for folder in folders:
        (home / folder).mkdir(parents=True, exist_ok=True)
        (home / folder / "clip.mp4").write_bytes(b"")


def _line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_groups_expand_to_their_tasks(manager):
    names = [name for name, _ in leaf_tasks(manager, ["mvbench", "chartqa"])]
    assert len(names) == 21 and names[-1] == "chartqa" and all(n.startswith("mvbench_") for n in names[:20])


def test_missing_video_folder_is_one_line_naming_task_and_folder(manager, tmp_path, nltk_data):
    _with_nltk(nltk_data)
    with pytest.raises(TaskHazardError) as err:
        check_task_hazards(manager, ["videomme"], {"HF_HOME": str(tmp_path)})
    line = _line(err)
    assert line.startswith("eval task videomme reads its videos under $HF_HOME/videomme")
    assert str(tmp_path / "videomme") in line and "does not exist" in line
    (tmp_path / "videomme" / "data").mkdir(parents=True)
    with pytest.raises(TaskHazardError, match="holds no video file"):
        check_task_hazards(manager, ["videomme"], {"HF_HOME": str(tmp_path)})
    _videos(tmp_path, "videomme/data")
    check_task_hazards(manager, ["videomme"], {"HF_HOME": str(tmp_path)})


def test_every_problem_is_counted_in_the_line(manager, tmp_path, nltk_data):
    with pytest.raises(TaskHazardError) as err:
        check_task_hazards(manager, TASKS, {"HF_HOME": str(tmp_path)})
    line = _line(err)
    assert line.startswith("eval task videomme") and "more: egoschema_subset, nextqa_mc_test, mvbench_" in line


def test_nltk_download_on_import_is_caught_when_the_data_is_missing(manager, tmp_path, nltk_data):
    _videos(tmp_path, "nextqa/NExTVideo")
    with pytest.raises(TaskHazardError) as err:
        check_task_hazards(manager, ["nextqa_mc_test"], {"HF_HOME": str(tmp_path)})
    line = _line(err)
    assert "eval task nextqa_mc_test" in line and "nltk.download(" in line
    assert "python -m nltk.downloader averaged_perceptron_tagger wordnet punkt" in line
    _with_nltk(nltk_data)
    assert nltk_missing(NLTK) == []
    check_task_hazards(manager, ["nextqa_mc_test"], {"HF_HOME": str(tmp_path)})


def test_audio_tasks_need_ffmpeg_for_datasets_audio_feature(manager, monkeypatch):
    monkeypatch.setattr(hazards, "ffmpeg_major_version", lambda: None)
    with pytest.raises(TaskHazardError) as err:
        check_task_hazards(manager, ["clotho_aqa_test"], {})
    assert "eval task clotho_aqa_test reads audio" in _line(err) and "apt-get install ffmpeg" in _line(err)
    check_task_hazards(manager, ["chartqa"], {})  # an image task decodes no audio
    monkeypatch.setattr(hazards, "ffmpeg_major_version", lambda: 5)
    check_task_hazards(manager, ["clotho_aqa_test"], {})


def test_the_run_stops_before_loading_the_model(manager, compose_cfg, tmp_path, monkeypatch):
    """A hazard in the pre-run check (tamp.cli.preflight): failed results.json, nothing pruned, no model loaded."""
    from tamp.cli import runner
    from tamp.cli.run_command import run
    from tamp.eval import evaluate

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(runner, "load_named_model", never)
    monkeypatch.setattr(evaluate, "resolve_tasks", lambda tasks, paths: (manager, list(tasks)))  # indexed once
    monkeypatch.setattr("tamp.eval.availability.check_task_datasets", lambda manager, names: None)  # not cached here
    cfg = compose_cfg(["model=tiny_llava", "calib=tiny", "eval.tasks=[egoschema_subset]", "logger=none",
                       f"+eval.env.HF_HOME={tmp_path / 'hf'}"])
    run_dir = tmp_path / "run"
    with pytest.raises(TaskHazardError, match="eval task egoschema_subset reads its videos"):
        run(cfg, run_dir)
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "failed" and "egoschema_subset" in record["error"]
    assert not (run_dir / "checkpoint").exists() and not (run_dir / "prune_report.md").exists()
