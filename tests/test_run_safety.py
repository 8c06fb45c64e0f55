"""Nothing outside the run is ever touched: save targets, run folders, completed runs, signals, pipes.

Every case hashes the user's files (sha256 of every file, and the list of every path) before and
after and asserts they are identical, the source model's folder included. The refusal tables call
the CLI entry point in-process (`tamp.cli.run_command.cli` with argv: the pre-run check, the exit status and
stderr are the command's); a few rows, and everything that needs a real run (a completed run, a
concurrent run, SIGTERM, a closed pipe), run `python -m tamp.run` in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from block_delay import with_block_delay
from tiny_models import fresh_tiny

from tamp.cli.run_command import cli, run
from tamp.cli.rundir import RunDirRefused
from tamp.models.saving import SaveTargetRefused

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
ENV.pop("TAMP_HELD_LOCKS", None)
FAST = ["logger=none", "runner.progress=false", "calib.num_samples=1", "eval=none"]


def snapshot(*roots: Path) -> dict[str, str]:
    """Every path under the roots: a file's sha256, a folder's 'dir', a link's target."""
    out: dict[str, str] = {}
    for root in roots:
        for path in [root, *sorted(root.rglob("*"))]:
            if path.is_symlink():
                out[str(path)] = "-> " + os.readlink(path)
            elif path.is_dir():
                out[str(path)] = "dir"
            else:
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _cli(args: list[str], monkeypatch, capsys) -> tuple[int, list[str]]:
    """`python -m tamp.run ARGS` in this process, for commands that end before Hydra starts."""
    monkeypatch.setattr(sys, "argv", ["tamp.run", *args])
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # cli() wraps both streams; put them back afterwards
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    from tamp.cli.sweep_summary import SweepSummary

    with pytest.raises(SystemExit) as exit_:
        cli()
    # a multirun refused after Hydra's start callback: a later Ctrl-C in this process must not summarise it
    assert SweepSummary.active is None, "the refused multirun is still marked running"
    return exit_.value.code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _subprocess(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tamp.run", *args], cwd=cwd, env=env or ENV, capture_output=True,
                          text=True, timeout=timeout)


def _calib(folder: Path) -> Path:
    """A one-record LLaVA-style calibration file for a model loaded from a folder."""
    from PIL import Image

    folder.mkdir(parents=True)
    Image.new("RGB", (32, 32), "red").save(folder / "red.png")
    record = {"id": "a", "image": "red.png", "conversations": [
        {"from": "human", "value": "<image>\nwhat colour?"}, {"from": "gpt", "value": "red"}]}
    (folder / "calib.json").write_text(json.dumps([record]))
    return folder / "calib.json"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A user's disk: a source model with a README, a thesis folder, an old experiment, a file, a link..."""
    from tamp.models.tiny import save_tiny

    root = tmp_path_factory.mktemp("world")
    save_tiny(fresh_tiny("llava"), root / "src_model")
    (root / "src_model" / "README.md").write_text("my model card\n")
    _calib(root / "calib")
    (root / "thesis" / "data").mkdir(parents=True)
    (root / "thesis" / "notes.md").write_text("chapter 1\n")
    (root / "thesis" / "data" / "x.csv").write_text("1,2\n")
    (root / "old_experiment" / "checkpoint").mkdir(parents=True)
    (root / "old_experiment" / "model").mkdir()
    (root / "old_experiment" / "checkpoint" / "epoch10.ckpt").write_bytes(b"\x00weights")
    (root / "old_experiment" / "model" / "weights.bin").write_bytes(b"\x01weights")
    (root / "other_app" / ".hydra").mkdir(parents=True)  # another Hydra program's run folder
    (root / "other_app" / ".hydra" / "config.yaml").write_text("lr: 0.1\n")
    (root / "other_app" / "train.log").write_text("epoch 1\n")
    (root / "fake_resume" / "checkpoint").mkdir(parents=True)  # looks resumable, is not tamp's
    (root / "fake_resume" / "checkpoint" / "progress.json").write_text('{"epoch": 3}')
    (root / "fake_resume" / "train.py").write_text("print()\n")
    (root / "afile").write_text("a file, not a folder\n")
    (root / "readonly").mkdir()
    (root / "readonly").chmod(0o555)
    (root / "link").symlink_to(root / "src_model")
    other = root / "other_save"  # a tamp save of another run configuration
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"x")
    (other / "sparsity_manifest.json").write_text(json.dumps(
        {"overall_sparsity": 0.5, "run": {"config_digest": "0" * 16}, "files": ["model.safetensors"]}))
    (root / "work").mkdir()  # the current directory of the commands
    return root


