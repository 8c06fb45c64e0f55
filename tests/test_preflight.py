"""Bad input fails before anything loads: one line naming the key or file, exit 2, nothing written.

The table runs the CLI's preflight in-process (every row composes and checks like `python -m
tamp.run ARGS` does); a few rows run the real command in a subprocess for the exit code, the single
stderr line, the time to the error and the empty output folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tamp.cli.preflight import PreflightError, check_command

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}

# (id, arguments, fragments the one line must hold)
BAD = [
    ("unknown_key", ["foo=1"], ["'foo'", "valid:", "method"]),
    ("unknown_nested_key", ["method.foo=1"], ["'method.foo'", "pruner"]),
    ("misspelt_key", ["sparsity.tgt=0.5"], ["'sparsity.tgt'", "target"]),
    ("wrong_type", ["sparsity.target=abc"], ["sparsity.target", "'abc'", "float"]),
    ("unknown_method", ["method=nosuchmethod"], ["nosuchmethod", "'method' group", "tamp", "wanda"]),
    ("unknown_model", ["model=nosuchmodel"], ["nosuchmodel", "tiny_llava_next"]),
    ("added_unknown_key", ["+foo=1"], ["'foo'"]),
    ("pattern_vs_target", ["sparsity=nm_2_4", "sparsity.target=0.7"], ["sparsity.target=0.7", "2:4", "0.5"]),
    ("target_out_of_range", ["sparsity.target=1.5"], ["sparsity.target=1.5", "0 <= target < 1"]),
    ("zero_new_tokens", ["eval.max_new_tokens=0"], ["eval.max_new_tokens=0", ">= 1"]),
    ("zero_batch_size", ["eval.batch_size=0"], ["eval.batch_size=0", ">= 1"]),
    ("negative_seed", ["seed=-1"], ["seed=-1", "valid"]),
    ("devices_not_a_count", ["runner.devices=abc"], ["runner.devices", "'abc'"]),
    ("unknown_selector", ["method=tamp", "method.tokens.name=nosuch"], ["method.tokens.name", "amia"]),
    ("unknown_allocation", ["method.allocation.name=nosuch"], ["method.allocation.name", "das"]),
    ("delta_negative", ["method=tamp", "method.allocation.max_sparsity_delta=-0.5"],
     ["method.allocation.max_sparsity_delta=-0.5"]),
    ("amia_knn", ["method=tamp", "method.tokens.knn=0"], ["method.tokens.knn=0"]),
    ("owl_lambda", ["method=owl", "method.allocation.owl_lambda=-1"], ["method.allocation.owl_lambda=-1"]),
    ("ecoflap_eps", ["method=ecoflap", "method.allocation.eps=0"], ["method.allocation.eps=0"]),
    ("sparsegpt_blocksize", ["method=sparsegpt", "method.blocksize=0"], ["method.blocksize=0"]),
    ("bad_regex", ["runner.targets=['(unclosed']"], ["runner.targets", "(unclosed", "regex"]),
    ("unparsable_override", ["runner.targets=[(unclosed]"], ["runner.targets=[(unclosed]", "quote"]),
    ("missing_model_dir", ["model.name=/no/such/dir"], ["model.name='/no/such/dir'", "does not exist"]),
    ("unknown_tiny", ["model.name=tiny:nosuch"], ["tiny:nosuch", "tiny:llava_next"]),
    ("calib_dir", ["calib.source=llava_json", "calib.path={tmp}"], ["is a directory"]),
    ("calib_missing", ["calib.source=llava_json", "calib.path={tmp}/nope.json"], ["nope.json", "does not exist"]),
    ("sweep_without_m", ["method=wanda,tamp"], ["method=wanda,tamp", "-m"]),
    ("one_bad_cell", ["-m", "method=wanda,tamp", "sparsity.target=0.5,1.5"], ["sparsity.target=1.5", "cell"]),
    ("resume_nothing", ["resume={tmp}/never"], ["resume=", "does not exist"]),
    ("output_dir_is_file", ["paths.output_dir={tmp}/file/x"], ["is a file", "output_dir"]),
]
if not __import__("torch").cuda.is_available():
    BAD.append(("cuda_without_gpu", ["runner.device=cuda"], ["runner.device", "CUDA"]))


@pytest.mark.parametrize(("case", "args", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_before_anything_loads(case, args, fragments, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    args = [a.format(tmp=tmp_path) for a in args]
    with pytest.raises(PreflightError) as err:
        check_command(args)
    message = str(err.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("args", [
    [],
    ["method=sparsegpt", "sparsity=nm_2_4"],
    ["sparsity.pattern=2:4"],
    ["model=tiny_qwen2_5_vl", "method=tamp", "sparsity.target=0.6", "runner.offload=true"],
    ["-m", "method=wanda,tamp", "sparsity.target=0.5,0.6,0.7"],
    ["-m", "+experiment=toy_demo"],
    ["--cfg", "job"],
])
def test_good_commands_pass(args: list[str]) -> None:
    assert check_command(args) >= 0


def test_a_gpu_study_checks_on_a_cpu_machine_without_its_weights() -> None:
    assert check_command(["-m", "+experiment=table2_llava_next"], local=False) >= 7
    if not __import__("torch").cuda.is_available():
        with pytest.raises(PreflightError, match="no CUDA device"):
            check_command(["-m", "+experiment=table2_llava_next"])


def test_the_cells_of_an_experiment_are_checked() -> None:
    assert check_command(["-m", "+experiment=toy_demo"]) == 9
    assert check_command(["-m", "method=wanda,tamp", "sparsity.target=0.5,0.6,0.7"]) == 6


def _cli(args: list[str], out: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tamp.run", *args, f"paths.output_dir={out}"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)
    return proc, time.perf_counter() - start


@pytest.fixture(scope="module")
def import_seconds() -> float:
    """What `import tamp.run` alone costs on this machine now (torch dominates): the baseline."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import tamp.run"], cwd=REPO, env=ENV, check=True, timeout=120)
    return time.perf_counter() - start


