"""Bad files and names fail in one line naming the file, record or key, exit 2, before any heavy work.

Every case runs the real CLI entry (`tamp.cli.run_command.cli`, what `python -m tamp.run` runs) on files
built here from the tiny models: a model folder whose weights were cut short or overwritten, a
garbage config.json or checkpoint progress marker, a truncated checkpoint block, a cut-off PNG, a
folder where an image should be, a family that does not match the folder, a Hub id that is not
cached offline, an eval task whose dataset is not on this machine. Each must print exactly one
stderr line that names the culprit, exit with status 2, write nothing and leave every file of the
user's (the model folder included) byte-identical. One case also runs as a separate process; the
last tests call the library directly, past the CLI's check (its own one-line errors).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import save_file
from tiny_models import fresh_tiny

from tamp.models.tiny import save_tiny
from tamp.tracking.run_record import INTERRUPTED, RunRecord

REPO = Path(__file__).resolve().parents[1]
QUIET = ["logger=none", "runner.progress=false"]


# ------------------------------------------------------------------------------------ user files
@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "llava"
    save_tiny(fresh_tiny("llava"), folder)
    return folder


def _model(tmp: Path, tiny: Path, damage: Callable[[Path], None] | None = None) -> Path:
    folder = tmp / "my_model"
    shutil.copytree(tiny, folder)
    if damage is not None:
        damage(folder)
    return folder


def _cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _calib(tmp: Path, image: str) -> Path:
    record = {"id": "rec1", "image": image,
              "conversations": [{"from": "human", "value": "<image>\nwhat colour?"}, {"from": "gpt", "value": "red"}]}
    path = tmp / "calib.json"
    path.write_text(json.dumps([record]))
    return path


def _png(tmp: Path, name: str = "red.png") -> Path:
    path = tmp / name
    noise = Image.effect_noise((64, 64), 60).convert("RGB")  # incompressible: a cut lands inside the pixels
    noise.save(path)
    return path


def _interrupted_run(tmp: Path, compose: Callable, args: list[str]) -> Path:
    """A run folder as an interrupted run leaves it: results.json `interrupted` with its config, a checkpoint."""
    run_dir = tmp / "run"
    cfg = compose(args)
    RunRecord(status=INTERRUPTED, config=OmegaConf.to_container(cfg, resolve=True)).write(run_dir / "results.json")
    checkpoint = run_dir / "checkpoint"
    checkpoint.mkdir()
    save_file({"w": torch.zeros(64, 64)}, str(checkpoint / "block_0000.safetensors"))
    progress = {"fingerprint": "f", "plan": {"w": 0.5}, "plan_state": {}, "completed_blocks": 1, "rng": []}
    (checkpoint / "progress.json").write_text(json.dumps(progress))
    return run_dir


def _task_folder(tmp: Path, dataset: str, data_files: str | None = None) -> Path:
    folder = tmp / "my_tasks"
    folder.mkdir()
    lines = ["task: my_task", f"dataset_path: {dataset}", "test_split: test", "output_type: generate_until",
             "doc_to_text: question", "doc_to_target: answer", "metric_list:", "  - metric: exact_match"]
    if data_files:
        lines += ["dataset_kwargs:", "  data_files:", f"    test: {data_files}"]
    (folder / "my_task.yaml").write_text("\n".join(lines) + "\n")
    return folder


# ------------------------------------------------------------------------------------ the table
# (id, setup(tmp, tiny, compose) -> (arguments, fragments the one line must hold))
Setup = Callable[[Path, Path, Callable], tuple[list[str], list[str]]]


def _weights_cut(tmp, tiny, compose):
    folder = _model(tmp, tiny, lambda f: _cut(f / "model.safetensors"))
    return [f"model.name={folder}"], [str(folder / "model.safetensors"), "truncated"]


def _weights_garbage(tmp, tiny, compose):
    folder = _model(tmp, tiny, lambda f: (f / "model.safetensors").write_bytes(os.urandom(4096)))
    return [f"model.name={folder}"], [str(folder / "model.safetensors"), "not safetensors"]


def _weights_header_cut(tmp, tiny, compose):
    folder = _model(tmp, tiny, lambda f: _cut(f / "model.safetensors", 0.0005))
    return [f"model.name={folder}"], [str(folder / "model.safetensors")]


def _shard_missing(tmp, tiny, compose):
    def damage(folder: Path) -> None:
        index = {"metadata": {}, "weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    folder = _model(tmp, tiny, damage)
    return [f"model.name={folder}"], [str(folder / "model-00002-of-00002.safetensors"), "missing"]


def _weights_gone(tmp, tiny, compose):
    folder = _model(tmp, tiny, lambda f: (f / "model.safetensors").unlink())
    return [f"model.name={folder}"], [str(folder), "no weight files"]


def _config_garbage(tmp, tiny, compose):
    folder = _model(tmp, tiny, lambda f: (f / "config.json").write_text("{not json"))
    return [f"model.name={folder}"], [str(folder / "config.json"), "not valid JSON"]


def _family_mismatch(tmp, tiny, compose):
    folder = _model(tmp, tiny)
    return [f"model.name={folder}", "model.family=qwen2_vl"], ["model.family=qwen2_vl", "model_type 'llava'", str(folder)]


def _hub_id_offline(tmp, tiny, compose):
    return ["model.name=foo/bar"], ["'foo/bar'", "hf download foo/bar"]


def _paper_model_offline(tmp, tiny, compose):
    return ["model=llava_next_8b", "runner=cpu"], ["llava-hf/llama3-llava-next-8b-hf", "hf download"]


def _empty_model_name(tmp, tiny, compose):
    return ["model.name=''"], ["model.name is empty"]


def _empty_method_name(tmp, tiny, compose):
    return ["method.name=''"], ["method.name is empty"]


def _include_path_missing(tmp, tiny, compose):
    return ["eval.tasks=[tamp_tiny_colour]", f"eval.include_paths=[{tmp / 'nope'}]"], \
        ["eval.include_paths", str(tmp / "nope"), "does not exist"]


def _include_path_file(tmp, tiny, compose):
    (tmp / "tasks.yaml").write_text("task: x\n")
    return ["eval.tasks=[tamp_tiny_colour]", f"eval.include_paths=[{tmp / 'tasks.yaml'}]"], \
        ["eval.include_paths", "tasks.yaml", "is a file"]


def _media_folder(tmp, tiny, compose):
    (tmp / "images").mkdir()
    path = _calib(tmp, "images")
    return ["model.name=tiny:llava", "calib.source=llava_json", f"calib.path={path}", "calib.num_samples=1"], \
        ["'rec1'", str(tmp / "images"), "is a folder"]


def _png_cut(tmp, tiny, compose):
    _cut(_png(tmp, "cut.png"))
    path = _calib(tmp, "cut.png")
    return ["model.name=tiny:llava", "calib.source=llava_json", f"calib.path={path}", "calib.num_samples=1"], \
        ["'rec1'", str(tmp / "cut.png"), "cannot be decoded"]


def _progress_garbage(tmp, tiny, compose):
    run_dir = _interrupted_run(tmp, compose, QUIET)
    (run_dir / "checkpoint" / "progress.json").write_text("\x00garbage{")
    return [*QUIET, f"hydra.run.dir={run_dir}"], [str(run_dir / "checkpoint" / "progress.json")]


def _progress_garbage_resume(tmp, tiny, compose):
    run_dir = _interrupted_run(tmp, compose, QUIET)
    (run_dir / "checkpoint" / "progress.json").write_text("[1, 2")
    return [*QUIET, f"resume={run_dir}"], [str(run_dir / "checkpoint" / "progress.json")]


def _checkpoint_block_cut(tmp, tiny, compose):
    run_dir = _interrupted_run(tmp, compose, QUIET)
    _cut(run_dir / "checkpoint" / "block_0000.safetensors")
    return [*QUIET, f"hydra.run.dir={run_dir}"], [str(run_dir / "checkpoint" / "block_0000.safetensors"), "truncated"]


def _task_hub_dataset_offline(tmp, tiny, compose):
    folder = _task_folder(tmp, "nobody/no-such-dataset")
    return ["eval.tasks=[my_task]", f"eval.include_paths=[{folder}]"], \
        ["'my_task'", "nobody/no-such-dataset", "HF_HUB_OFFLINE"]


def _task_data_file_missing(tmp, tiny, compose):
    folder = _task_folder(tmp, "json", "gone.json")
    return ["eval.tasks=[my_task]", f"eval.include_paths=[{folder}]"], ["'my_task'", "gone.json", "does not exist"]


CASES: list[tuple[str, Setup]] = [
    ("model_weights_cut_short", _weights_cut),
    ("model_weights_overwritten", _weights_garbage),
    ("model_weights_header_cut", _weights_header_cut),
    ("model_shard_missing", _shard_missing),
    ("model_weights_gone", _weights_gone),
    ("model_config_garbage", _config_garbage),
    ("family_does_not_match_folder", _family_mismatch),
    ("hub_id_not_cached_offline", _hub_id_offline),
    ("paper_model_without_weights", _paper_model_offline),
    ("empty_model_name", _empty_model_name),
    ("empty_method_name", _empty_method_name),
    ("include_path_missing", _include_path_missing),
    ("include_path_is_a_file", _include_path_file),
    ("media_path_is_a_folder", _media_folder),
    ("png_cut_short", _png_cut),
    ("checkpoint_progress_garbage", _progress_garbage),
    ("checkpoint_progress_garbage_resume", _progress_garbage_resume),
    ("checkpoint_block_cut_short", _checkpoint_block_cut),
    ("task_dataset_not_cached_offline", _task_hub_dataset_offline),
    ("task_data_file_missing", _task_data_file_missing),
]


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def offline_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face home, offline: nothing is cached, nothing may be downloaded."""
    home = tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return home


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    """`python -m tamp.run ARGS` in this process: (exit status, non-empty stderr lines)."""
    from tamp.cli.run_command import cli

    monkeypatch.setattr(sys, "argv", ["tamp-run", *args])
    handler = signal.getsignal(signal.SIGTERM)
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli()
    finally:
        signal.signal(signal.SIGTERM, handler)
    return exit_info.value.code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize(("case", "setup"), CASES, ids=[c[0] for c in CASES])