@pytest.fixture
def in_world(world: Path, monkeypatch):
    """Run from world/work; as root, a folder's write bits decide os.access as they do for a user."""
    monkeypatch.chdir(world / "work")
    if os.geteuid() == 0:  # root may write anywhere: check the mode bits as a user's os.access would
        import tamp.models.saving as saving

        def access(path, mode) -> bool:
            bits = os.stat(path).st_mode
            return not (mode & os.W_OK) or bool(bits & stat.S_IWUSR)

        monkeypatch.setattr(saving.os, "access", access)
    before = snapshot(world)
    yield world
    assert snapshot(world) == before, "a user file or folder was touched"


SOURCE = ["model.name={w}/src_model", "calib.source=llava_json", "calib.path={w}/calib/calib.json",
          "calib.num_samples=1", "method=wanda"]
# (id, arguments, fragments of the one stderr line)
SAVE_DIR_CASES = [
    ("user_folder_with_files", ["runner.save_dir={w}/thesis"], ["runner.save_dir={w}/thesis", "not a folder tamp saved"]),
    ("source_model_folder", [*SOURCE, "runner.save_dir={w}/src_model"],
     ["runner.save_dir={w}/src_model", "is the source model's folder"]),
    ("inside_source_model", [*SOURCE, "runner.save_dir={w}/src_model/pruned"], ["is inside the source model's folder"]),
    ("symlink_to_source_model", [*SOURCE, "runner.save_dir={w}/link"],
     ["runner.save_dir={w}/link (resolves to {w}/src_model)", "source model's folder"]),
    ("run_folder", ["hydra.run.dir={w}/runs/r1", "runner.save_dir={w}/runs/r1"], ["{w}/runs/r1", "is the run folder"]),
    ("run_folder_parent", ["hydra.run.dir={w}/runs/r1", "runner.save_dir={w}/runs"], ["contains the run folder"]),
    ("run_folder_checkpoint", ["hydra.run.dir={w}/runs/r1", "runner.save_dir={w}/runs/r1/checkpoint"],
     ["tamp's own checkpoint"]),
    ("dotdot_to_user_folder", ["runner.save_dir={w}/thesis/sub/.."], ["(resolves to {w}/thesis)", "not a folder tamp saved"]),
    ("dotdot_to_run_parent", ["hydra.run.dir={w}/runs/r1", "runner.save_dir={w}/runs/r1/.."], ["contains the run folder"]),
    ("a_file", ["runner.save_dir={w}/afile"], ["runner.save_dir={w}/afile", "is a file"]),
    ("read_only", ["runner.save_dir={w}/readonly"], ["runner.save_dir={w}/readonly", "is not writable"]),
    ("dot", ["runner.save_dir=."], ["runner.save_dir=.", "is the current directory"]),
    ("folder_containing_cwd", ["runner.save_dir={w}"], ["contains the current directory"]),
    ("save_of_another_config", ["runner.save_dir={w}/other_save"], ["another run configuration"]),
    ("one_folder_for_two_cells", ["-m", "hydra.sweep.dir={w}/sweep", "sparsity.target=0.5,0.6",
                                  "runner.save_dir={w}/ckpt"], ["{w}/ckpt", "one folder per cell"]),
]
RUN_DIR_CASES = [
    ("old_experiment_with_checkpoint_and_model", ["hydra.run.dir={w}/old_experiment", "runner.save_model=true"],
     ["hydra.run.dir={w}/old_experiment", "not a tamp run folder", "checkpoint, model"]),
    ("another_hydra_programs_folder", ["hydra.run.dir={w}/other_app"], ["hydra.run.dir={w}/other_app", "not a tamp run folder"]),
    ("run_folder_is_a_file", ["hydra.run.dir={w}/afile"], ["{w}/afile", "is a file"]),
    ("resume_a_folder_tamp_did_not_make", ["resume={w}/fake_resume"], ["resume={w}/fake_resume", "not a tamp run folder"]),
    ("sweep_into_a_user_folder", ["-m", "hydra.sweep.dir={w}/thesis", "sparsity.target=0.5,0.6"],
     ["hydra.sweep.dir={w}/thesis", "not a tamp sweep folder"]),
]


@pytest.mark.parametrize(("case", "args", "fragments"), SAVE_DIR_CASES + RUN_DIR_CASES,
                         ids=[c[0] for c in SAVE_DIR_CASES + RUN_DIR_CASES])
