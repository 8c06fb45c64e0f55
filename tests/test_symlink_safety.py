"""Nothing is written through a link: every place a run, a sweep or the report writes, with a link to a user's file there.

Each case puts a symbolic link to a file of the user's at one of the names tamp writes (the lock,
config_resolved.yaml, prune_report.md, run.log, results.json, .hydra/config.yaml, multirun.yaml,
report.md/csv/png), runs tamp the way a user does, and checks the user's file byte for byte (sha256)
afterwards, and the refusal's one line (or that the link itself was replaced and its target left
alone). The failed run folder they start from is made by a real `python -m tamp.run` that failed
after taking its folder. Also here: the report's own files are replaced and a person's are refused,
a process refused at the lock writes nothing into the other run's log, `resume=DIR` makes no
second folder, and the files tamp writes get the umask's mode (safetensors makes its own 0600).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_run_safety import ENV, FAST, REPO, snapshot

from tamp.cli.report_command import main as report_main

DATA = Path(__file__).parent / "data" / "report"  # tests/test_report.py's hand-made sweep
REPORT_FILES = ("report.md", "report.csv", "sparsity_vs_rel.png", "sparsity_per_projection.png",
                "sparsity_per_block.png")
LINKED_RUN_FILES = (".tamp.lock", "config_resolved.yaml", "prune_report.md", "run.log", "results.json",
                    ".hydra/config.yaml")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tamp(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tamp.run", *args], cwd=cwd, env={**ENV, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _cli(args: list[str], monkeypatch, capsys) -> tuple[int, list[str]]:
    """`python -m tamp.run ARGS` in this process (the pre-run check's refusals end before Hydra starts)."""
    from tamp.cli.run_command import cli

    monkeypatch.setattr(sys, "argv", ["tamp.run", *args])
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli()
    return exit_.value.code, _lines(capsys.readouterr().err)


@pytest.fixture
def user(tmp_path: Path) -> Path:
    """A user's folder: the files the links point at."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.md").write_text("my thesis notes\n")
    (home / "data.json").write_text('{"mine": true}\n')
    (home / "thesis").mkdir()
    (home / "thesis" / "chapter1.tex").write_text("\\chapter{one}\n")
    return home


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory) -> Path:
    """A run folder as `python -m tamp.run` leaves it when the run fails after taking the folder: .hydra,
    run.log, results.json "failed". The pre-run check is off so the run's own check refuses the save folder."""
    root = tmp_path_factory.mktemp("failed")
    (root / "thesis").mkdir()
    (root / "thesis" / "a.tex").write_text("x\n")
    run_dir = root / "run"
    proc = _tamp([*FAST, f"hydra.run.dir={run_dir}", f"runner.save_dir={root / 'thesis'}"], cwd=REPO,
                 env={"TAMP_PREFLIGHT": "0"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert json.loads((run_dir / "results.json").read_text())["status"] == "failed"
    assert "not a folder tamp saved" in (run_dir / "run.log").read_text(), "the run's own failure is in its log"
    return run_dir


def _linked_copy(failed_run: Path, tmp_path: Path, name: str, target: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(failed_run, run_dir, symlinks=True)
    (run_dir / name).unlink(missing_ok=True)
    (run_dir / name).symlink_to(target)
    return run_dir


# ------------------------------------------------------------------------------ runs: refused before anything
@pytest.mark.parametrize("name", LINKED_RUN_FILES)
def test_a_link_where_a_run_writes_is_refused_in_one_line(name: str, failed_run: Path, user: Path, tmp_path: Path,
                                                          monkeypatch, capsys) -> None:
    """The same command again, into the failed run's folder with a link at one of its file names."""
    target = user / "notes.md"
    run_dir = _linked_copy(failed_run, tmp_path, name, target)
    before, folder = _sha(target), snapshot(run_dir)
    code, lines = _cli([*FAST, f"hydra.run.dir={run_dir}"], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("tamp: error: "), lines
    assert f"{name} -> {target}" in lines[0] and "never writes through a link" in lines[0], lines[0]
    assert _sha(target) == before and snapshot(run_dir) == folder


def test_without_the_pre_run_check_the_run_refuses_and_hydra_log_is_not_written_through(
        failed_run: Path, user: Path, tmp_path: Path) -> None:
    """TAMP_PREFLIGHT=0: Hydra itself opens RUN_DIR/run.log (a link to the user's file) before tamp runs."""
    target = user / "notes.md"
    run_dir = _linked_copy(failed_run, tmp_path, "run.log", target)
    before = _sha(target)
    proc = _tamp([*FAST, f"hydra.run.dir={run_dir}"], cwd=REPO, env={"TAMP_PREFLIGHT": "0"})
    errors = [line for line in _lines(proc.stderr) if line.startswith("tamp: ")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert "run.log -> " in errors[0] and "never writes through a link" in errors[0]
    assert _sha(target) == before
    assert json.loads((run_dir / "results.json").read_text())["status"] == "failed"  # still the old record


def test_a_sweep_folder_whose_lock_is_a_link_is_refused(user: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / ".tamp.lock").symlink_to(user / "notes.md")
    before = snapshot(user)
    code, lines = _cli(["-m", *FAST, f"hydra.sweep.dir={sweep}", "sparsity.target=0.5,0.6"], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0] == (f"tamp: error: {sweep}/.tamp.lock is a symbolic link (to {user}/notes.md); tamp writes "
                        "its lock only into a file of its own, never through a link: remove it, or use another folder")
    assert snapshot(user) == before and sorted(p.name for p in sweep.iterdir()) == [".tamp.lock"]


# ------------------------------------------------------------------------------ the writes themselves
@pytest.mark.fast
@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo"])
def test_the_lock_is_never_taken_through_a_link(kind: str, user: Path, tmp_path: Path) -> None:
    from tamp.cli.runlock import LOCK_FILE, LockNotOurs, RunDirInUse, RunLock, holder

    target = user / "notes.md"
    lock = tmp_path / LOCK_FILE
    {"symlink": lambda: lock.symlink_to(target), "hardlink": lambda: os.link(target, lock),
     "fifo": lambda: os.mkfifo(lock)}[kind]()
    before = snapshot(user)
    with pytest.raises(LockNotOurs, match=f"^{lock} is .*never through a link"):
        RunLock(tmp_path).acquire()
    assert issubclass(LockNotOurs, RunDirInUse)  # the CLI and the sweeper refuse it as they refuse a folder in use
    assert holder(tmp_path) is None and snapshot(user) == before and os.path.lexists(lock)


@pytest.mark.fast
def test_a_lock_replaced_by_a_link_while_held_is_not_deleted(user: Path, tmp_path: Path) -> None:
    from tamp.cli.runlock import LOCK_FILE, RunLock

    lock = RunLock(tmp_path).acquire()
    (tmp_path / LOCK_FILE).unlink()
    (tmp_path / LOCK_FILE).symlink_to(user / "notes.md")
    lock.release()
    assert (tmp_path / LOCK_FILE).is_symlink() and (user / "notes.md").read_text() == "my thesis notes\n"


@pytest.mark.fast
@pytest.mark.parametrize("name", ["config_resolved.yaml", "prune_report.md", "results.json"])
def test_run_files_replace_a_link_and_leave_its_target(name: str, user: Path, tmp_path: Path) -> None:
    """Past the check (a link made while the run works): the write replaces the link, never its target."""
    from tamp.cli.runner import save_resolved_config
    from tamp.core.io import write_text_atomic
    from tamp.tracking.run_record import RunRecord

    target, run_dir = user / "notes.md", tmp_path / "run"
    run_dir.mkdir()
    (run_dir / name).symlink_to(target)
    before = snapshot(user)
    if name == "config_resolved.yaml":
        save_resolved_config({"seed": 1}, run_dir)
    elif name == "results.json":
        RunRecord(config={"seed": 1}).write(run_dir / name)
    else:
        write_text_atomic(run_dir / name, "summary\n")
    assert not (run_dir / name).is_symlink() and (run_dir / name).is_file()
    assert snapshot(user) == before
    assert sorted(p.name for p in run_dir.iterdir()) == [name], "no temporary file left"


@pytest.mark.fast
def test_an_atomic_write_never_opens_a_planted_temporary(user: Path, tmp_path: Path) -> None:
    """The temporary name once was predictable (`.NAME.<pid>.tmp`): a link planted there is not followed."""
    from tamp.core.io import write_text_atomic

    planted = tmp_path / f".results.json.{os.getpid()}.tmp"
    planted.symlink_to(user / "notes.md")
    before = snapshot(user)
    write_text_atomic(tmp_path / "results.json", "{}")
    assert (tmp_path / "results.json").read_text() == "{}" and snapshot(user) == before and planted.is_symlink()


def _log_handler(path: Path):
    from tamp.cli.runlog import RunLogHandler

    handler = RunLogHandler(str(path))
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("tamp", logging.INFO, __file__, 1, message, None, None)


@pytest.mark.fast
def test_run_log_appends_once_the_folder_is_held_and_never_through_a_link(user: Path, tmp_path: Path,
                                                                          capsys) -> None:
    from tamp.cli.runlock import RunLock

    log = tmp_path / "run.log"
    log.write_text("first attempt\n")
    handler = _log_handler(log)
    handler.handle(_record("before the lock"))
    assert log.read_text() == "first attempt\n", "nothing written before this process holds the folder"
    with RunLock(tmp_path):
        handler.handle(_record("under the lock"))
    handler.handle(_record("after the lock"))  # the cell's failure line comes after the lock is released
    handler.close()
    assert log.read_text() == "first attempt\nbefore the lock\nunder the lock\nafter the lock\n"

    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "run.log").symlink_to(user / "notes.md")
    before = snapshot(user)
    handler = _log_handler(linked / "run.log")
    with RunLock(linked):
        handler.handle(_record("a line"))
        handler.handle(_record("another"))
    handler.close()
    assert snapshot(user) == before
    warned = _lines(capsys.readouterr().err)
    assert len(warned) == 1 and "run.log is a symbolic link" in warned[0], warned


@pytest.mark.fast
def test_a_process_that_never_holds_the_folder_writes_no_log(tmp_path: Path) -> None:
    handler = _log_handler(tmp_path / "run.log")
    handler.handle(_record("tamp: error: in use by pid 12"))
    handler.close()
    assert not (tmp_path / "run.log").exists()


def test_a_refused_concurrent_run_writes_nothing_into_the_winners_folder_log(tmp_path: Path) -> None:
    """The second process passes the pre-run check (off here, or a race) and is refused at the lock."""
    run_dir = tmp_path / "run"
    code = ("import sys; from pathlib import Path; from tamp.cli.runlock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "Path(sys.argv[1], 'run.log').write_text('the winner\\n'); print('held', flush=True); input()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=ENV, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = _tamp([*FAST, f"hydra.run.dir={run_dir}"], cwd=REPO, env={"TAMP_PREFLIGHT": "0"})
        assert proc.returncode == 2 and f"is in use by pid {holder.pid}" in proc.stderr, proc.stderr[-2000:]
        assert (run_dir / "run.log").read_text() == "the winner\n"
        assert not (run_dir / "results.json").exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.fast
def test_resume_names_hydras_run_folder_too() -> None:
    from tamp.cli.rundir import resume_in_place

    argv = ["tamp.run", "method=wanda", "resume=/r/run 1"]
    assert resume_in_place(argv) == [*argv, "hydra.run.dir=/r/run 1"]
    for kept in (["tamp.run", "resume=/r", "hydra.run.dir=/elsewhere"], ["tamp.run", "-m", "resume=/r"],
                 ["tamp.run", "resume=null"], ["tamp.run", "method=wanda"]):
        assert resume_in_place(kept) == kept


@pytest.mark.slow  # two real runs, one stopped after its first block and one resuming it: 25-60 s on two cores
def test_resume_runs_in_its_folder_and_makes_no_other(compose_cfg, tmp_path: Path, monkeypatch) -> None:
    """resume=DIR: Hydra's run folder (.hydra, run.log) is DIR, not a new one under paths.output_dir."""
    import tamp.pipeline.engine as engine
    from tamp.cli.run_command import run

    def stop(*args: object) -> None:
        raise KeyboardInterrupt("signal SIGTERM")

    run_dir, out = tmp_path / "run", tmp_path / "outputs"
    monkeypatch.setattr(engine, "_fault_injection_delay", stop)  # stopped after its first checkpointed block
    with pytest.raises(KeyboardInterrupt):
        run(compose_cfg(FAST), run_dir)
    assert json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"
    proc = _tamp([*FAST, f"resume={run_dir}", f"paths.output_dir={out}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"
    assert not out.exists(), sorted(str(p) for p in out.rglob("*"))
    assert "resume=" in (run_dir / ".hydra" / "overrides.yaml").read_text() and (run_dir / "run.log").is_file()


@pytest.mark.fast
def test_written_files_get_the_umask_mode_not_safetensors_0600(tmp_path: Path) -> None:
    """safetensors writes a temporary of its own, 0600, and renames it: tamp's atomic write gives the plain mode."""
    import torch
    from safetensors.torch import save_file

    from tamp.core.io import write_atomic

    path = write_atomic(tmp_path / "block.safetensors", lambda tmp: save_file({"w": torch.ones(2)}, str(tmp)))
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


# ------------------------------------------------------------------------------ the report
@pytest.mark.parametrize("name", REPORT_FILES)
def test_the_report_refuses_a_file_it_did_not_write(name: str, user: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(b"a person's own " + name.encode())
    before = snapshot(out)
    assert report_main([str(DATA), "--out", str(out)]) == 1
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith(f"tamp.report: error: {out / name} is not a file tamp.report wrote")
    assert "--out NEW_FOLDER" in err[0] and snapshot(out) == before, "nothing written, nothing replaced"


@pytest.mark.parametrize("name", [*REPORT_FILES, ".tamp_report.json"])
def test_the_report_never_writes_through_a_link(name: str, user: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert report_main([str(DATA), "--out", str(out)]) == 0  # a report of its own there first
    (out / name).unlink()
    (out / name).symlink_to(user / "data.json")
    before, folder = snapshot(user), snapshot(out)
    capsys.readouterr()
    assert report_main([str(DATA), "--out", str(out)]) == 1
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and f"{out / name} is a symbolic link (to {user}/data.json)" in err[0], err
    assert snapshot(user) == before and snapshot(out) == folder


def test_the_report_replaces_its_own_files_and_refuses_one_edited_since(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert report_main([str(DATA), "--out", str(out)]) == 0
    listed = json.loads((out / ".tamp_report.json").read_text())["files"]
    assert sorted(listed) == sorted(REPORT_FILES)
    assert all(listed[n] == [_sha(out / n)] for n in REPORT_FILES)
    assert report_main([str(DATA / "sweep"), "--out", str(out)]) == 0  # another report, same folder: replaced
    assert "Rel.% needs a completed dense run" in (out / "report.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted([*REPORT_FILES, ".tamp_report.json"])
    (out / "report.md").write_text((out / "report.md").read_text() + "\nmy comments\n")
    capsys.readouterr()
    assert report_main([str(DATA), "--out", str(out)]) == 1
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and "report.md was changed since tamp.report wrote it" in err[0], err
    assert (out / "report.md").read_text().endswith("my comments\n")
