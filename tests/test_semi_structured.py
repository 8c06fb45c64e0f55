"""2:4 linears on semi-structured sparse kernels (tamp.models.semi_structured, benchmarks/bench_sparse24.py).

On CPU: the 2:4 test, every refusal a user can hit before a GPU is involved (one line naming the
linear or the device), and the benchmark end to end with its 2:4 rows skipped for a stated reason.
The conversion itself and the outputs need a CUDA GPU with sparse tensor cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tamp.models.semi_structured import is_two_four, plan_conversion, to_semi_structured
from tamp.pruning.masks import make_mask

ROOT = Path(__file__).resolve().parents[1]
SPARSE_GPU = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)
needs_sparse_gpu = pytest.mark.skipif(
    not SPARSE_GPU, reason="needs a CUDA GPU with compute capability >= 8.0 (semi-structured sparse kernels)"
)


def _two_four(rows: int, cols: int, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> torch.Tensor:
    weight = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return weight.masked_fill(make_mask(weight.abs().float(), 0.5, "2:4"), 0)


class Pair(nn.Module):
    """Two linears: `a` pruned 2:4, `b` dense."""

    def __init__(self, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.a = nn.Linear(64, 32, bias=False, dtype=dtype)
        self.b = nn.Linear(64, 32, bias=False, dtype=dtype)
        with torch.no_grad():
            self.a.weight.copy_(_two_four(32, 64, dtype))


def test_is_two_four_on_exact_pattern_and_all_zero() -> None:
    assert is_two_four(_two_four(32, 64))
    assert is_two_four(torch.zeros(8, 16))


def test_is_two_four_rejects_the_wrong_dimension_and_three_non_zeros() -> None:
    along_outputs = _two_four(64, 32).t().contiguous()  # 2:4 down the columns, not along the inputs
    assert not is_two_four(along_outputs)
    weight = _two_four(32, 64)
    weight[5, 8:12] = torch.tensor([1.0, 2.0, 3.0, 0.0])  # one group with 3 non-zeros
    assert not is_two_four(weight)
    assert not is_two_four(torch.ones(4, 6))  # input width not a multiple of 4


def test_cpu_model_is_refused_naming_the_device() -> None:
    with pytest.raises(RuntimeError, match=r"'a' is on cpu.*CUDA.*compute capability >= 8\.0") as info:
        to_semi_structured(Pair())
    assert "\n" not in str(info.value)


def test_a_named_linear_that_is_not_two_four_is_named() -> None:
    with pytest.raises(ValueError, match=r"'b' is not 2:4") as info:
        to_semi_structured(Pair(), names=["a", "b"])
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"no module named 'c'"):
        to_semi_structured(Pair(), names=["c"])


def test_default_selection_skips_dense_linears_and_refuses_float32_and_bad_shapes() -> None:
    convert, skipped = plan_conversion(Pair())
    assert list(convert) == ["a"] and skipped == {"b": "not 2:4"}
    with pytest.raises(ValueError, match=r"'a' has dtype torch.float32.*bfloat16"):
        plan_conversion(Pair(torch.float32))
    odd = nn.Sequential(nn.Linear(64, 8, bias=False, dtype=torch.bfloat16))  # 8 outputs < 16
    with torch.no_grad():
        odd[0].weight.copy_(_two_four(8, 64))
    with pytest.raises(ValueError, match=r"'0' has shape 8x64.*multiples of.*16x16"):
        plan_conversion(odd, names=["0"])
    assert "shape 8x64" in plan_conversion(odd)[1]["0"]
    with pytest.raises(ValueError, match="nothing to convert"):
        to_semi_structured(nn.Sequential(nn.Linear(8, 8)))


def test_benchmark_runs_on_cpu_and_says_why_the_two_four_rows_are_skipped() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_sparse24.py"), "--device", "cpu", "--tiny",
         "--tokens", "16", "--repeats", "1", "--steps", "1"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| 16 | prefill | 256 |" in done.stdout
    assert "2:4 rows skipped: RuntimeError: to_semi_structured:" in done.stdout
    assert "is on cpu" in done.stdout


@needs_sparse_gpu
def test_converted_linear_matches_dense_with_zeros() -> None:
    model = Pair().cuda()
    x = torch.randn(3, 5, 64, device="cuda", dtype=torch.bfloat16)
    reference = torch.nn.functional.linear(x, model.a.weight)
    report = to_semi_structured(model)
    assert report.converted == ["a"] and report.skipped == {"b": "not 2:4"}
    assert not model.a.weight.requires_grad
    with torch.inference_mode():
        out = model.a(x)
    assert out.shape == reference.shape
    torch.testing.assert_close(out, reference, rtol=1.6e-2, atol=1e-2 * float(reference.abs().max()))


@needs_sparse_gpu
def test_benchmark_on_the_gpu_converts_and_stays_within_tolerance() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_sparse24

    rows = bench_sparse24.run("cuda", tiny=True, tokens=64, steps=2, repeats=1)
    prefill = [r for r in rows if r["phase"] == "prefill"]
    assert all(r["ok"] for r in prefill), bench_sparse24.table(rows)
    assert all(r["sparse_ms"] is not None for r in rows), bench_sparse24.table(rows)


# --- the option: runner.sparse_kernels=semi_structured ---------------------------------------------------
def test_the_option_is_checked_before_the_pruning(compose_cfg) -> None:
    """What the kernels need is a config error, in one line naming the key, not a failure after pruning."""
    from tamp.cli.preflight import check_run_config

    on = ["runner.sparse_kernels=semi_structured"]
    with pytest.raises(ValueError, match=r"^runner.sparse_kernels='sparse' is unknown; valid: none, semi_structured"):
        check_run_config(compose_cfg(["runner.sparse_kernels=sparse"]))
    with pytest.raises(ValueError, match=r"runs 2:4 weights only, but sparsity.pattern=unstructured; valid: "
                                         r"sparsity.pattern=2:4"):
        check_run_config(compose_cfg([*on, "method=wanda"]))
    with pytest.raises(ValueError, match="needs a CUDA GPU .* the evaluation runs on the CPU"):
        check_run_config(compose_cfg([*on, "method=wanda", "sparsity.pattern=2:4", "runner=cpu"]))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA GPU with compute capability >= 8.0 for the evaluation, "
                                             "but no CUDA device is present"):
            check_run_config(compose_cfg([*on, "method=wanda", "sparsity.pattern=2:4"]))
    check_run_config(compose_cfg(["method=wanda", "sparsity.pattern=2:4"]))  # off by default: nothing asked


def test_the_evaluation_converts_the_pruned_targets_and_leaves_a_dense_model(compose_cfg, monkeypatch) -> None:
    """The runner step: a 2:4-pruned model's target linears go to the conversion (here on the CPU, which it
    refuses naming the device); a cell that prunes nothing on a dense model converts nothing."""
    from tiny_models import fresh_tiny

    import tamp
    from tamp.cli import runner
    from tamp.cli.schema import validate

    bundle = fresh_tiny("llava_next")
    bundle.model.to(torch.bfloat16)  # the kernels' dtype: the conversion's last check is then the device
    on = ["runner.sparse_kernels=semi_structured", "model=tiny_llava_next"]
    dense = validate(compose_cfg([*on, "method=dense", "sparsity.pattern=2:4"]))
    assert runner.sparse_kernels(dense, bundle.model, bundle.adapter) is None
    off = validate(compose_cfg(["method=wanda", "sparsity.pattern=2:4"]))
    assert runner.sparse_kernels(off, bundle.model, bundle.adapter) is None

    config = {"method": {"pruner": "wanda"}, "sparsity": {"target": 0.5, "pattern": "2:4"}, "progress": False}
    tamp.prune(bundle.model, [bundle.example_sample(0)], config, adapter=bundle.adapter)
    asked: list[list[str]] = []
    monkeypatch.setattr("tamp.models.semi_structured.to_semi_structured",
                        lambda model, names: asked.append(names) or to_semi_structured(model, names))
    pruned = validate(compose_cfg([*on, "method=wanda", "sparsity.pattern=2:4"]))
    with pytest.raises(RuntimeError, match="is on cpu; semi-structured sparse kernels need CUDA"):
        runner.sparse_kernels(pruned, bundle.model, bundle.adapter)
    targets = [n for block in bundle.adapter.target_linears() for n in block]
    assert asked == [targets] and len(targets) > 0
    # the same pruned model evaluated as a saved checkpoint (method=dense): its 2:4 targets are found
    asked.clear()
    with pytest.raises(RuntimeError, match="is on cpu"):
        runner.sparse_kernels(dense, bundle.model, bundle.adapter)
    assert asked == [targets]


@needs_sparse_gpu
def test_a_two_four_run_is_evaluated_on_the_sparse_kernels(compose_cfg, tmp_path: Path) -> None:
    """The whole cell on the GPU: pruned 2:4 in bf16, every target linear converted before lmms-eval, the
    conversion recorded in results.json beside the scores."""
    import json

    from tamp.cli.run_command import run

    cfg = compose_cfg(["model=tiny_llava_next", "model.dtype=bfloat16", "method=wanda", "sparsity.pattern=2:4",
                       "runner=gpu", "runner.sparse_kernels=semi_structured", "eval=tiny", "eval.limit=2",
                       "calib.num_samples=2", "logger=none", "runner.progress=false"])
    run(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["status"] == "completed", saved.get("error")
    kernels = saved["devices"]["sparse_kernels"]
    assert kernels["kind"] == "semi_structured" and kernels["converted"] == len(saved["sparsity_per_linear"])
    assert saved["scores"]