@pytest.mark.parametrize("args", [["method.foo=1"], ["method=nosuchmethod"], ["-m", "method=wanda,owl", "seed=-1"],
                                  ["model=llava_next_8b", "method=tamp", "method.tokens.knn=0"]])
def test_the_cli_exits_2_with_one_line_in_seconds_and_writes_nothing(args, tmp_path: Path, import_seconds) -> None:
    out = tmp_path / "outputs"
    proc, seconds = _cli(args, out)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("tamp: error: "), proc.stderr
    assert not out.exists(), "nothing may be written for a command that was refused"
    # composing and checking costs about a second beyond the imports; loading an 8B model, minutes
    assert seconds < 2 * import_seconds + 5, f"{seconds:.1f}s to a config error (imports: {import_seconds:.1f}s)"


def _completed_run(compose_cfg, run_dir: Path, *overrides: str) -> dict:
    """A completed run made in this process (what is checked is the refusal, as typed, that follows)."""
    from tamp.cli.run_command import run

    run(compose_cfg(["logger=none", "calib.num_samples=2", "runner.progress=false", *overrides]), run_dir)
    return json.loads((run_dir / "results.json").read_text())


def test_a_completed_run_is_never_overwritten_by_another_config(compose_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "wanda"
    before = _completed_run(compose_cfg, run_dir)
    assert before["status"] == "completed" and before["method"]["name"] == "wanda"
    for args in ([f"resume={run_dir}", "method=sparsegpt"], [f"hydra.run.dir={run_dir}", "method=sparsegpt"]):
        proc = subprocess.run([sys.executable, "-m", "tamp.run", "logger=none", "calib.num_samples=2", *args],
                              cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert json.loads((run_dir / "results.json").read_text()) == before, "the completed run was touched"
    assert "completed run" in proc.stderr or "another configuration" in proc.stderr
