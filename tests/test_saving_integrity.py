"""What a save leaves on disk: no leftover after a kill, the same bytes each time, the umask's mode, a named full disk.

Also the settings around it: `runner.save_dir=''`, a sweep saving into a later cell's folder, a save
asked of a completed run, and a pickled weight file (refused in tamp's words, never "weights_only=False").
"""

from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from omegaconf import OmegaConf
from tiny_models import fresh_tiny

from tamp.cli.run_command import cli
from tamp.cli.rundir import added_save
from tamp.models.disk import DiskWriteError
from tamp.models.mask_file import MASKS_FILE, load_masks, save_masks
from tamp.models.saving import MANIFEST, save_pruned

FAST = ["logger=none", "runner.progress=false", "calib.num_samples=1", "eval=none"]


def _save(folder: Path, masks: dict | None = None) -> Path:
    bundle = fresh_tiny("llava")
    table = {"x": {"numel": 4, "achieved": 0.5}}
    return save_pruned(bundle.model, bundle.processor, folder, table, masks, {"method": "wanda"}, digest="d1")


def _cli(args: list[str], monkeypatch, capsys) -> tuple[int, list[str]]:
    monkeypatch.setattr(sys, "argv", ["tamp.run", *args])
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    with pytest.raises(SystemExit) as exit_:
        cli()
    return exit_.value.code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_a_save_killed_half_way_leaves_a_folder_the_next_save_removes(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has ended
    left = tmp_path / f".model.{dead_pid}.0123abcd.partial"
    (left / "sub").mkdir(parents=True)
    (left / "model.safetensors").write_bytes(b"half")
    live = tmp_path / f".model.{os.getppid()}.0123abcd.partial"  # a save still running (our parent lives)
    live.mkdir()
    users = [tmp_path / ".model.backup", tmp_path / f".other.{dead_pid}.0123abcd.partial", tmp_path / "model.partial"]
    for folder in users:
        folder.mkdir()
        (folder / "keep.txt").write_text("mine")
    _save(tmp_path / "model")
    assert not left.exists(), "the killed save's folder was left"
    assert live.is_dir(), "a running save's folder was removed"
    assert all((folder / "keep.txt").read_text() == "mine" for folder in users)
    assert (tmp_path / "model" / MANIFEST).is_file()


def test_masks_file_bytes_are_the_same_every_run(tmp_path: Path) -> None:
    """safetensors orders its metadata at random (each call, each process): the masks file must not vary."""
    g = torch.Generator().manual_seed(0)
    masks = {n: torch.rand(5, 7, generator=g) > 0.5 for n in ("z.q", "A.k", "b")}
    contents = {save_masks(masks, tmp_path / f"{i}.safetensors").read_bytes() for i in range(12)}
    assert len(contents) == 1
    back = load_masks(tmp_path / "0.safetensors")
    assert all(torch.equal(back[k], masks[k]) for k in masks)


def test_saved_files_get_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        masks = {"x": torch.zeros(4, dtype=torch.bool)}
        folder = _save(tmp_path / "model", masks)
        save_masks(masks, tmp_path / MASKS_FILE)
    finally:
        os.umask(old)
    files = [p for p in folder.rglob("*") if p.is_file()] + [tmp_path / MASKS_FILE]
    assert any(p.suffix == ".safetensors" for p in files)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: "0o644" for p in files}


def test_a_full_disk_while_saving_is_one_line_naming_the_folder(tmp_path: Path) -> None:
    bundle = fresh_tiny("llava")
    full = OSError(errno.ENOSPC, "No space left on device")
    with mock.patch.object(type(bundle.model), "save_pretrained", side_effect=full), \
            pytest.raises(DiskWriteError) as err:
        save_pruned(bundle.model, None, tmp_path / "model", {}, digest="d1")
    line = str(err.value)
    assert "\n" not in line and str(tmp_path / "model") in line and "disk is full" in line, line
    assert not [p for p in tmp_path.iterdir()], "the partial folder stayed"


def test_a_full_disk_while_checkpointing_is_one_line_naming_the_file(tmp_path: Path) -> None:
    from tamp.pipeline.checkpoint import SCORING, PruneCheckpoint

    # safetensors reports a full disk as its own error, wrapping the OS's
    rust = RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    with mock.patch("tamp.pipeline.checkpoint.save_file", side_effect=rust), pytest.raises(DiskWriteError) as err:
        PruneCheckpoint(tmp_path, "f").save_scoring("das scoring", 1, {"x": torch.zeros(2)})
    assert str(tmp_path / SCORING) in str(err.value) and "\n" not in str(err.value)
    assert not list(tmp_path.iterdir()), "a temporary file stayed"


def test_an_empty_save_dir_is_refused_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, lines = _cli([*FAST, "runner.save_dir=", f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1 and "runner.save_dir='' is empty" in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_a_sweep_saving_into_a_cell_folder_is_refused_before_work(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    code, lines = _cli(["-m", *FAST, f"hydra.sweep.dir={sweep}", f"runner.save_dir={sweep}/1_wanda/model",
                        "sparsity.target=0.5,0.6"], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1 and "cell folder" in lines[0] and f"{sweep}/1_wanda" in lines[0], lines
    assert not sweep.exists()


def test_a_save_asked_of_a_completed_run_gets_one_answer_for_every_save_setting(compose_cfg) -> None:
    def config(*overrides: str) -> dict:
        return OmegaConf.to_container(compose_cfg([*FAST, *overrides]), resolve=True)

    done = config()
    for added in ("runner.save_model=true", "runner.save_masks=true", "runner.save_dir=/tmp/x"):
        line = added_save("RUN", done, config(added))
        assert line is not None and line.startswith("RUN holds a completed run") and added.split("=")[0] in line
        assert "new hydra.run.dir" in line
    assert added_save("RUN", done, done) is None
    saved = config("runner.save_model=true")
    assert added_save("RUN", saved, saved) is None  # saved already: nothing to do
    assert added_save("RUN", done, config("runner.save_model=true", "sparsity.target=0.6")) is None  # another run


def test_a_pickled_weight_file_is_refused_in_tamps_words(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tamp.models.loading import load_model
    from tamp.models.tiny import save_tiny

    folder = save_tiny(fresh_tiny("llava"), tmp_path / "m")
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save({**state, "extra": argparse.Namespace(a=1)}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin") as err:
        load_model(str(folder), dtype="float32")
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)


def test_adding_a_save_to_a_completed_run_is_refused_by_the_cli_in_one_line(tmp_path: Path, monkeypatch) -> None:
    """`runner.save_model=true` and `runner.save_masks=true` added to a completed run get the same answer."""
    from tamp.cli.run_command import run

    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    run(OmegaConf.create(OmegaConf.to_container(_compose_fast(), resolve=True)), run_dir)
    before = (run_dir / "results.json").read_bytes()
    for added in ("runner.save_model=true", "runner.save_masks=true"):  # as a user types it: a new process
        proc = subprocess.run([sys.executable, "-m", "tamp.run", *FAST, added, f"hydra.run.dir={run_dir}"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert "completed run" in lines[0] and added.split("=")[0] in lines[0], lines
    assert (run_dir / "results.json").read_bytes() == before


def _compose_fast():
    from hydra import compose, initialize_config_dir

    from tamp.cli import CONF_DIR
    from tamp.cli.schema import register_schema

    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("run", overrides=FAST)