def test_what_tamp_did_not_write_is_refused_in_one_line(case, args, fragments, in_world: Path, monkeypatch,
                                                         capsys) -> None:
    w = in_world
    code, lines = _cli([*[a.format(w=w) for a in args], *FAST], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("tamp: error: "), lines
    for fragment in fragments:
        assert fragment.format(w=w) in lines[0], lines[0]


@pytest.mark.parametrize("args", [
    [*SOURCE, "runner.save_dir={w}/src_model"],
    ["hydra.run.dir={w}/old_experiment", "runner.save_model=true"],
], ids=["source_model", "old_experiment"])
def test_the_real_command_refuses_in_one_line_and_writes_nothing(args, world: Path) -> None:
    before = snapshot(world)
    proc = _subprocess([*FAST, *[a.format(w=world) for a in args]], cwd=world / "work", timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("tamp: error: "), proc.stderr
    assert snapshot(world) == before


def test_the_run_itself_refuses_without_the_pre_run_check(compose_cfg, world: Path, tmp_path: Path) -> None:
    """`run(cfg, dir)` (TAMP_PREFLIGHT=0, or a caller's own config) refuses the same folders before any work."""
    before = snapshot(world)
    with pytest.raises(RunDirRefused, match="not a tamp run folder"):
        run(compose_cfg([*FAST, "runner.save_model=true"]), world / "old_experiment")
    for target, fragment in [(world / "thesis", "not a folder tamp saved"), (tmp_path, "contains the run folder"),
                             (world / "src_model", "source model's folder")]:
        overrides = [o.format(w=world) for o in SOURCE] if "source" in fragment else []
        with pytest.raises(SaveTargetRefused, match=fragment):
            run(compose_cfg([*FAST, *overrides, f"runner.save_dir={target}"]), tmp_path / "run")
        assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "failed"
    assert snapshot(world) == before


def test_a_save_replaces_only_its_own_earlier_save(compose_cfg, tmp_path: Path) -> None:
    """The same config saved twice replaces its own folder; a file a person adds there stops the next save."""
    from tamp.models.saving import MANIFEST, save_pruned

    ckpt = tmp_path / "ckpt"
    cfg = compose_cfg([*FAST, f"runner.save_dir={ckpt}"])
    run(cfg, tmp_path / "a")
    first = json.loads((ckpt / MANIFEST).read_text())
    assert set(first["files"]) >= {"config.json", "model.safetensors"} and first["run"]["config_digest"]
    run(cfg, tmp_path / "b")  # another run folder, the same experiment: its own save is replaced
    assert json.loads((ckpt / MANIFEST).read_text())["run"] == first["run"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "ckpt"], "no temporary folder left beside it"
    (ckpt / "README.md").write_text("my notes\n")
    before = snapshot(ckpt)
    with pytest.raises(SaveTargetRefused, match="holds README.md, which tamp did not write"):
        run(cfg, tmp_path / "c")
    # at save time too: a folder that appeared after the pre-run check is not replaced
    late = tmp_path / "late"
    late.mkdir()
    (late / "thesis.tex").write_text("\\chapter{}\n")
    with pytest.raises(SaveTargetRefused, match="late"):
        save_pruned(None, None, late, {}, digest=first["run"]["config_digest"])
    assert snapshot(ckpt) == before and (late / "thesis.tex").read_text() == "\\chapter{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c", "ckpt", "late"]


def test_checkpoint_cleanup_removes_only_what_the_checkpoint_wrote(tmp_path: Path) -> None:
    import torch
    from torch import nn

    from tamp.pipeline.checkpoint import PruneCheckpoint

    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "epoch10.ckpt").write_bytes(b"a person's file")
    (folder / "block_0007.safetensors").write_bytes(b"not written by this checkpoint")
    ckpt = PruneCheckpoint(folder, "fp")
    linear = nn.Linear(4, 4)
    ckpt.start({"l": 0.5})
    for index in range(2):
        ckpt.save_block(index, {"l": linear}, {"l": torch.ones(4, 4, dtype=torch.bool)}, {"l": 0.5})
    (folder / ".block_0002.safetensors.999.tmp").write_bytes(b"a write cut short")  # tamp's own temporary
    ckpt.clear()
    assert sorted(p.name for p in folder.iterdir()) == ["block_0007.safetensors", "epoch10.ckpt"]
    only_ours = PruneCheckpoint(tmp_path / "ours", "fp")
    only_ours.start({})
    only_ours.clear()
    assert not (tmp_path / "ours").exists(), "a checkpoint folder holding only tamp's files is removed"


def _wait_for_block(run_dir: Path, proc: subprocess.Popen, seconds: float = 240) -> None:
    progress = run_dir / "checkpoint" / "progress.json"
    deadline = time.time() + seconds
    while time.time() < deadline:
        if progress.exists() and json.loads(progress.read_text())["completed_blocks"] >= 1:
            return
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.1)
    raise AssertionError("no block was checkpointed in time")


