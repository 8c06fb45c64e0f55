"""Few-document local copies of the paper's lmms-eval benchmarks, run through lmms-eval's own task code.

The real datasets live on the Hub; here each benchmark gets 2-4 documents with the columns and media
its official utils.py reads, stored as the real releases store them: images in an `Image()` feature
(datasets hands doc_to_visual PIL images), audio as wav files in an `Audio()` feature (datasets 5
decodes it with torchcodec into an `AudioDecoder`, which is what reaches the model), and the video
benchmarks' mp4 files on disk under $HF_HOME, where their utils look (written with PyAV). Decoding
the Audio() columns needs FFmpeg's shared libraries (`FFMPEG`, tests skip without them).

`write_local_tasks(root)` writes, per official task, a YAML that `include:`s the installed YAML by
absolute path and overrides only where the documents come from (`dataset_path: parquet`,
`dataset_kwargs.data_files`, no `dataset_name`): doc_to_visual, doc_to_text, generation kwargs,
process_results and aggregation stay lmms-eval's (a `!function` resolves next to the YAML that
declares it, i.e. in the installed package). Groups (mvbench, blink, mathvista_testmini) get a copy
of their group YAML and an override per sub-task; tamp's own groups of built-ins (tamp_mathvista_testmini,
tamp/eval/tasks/paper) keep tamp's group YAML and get an override per member. Video tasks find their files under $HF_HOME (the
utils read it when lmms-eval loads them), so `hf_home(root)` must be exported before evaluating.
"""

from __future__ import annotations

import ast
import io
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmms_eval.tasks as _tasks_pkg
import numpy as np
import yaml
from PIL import Image, ImageDraw

TASKS_ROOT = Path(_tasks_pkg.__file__).resolve().parent
FAMILY = {"table2": "llava_next", "table3": "qwen2_5_omni", "table5": "llava_onevision"}
N_DOCS = 2

Rows = Callable[[str, dict[str, Any], Path], list[dict[str, Any]]]


@dataclass(frozen=True)
class PaperTask:
    """One suite entry: its lmms-eval folder, the tiny family that scores it, its metric keys."""

    name: str
    folder: str
    family: str
    rows: Rows
    metrics: tuple[str, ...]
    #: tamp's own group of built-in tasks (tamp/eval/tasks/paper): its members, copied locally; the group is tamp's
    members: tuple[str, ...] = ()
    audio_columns: tuple[str, ...] = ()  # stored with datasets' Audio() feature, as the real release