def test_bad_file_or_name_is_one_line_exit_2_and_touches_nothing(
    case: str, setup: Setup, tmp_path: Path, tiny_llava: Path, compose_cfg, offline_home: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    user = tmp_path / "user"
    user.mkdir()
    args, fragments = setup(user, tiny_llava, compose_cfg)
    before = _hashes(user)
    out = tmp_path / "outputs"
    code, lines = _cli([*args, f"paths.output_dir={out}"], monkeypatch, capsys)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("tamp: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert _hashes(user) == before, "a file of the user's changed (or appeared, or went)"
    assert not out.exists(), "nothing may be written for a refused command"


@pytest.mark.slow
def test_a_builtin_task_whose_dataset_is_not_cached_offline_is_named(
    tmp_path: Path, offline_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`eval.tasks=[ai2d]` offline with an empty cache (indexes lmms-eval's ~2000 built-in tasks: slow)."""
    code, lines = _cli(["eval.tasks=[ai2d]", f"paths.output_dir={tmp_path / 'out'}"], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert "'ai2d'" in lines[0] and "ai2d" in lines[0].split("dataset", 1)[1] and "hf download" in lines[0]


@pytest.mark.parametrize("case", ["hub_id_not_cached_offline"])
def test_as_a_separate_process_too(case: str, tmp_path: Path, tiny_llava: Path, compose_cfg) -> None:
    """The real `python -m tamp.run`: exit status 2 and one stderr line (no traceback), nothing written."""
    user = tmp_path / "user"
    user.mkdir()
    args, fragments = dict(CASES)[case](user, tiny_llava, compose_cfg)
    before = _hashes(user)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "tamp.run", *args, f"paths.output_dir={tmp_path / 'out'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert all(f in lines[0] for f in fragments), lines[0]
    assert _hashes(user) == before and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ past the pre-run check
def test_the_library_names_a_cut_weight_file_and_a_mismatched_family(tmp_path: Path, tiny_llava: Path) -> None:
    from tamp.models.loading import load_model

    folder = _model(tmp_path, tiny_llava, lambda f: _cut(f / "model.safetensors"))
    with pytest.raises(ValueError, match=str(folder / "model.safetensors")):
        load_model(str(folder), dtype="float32")
    with pytest.raises(ValueError, match="model.family=qwen2_vl does not match"):
        load_model(str(_model(tmp_path / "b", tiny_llava)), family="qwen2_vl", dtype="float32")


def test_a_checkpoint_that_is_not_what_tamp_wrote_is_named_before_any_block_is_restored(tmp_path: Path) -> None:
    from tamp.pipeline.checkpoint import CheckpointCorruptError, PruneCheckpoint

    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "progress.json").write_text('{"fingerprint": "f", "plan": {}, "completed_blocks": 2}')
    save_file({"w": torch.zeros(8, 8)}, str(checkpoint / "block_0000.safetensors"))
    with pytest.raises(CheckpointCorruptError, match="block_0001.safetensors is missing"):
        PruneCheckpoint(checkpoint, "f").load()
    (checkpoint / "progress.json").write_text('{"fingerprint": "f", "completed_blocks": 1}')
    with pytest.raises(CheckpointCorruptError, match="progress.json has no valid 'plan'"):
        PruneCheckpoint(checkpoint, "f").load()


def test_an_image_that_does_not_decode_names_itself_and_its_record(tmp_path: Path, monkeypatch) -> None:
    """Also after lmms-eval's import has told PIL to pad truncated images silently (a process-wide flag)."""
    from PIL import ImageFile

    from tamp.data.calib import build_calibration

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    _cut(_png(tmp_path, "cut.png"))
    path = _calib(tmp_path, "cut.png")
    bundle = fresh_tiny("llava")
    with pytest.raises(ValueError) as err:  # build_calibration decodes without the pre-run verify
        build_calibration(bundle.adapter, {"source": "llava_json", "path": str(path), "num_samples": 1})
    message = str(err.value)
    assert "'rec1'" in message and str(tmp_path / "cut.png") in message and "\n" not in message
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True, "the process's own setting is given back"


def test_a_dataset_in_either_cache_or_online_is_available(tmp_path: Path, offline_home: Path, monkeypatch) -> None:
    """The offline check does not refuse what `datasets` would load: a hub snapshot or a prepared copy."""
    from tamp.eval.availability import dataset_problem

    config = {"dataset_path": "SomeOrg/MyBench", "dataset_name": "default"}
    assert "SomeOrg/MyBench (default)" in dataset_problem(config, tmp_path)
    snapshot = offline_home / "hub" / "datasets--SomeOrg--MyBench" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    assert dataset_problem(config, tmp_path) is None
    shutil.rmtree(offline_home / "hub")
    (offline_home / "datasets" / "SomeOrg___my_bench").mkdir(parents=True)  # datasets' prepared copy
    assert dataset_problem(config, tmp_path) is None
    shutil.rmtree(offline_home / "datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    assert dataset_problem(config, tmp_path) is None  # online: datasets downloads it
    assert "does not exist" in dataset_problem({"dataset_path": "json", "dataset_kwargs": {"data_files": "x/*.json"}},
                                               tmp_path)