def _interrupted_run(run_dir: Path, args: list[str], log: Path, monkeypatch, capsys) -> None:
    """A run stopped by SIGTERM after its first block; meanwhile the same command is refused (the folder is in use)."""
    with log.open("w") as err:
        first = subprocess.Popen([sys.executable, "-m", "tamp.run", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                                 stderr=err, env=with_block_delay(ENV, 120))
    try:
        _wait_for_block(run_dir, first)
        before = snapshot(run_dir)
        code, lines = _cli(args, monkeypatch, capsys)  # the second run: the pre-run check refuses it
        assert code == 2 and len(lines) == 1, lines
        assert f"{run_dir} is in use by pid {first.pid}" in lines[0], lines
        assert snapshot(run_dir) == before, "the refused run touched the folder in use"
        printed = log.stat().st_size
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 143, log.read_text()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
    after = log.read_text()[printed:]
    tail = [line for line in after.splitlines() if line.strip()]
    assert len(tail) == 1 and tail[0].startswith("tamp: interrupted by SIGTERM"), after
    assert "Traceback" not in log.read_text()
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "interrupted" and "SIGTERM" in record["error"]
    assert not (run_dir / ".tamp.lock").exists(), "the lock is released on the way out"


def test_a_run_in_use_is_refused_and_sigterm_exits_143_interrupted(tmp_path: Path, monkeypatch, capsys) -> None:
    run_dir = tmp_path / "run"
    _interrupted_run(run_dir, [*FAST, f"hydra.run.dir={run_dir}"], tmp_path / "first.stderr", monkeypatch, capsys)
    assert (run_dir / "checkpoint" / "progress.json").exists(), "the checkpoint is kept for the resume"


@pytest.mark.slow
def test_a_sigterm_run_resumes_and_then_the_same_command_changes_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    run_dir = tmp_path / "run"
    args = [*FAST, f"hydra.run.dir={run_dir}", "runner.save_model=true"]
    _interrupted_run(run_dir, args, tmp_path / "first.stderr", monkeypatch, capsys)
    resumed = _subprocess(args, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"
    assert not (run_dir / "checkpoint").exists() and (run_dir / "model" / "sparsity_manifest.json").exists()
    done = snapshot(run_dir)
    again = _subprocess(args, cwd=REPO, timeout=120)
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr
    assert snapshot(run_dir) == done


def test_the_run_api_returns_a_completed_run_untouched(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(FAST)
    first = run(cfg, tmp_path)
    before = snapshot(tmp_path)
    assert run(cfg, tmp_path) == first and snapshot(tmp_path) == before


def test_a_stale_lock_is_taken_over_and_a_live_one_is_named(tmp_path: Path) -> None:
    from tamp.cli.runlock import LOCK_FILE, RunDirInUse, RunLock, holder

    code = "import sys; from tamp.cli.runlock import RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); input()"
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=ENV, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert holder(tmp_path).startswith(f"pid {proc.pid} on ")
        with pytest.raises(RunDirInUse, match=f"in use by pid {proc.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        proc.kill()  # SIGKILL: the lock file stays behind, the kernel's lock does not
        proc.wait()
    assert (tmp_path / LOCK_FILE).exists() and holder(tmp_path) is None
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_closed_pipe_changes_nothing_and_the_same_command_then_changes_nothing(tmp_path: Path) -> None:
    """`python -m tamp.run ... 2>&1 | head -1` completes and records it; the same command again (the README's
    "the same command continues") finds the completed run: one line, exit 0, not one file touched."""
    run_dir = tmp_path / "run"
    args = [*(a for a in FAST if a != "runner.progress=false"), "runner.save_model=true", f"hydra.run.dir={run_dir}"]
    env = with_block_delay({**ENV, "TAMP_PROGRESS": "log"}, 1)  # block lines written after the pipe closed
    proc = subprocess.Popen([sys.executable, "-m", "tamp.run", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        assert proc.stdout.readline()  # head -1
        proc.stdout.close()
        assert proc.wait(timeout=300) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "completed" and record["error"] is None, record["error"]
    assert (run_dir / "model" / "sparsity_manifest.json").exists()

    before = snapshot(run_dir)
    again = _subprocess(args, cwd=REPO, timeout=120)
    lines = [line for line in again.stderr.splitlines() if line.strip()]
    assert again.returncode == 0 and len(lines) == 1, again.stderr
    assert lines[0] == (f"tamp: {run_dir} holds a completed run of this configuration; nothing to do, nothing "
                        f"changed (results in {run_dir}/results.json; a new hydra.run.dir runs it again)")
    assert snapshot(run_dir) == before, "the completed run was modified"


def test_the_stream_guard_drops_writes_to_a_closed_pipe() -> None:
    from tamp.cli.streams import PipeSafeStream

    read, write = os.pipe()
    os.close(read)
    stream = PipeSafeStream(os.fdopen(write, "w"))
    stream.write("x" * 100_000)
    stream.flush()
    print("after", file=stream, flush=True)
    assert stream.closed_pipe


def test_a_broken_pipe_while_loading_is_not_a_model_folder_problem(world: Path, monkeypatch) -> None:
    import transformers

    from tamp.models.loading import load_model

    def broken(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", broken)
    with pytest.raises(BrokenPipeError):
        load_model(str(world / "src_model"))