# ------------------------------------------------------------------------------------ media
def image(seed: int, side: int = 48) -> Image.Image:
    """A seeded coloured rectangle on white (any picture will do: the model is random)."""
    rng = np.random.default_rng(seed)
    picture = Image.new("RGB", (side, side), "white")
    x0, y0 = (int(v) for v in rng.integers(0, side // 2, size=2))
    colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
    ImageDraw.Draw(picture).rectangle([x0, y0, x0 + side // 3, y0 + side // 3], fill=colour)
    return picture


def write_video(path: Path, seed: int, frames: int = 8, side: int = 32) -> Path:
    """A short mpeg4 clip written with PyAV (lmms-eval's video utils only pass the path on)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            frame = av.VideoFrame.from_image(image(seed * 100 + t, side))
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def audio(seed: int, seconds: float = 0.5, rate: int = 22050) -> dict[str, Any]:
    """An undecoded HF Audio value: a 16-bit wav file (a tone and a little noise) and its name.

    22.05 kHz, not the models' 16 kHz, so the resampling on the way to the processor is exercised.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * (220 + 110 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((tone * 32767).astype(np.int16).tobytes())
    return {"bytes": buffer.getvalue(), "path": f"tone_{seed}.wav"}


def ffmpeg_version() -> int | None:
    """The FFmpeg major version torchcodec loaded; None when its shared libraries are missing."""
    from tamp.eval.hazards import ffmpeg_major_version

    return ffmpeg_major_version()


FFMPEG = ffmpeg_version() is not None
NO_FFMPEG = ("FFmpeg's shared libraries (4-9) are not installed: torchcodec, which datasets 5 decodes "
             "Audio() features with, needs them (`make system-deps` or apt-get install ffmpeg)")


def hf_home(root: Path) -> Path:
    """Where the video tasks' utils look for their files ($HF_HOME/<cache_dir>/...)."""
    return root / "hf_home"


# ------------------------------------------------------------------------------------ documents
def _mme(task: str, cfg: dict, root: Path) -> list[dict]:
    categories = ["existence", "code_reasoning"]  # one perception, one cognition category
    return [
        {
            "question_id": f"q{i // 2}.png",
            "question": "Is there a square in the image? Please answer yes or no.",
            "answer": "Yes" if i % 2 == 0 else "No",
            "category": categories[i // 2],
            "image": image(i),
        }
        for i in range(4)
    ]


def _ai2d(task: str, cfg: dict, root: Path) -> list[dict]:
    return [
        {
            "question": "Which shape is drawn?",
            "options": ["square", "circle", "line", "star"],
            "answer": str(i % 4),
            "image": image(i),
        }
        for i in range(N_DOCS)
    ]


def _mmmu(task: str, cfg: dict, root: Path) -> list[dict]:
    rows = []
    for i in range(N_DOCS):
        mc = i % 2 == 0
        rows.append(
            {
                "id": f"validation_Art_{i + 1}",
                "question": "<image 1> What is drawn here?",
                "options": str(["a square", "a circle", "a line", "a star"]) if mc else "[]",
                "answer": "A" if mc else "square",
                "question_type": "multiple-choice" if mc else "open",
                "image_1": image(i),
                **{f"image_{k}": None for k in range(2, 8)},
            }
        )
    return rows


def _mathvista(task: str, cfg: dict, root: Path) -> list[dict]:
    meta = {
        "split": "testmini",
        "language": "english",
        "source": "tamp",
        "category": "general-vqa",
        "task": "figure question answering",
        "context": "synthetic scene",
        "grade": "daily life",
        "skills": ["arithmetic reasoning"],
    }
    return [
        {
            "pid": str(i + 1),
            "question": "Which shape is drawn?",
            "query": "Which shape is drawn? Choices: square, circle",
            "question_type": "multi_choice",
            "answer_type": "text",
            "choices": ["square", "circle"],
            "answer": "square",
            "unit": "",
            "precision": None,
            "metadata": meta,
            "decoded_image": image(i),
        }
        for i in range(N_DOCS)
    ]


def _chartqa(task: str, cfg: dict, root: Path) -> list[dict]:
    return [
        {
            "question": "What is the highest value?",
            "answer": "42",
            "type": "human_test" if i % 2 == 0 else "augmented_test",
            "image": image(i),
        }
        for i in range(N_DOCS)
    ]


def _mmbench(task: str, cfg: dict, root: Path) -> list[dict]:
    return [
        {
            "index": i,
            "question": "Which shape is drawn?",
            "hint": None,
            "A": "square",
            "B": "circle",
            "C": "line",
            "D": "star",
            "answer": "A",
            "category": "object_localization",
            "L2-category": "finegrained_perception (instance-level)",
            "source": "tamp",
            "split": "dev",
            "image": image(i),
        }
        for i in range(N_DOCS)
    ]


def _clotho(task: str, cfg: dict, root: Path) -> list[dict]:
    return [{"question": "Is there a tone?", "answer": "yes", "audio": audio(i)} for i in range(N_DOCS)]


def _vocalsound(task: str, cfg: dict, root: Path) -> list[dict]:
    return [
        {"answer": ["Laughter", "Cough"][i % 2], "age_group": "adult", "spk_id": f"s{i}", "audio": audio(i)}
        for i in range(N_DOCS)
    ]


def _muchomusic(task: str, cfg: dict, root: Path) -> list[dict]:
    return [
        {
            "instruction": "Which instrument plays?",
            "choices": ["piano", "guitar", "drums", "violin"],
            "answer": "(A) piano",
            "context": audio(i),
        }
        for i in range(N_DOCS)
    ]


def _videomme(task: str, cfg: dict, root: Path) -> list[dict]:
    rows = []
    for i in range(N_DOCS):
        write_video(hf_home(root) / cfg["dataset_kwargs"]["cache_dir"] / "data" / f"vid{i}.mp4", i)
        rows.append(
            {
                "videoID": f"vid{i}",
                "question_id": f"{i}-1",
                "duration": "short",
                "domain": "Knowledge",
                "sub_category": "Humanity & History",
                "task_type": "Counting Problem",
                "question": "How many squares appear?",
                "options": ["A. 1", "B. 2", "C. 3", "D. 4"],
                "answer": "A",
            }
        )
    return rows


def _egoschema(task: str, cfg: dict, root: Path) -> list[dict]:
    rows = []
    for i in range(N_DOCS):
        write_video(hf_home(root) / cfg["dataset_kwargs"]["cache_dir"] / "videos" / f"ego{i}.mp4", i)
        rows.append(
            {
                "video_idx": f"ego{i}",
                "question": "What does the camera wearer do?",
                "option": ["cooks", "reads", "walks", "sleeps", "paints"],
                "answer": "0",
            }
        )
    return rows


def _nextqa(task: str, cfg: dict, root: Path) -> list[dict]:
    rows = []
    for i in range(N_DOCS):
        write_video(hf_home(root) / cfg["dataset_kwargs"]["cache_dir"] / "NExTVideo" / f"{1000 + i}.mp4", i)
        rows.append(
            {
                "video": str(1000 + i),
                "question": "what happens at the start",
                **{f"a{k}": f"option {k}" for k in range(5)},
                "answer": i % 5,
            }
        )
    return rows


def _mvbench(task: str, cfg: dict, root: Path) -> list[dict]:
    source = (TASKS_ROOT / "mvbench" / "utils.py").read_text()
    folders = ast.literal_eval(source.split("DATA_LIST = ", 1)[1].split("\n}\n", 1)[0] + "\n}")
    folder = folders[cfg["lmms_eval_specific_kwargs"]["default"]["sub_task"]]
    cache = hf_home(root) / cfg["dataset_kwargs"]["cache_dir"] / folder
    return [
        {
            "video": write_video(cache / f"{task}_{i}.mp4", i).name,
            "question": "What moves?",
            "candidates": ["the square", "the circle", "nothing"],
            "answer": "the square",
        }
        for i in range(N_DOCS)
    ]


def _muirbench(task: str, cfg: dict, root: Path) -> list[dict]:
    return [
        {
            "idx": str(i),
            "task": "Counting",
            "image_relation": "Independent",
            "image_type": "Photo",
            "question": "Which image shows a square? <image> <image>",
            "options": ["first", "second"],
            "answer": "A",
            "image_list": [image(i), image(i + 10)],
        }
        for i in range(N_DOCS)
    ]


def _mantis(task: str, cfg: dict, root: Path) -> list[dict]:
    return [
        {
            "id": str(i),
            "question_type": "multi-choice",
            "question": "Which image shows a square?",
            "options": "\n(A) first\n(B) second",
            "answer": "A",
            "images": [image(i), image(i + 10)],
        }
        for i in range(N_DOCS)
    ]


def _blink(task: str, cfg: dict, root: Path) -> list[dict]:
    return [
        {
            "idx": f"{task}_{i}",
            "question": "Which image is brighter?",
            "sub_task": cfg.get("dataset_name", task),
            "choices": ["(A) first", "(B) second"],
            "answer": "(A)",
            "prompt": "Which image is brighter?\n(A) first\n(B) second",
            "image_1": image(i),
            "image_2": image(i + 10),
            "image_3": None,
            "image_4": None,
        }
        for i in range(N_DOCS)
    ]


def _interleave(task: str, cfg: dict, root: Path) -> list[dict]:
    kinds = [("multi-choice", "A", "Spot-the-Diff"), ("open-ended", "a red square", "IEdit")]
    return [
        {
            "sample_id": str(i),
            "sub_task": kinds[i % 2][2],
            "question_type": kinds[i % 2][0],
            "question": "What differs between the images?\nA. colour\nB. size",
            "answer": kinds[i % 2][1],
            "conversations": "[]",
            "image_0": image(i),
            "image_1": image(i + 10),
        }
        for i in range(N_DOCS)
    ]


PAPER_TASKS: dict[str, PaperTask] = {
    t.name: t
    for t in [
        # Table 2 (LLaVA-NeXT): conf/eval/llava_next_suite.yaml
        PaperTask(
            "mme", "mme", "llava_next", _mme, ("mme_perception_score,none", "mme_cognition_score,none")
        ),
        PaperTask("ai2d", "ai2d", "llava_next", _ai2d, ("exact_match,flexible-extract",)),
        PaperTask("mmmu_val", "mmmu", "llava_next", _mmmu, ("mmmu_acc,none",)),
        PaperTask("mathvista_testmini", "mathvista", "llava_next", _mathvista, ("llm_as_judge_eval,none",)),
        PaperTask(
            "tamp_mathvista_testmini",
            "mathvista",
            "llava_next",
            _mathvista,
            ("llm_as_judge_eval,none",),
            members=("mathvista_testmini_format",),
        ),
        PaperTask("chartqa", "chartqa", "llava_next", _chartqa, ("relaxed_overall,none",)),
        PaperTask("mmbench_en_dev", "mmbench", "llava_next", _mmbench, ("gpt_eval_score,none",)),
        PaperTask("mmbench_en_dev_static", "mmbench", "llava_next", _mmbench, ("gpt_eval_score,none",)),
        # Table 3 (Qwen2.5-Omni): conf/eval/audio_visual_suite.yaml
        PaperTask("clotho_aqa_test", "clotho_aqa", "qwen2_5_omni", _clotho, ("exact_match,none",), audio_columns=("audio",)),
        PaperTask("vocalsound_test", "vocalsound", "qwen2_5_omni", _vocalsound, ("accuracy,none",), audio_columns=("audio",)),
        PaperTask("muchomusic", "muchomusic", "qwen2_5_omni", _muchomusic, ("accuracy,none",), audio_columns=("context",)),
        PaperTask("videomme", "videomme", "qwen2_5_omni", _videomme, ("videomme_perception_score,none",)),
        PaperTask("egoschema_subset", "egoschema", "qwen2_5_omni", _egoschema, ("score,none",)),
        PaperTask("nextqa_mc_test", "nextqa", "qwen2_5_omni", _nextqa, ("exact_match,none",)),
        PaperTask("mvbench", "mvbench", "qwen2_5_omni", _mvbench, ("mvbench_accuracy,none",)),
        # Table 5 (LLaVA-OneVision): conf/eval/onevision_suite.yaml (and its video tasks above)
        PaperTask(
            "muirbench",
            "muirbench",
            "llava_onevision",
            _muirbench,
            ("muirbench_score_overall,flexible-extract",),
        ),
        PaperTask("mantis", "mantis", "llava_onevision", _mantis, ("mantis_score,none",)),
        PaperTask("blink", "blink", "llava_onevision", _blink, ("blink_acc,none",)),
        PaperTask(
            "llava_interleave_bench_in_domain",
            "llava_interleave_bench",
            "llava_onevision",
            _interleave,
            ("overall_score,none",),
        ),
    ]
}


# ------------------------------------------------------------------------------------ task YAMLs
def _simple(path: Path) -> dict[str, Any]:
    from lmms_eval.utils import load_yaml_config

    return load_yaml_config(str(path), mode="simple")


def _official(folder: str) -> dict[str, tuple[Path, dict[str, Any]]]:
    """{task or group name: (yaml path, config with includes resolved)} in one lmms-eval folder."""
    out = {}
    for path in sorted((TASKS_ROOT / folder).glob("*.yaml")):
        cfg = _simple(path)
        for key in ("task", "group"):
            if isinstance(cfg.get(key), str):
                out[cfg[key]] = (path, cfg)
    return out


def _members(name: str, index: dict[str, tuple[Path, dict[str, Any]]]) -> list[str]:
    """The single tasks under a task, group or tag of this folder."""
    path, cfg = index.get(name, (None, {}))
    if isinstance(cfg.get("task"), str):
        return [name]
    if isinstance(cfg.get("task"), list):
        return [m for entry in cfg["task"] for m in _members(entry, index)]
    tagged = [
        t
        for t, (_, c) in index.items()
        if name in ([c["tag"]] if isinstance(c.get("tag"), str) else c.get("tag") or [])
    ]
    if not tagged:
        raise KeyError(f"{name} is no task, group or tag of lmms-eval's folder")
    return tagged


def write_task(task: PaperTask, root: Path) -> Path:
    """The local copy of one suite entry under root/tasks/<name>/; returns that folder."""
    import datasets

    index = _official(task.folder)
    folder = root / "tasks" / task.name
    folder.mkdir(parents=True, exist_ok=True)
    if task.name in index and not isinstance(index[task.name][1].get("task"), str):  # a group: copy it as is
        (folder / "group.yaml").write_text(index[task.name][0].read_text())
    for member in task.members or _members(task.name, index):
        path, cfg = index[member]
        data = root / "data" / f"{member}.parquet"
        data.parent.mkdir(parents=True, exist_ok=True)
        table = datasets.Dataset.from_list(task.rows(member, cfg, root))
        for column in task.audio_columns:
            table = table.cast_column(column, datasets.Audio())
        table.to_parquet(str(data))
        override = {
            "include": str(path),
            "task": member,
            "dataset_path": "parquet",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {cfg["test_split"]: str(data)}},
        }
        (folder / f"{member}.yaml").write_text(yaml.safe_dump(override, sort_keys=False))
    return folder


def write_local_tasks(root: Path, names: list[str]) -> list[str]:
    """Local copies of `names` under root; returns the include paths for tamp's evaluate()."""
    return [str(write_task(PAPER_TASKS[name], root)) for name in names]
