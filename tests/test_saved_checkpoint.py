"""Saved pruned checkpoints round-trip: tamp re-evaluates them with their real sparsity, lmms-eval's CLI loads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tamp.cli.run_command import run
from tamp.models.loading import load_model
from tamp.models.mask_file import MASKS_FILE, load_masks, save_masks
from tamp.models.saving import MANIFEST

REPO = Path(__file__).resolve().parents[1]
QUIET = ["runner.progress=false", "logger=none", "calib.num_samples=2"]




@pytest.fixture(scope="module")
def pruned(compose_cfg, tmp_path_factory) -> Path:
    """A tiny LLaVA pruned by wanda to 50% and saved with its masks through runner.save_dir."""
    root = tmp_path_factory.mktemp("pruned")
    save_dir = root / "ckpt"
    cfg = compose_cfg(["model=tiny_llava", "eval=none", *QUIET, f"runner.save_dir={save_dir}", "runner.save_masks=true"])
    run(cfg, root / "run")
    return save_dir


def test_save_dir_holds_model_manifest_and_packed_masks(pruned: Path) -> None:
    manifest = json.loads((pruned / MANIFEST).read_text())
    assert manifest["overall_sparsity"] == pytest.approx(0.5)
    assert (manifest["method"], manifest["target"], manifest["masks"]) == ("wanda", 0.5, MASKS_FILE)
    model, _, adapter = load_model(str(pruned), dtype="float32")
    masks = load_masks(pruned / MASKS_FILE)
    linears = {name: lin for block in adapter.target_linears() for name, lin in block.items()}
    assert set(masks) == set(linears)
    for name, linear in linears.items():
        assert torch.equal(masks[name], linear.weight == 0), name
    # packed: one bit per weight (plus padding to a byte), not one byte
    numel = sum(m.numel() for m in masks.values())
    assert (pruned / MASKS_FILE).stat().st_size < numel // 4


def test_masks_round_trip_with_odd_sizes(tmp_path: Path) -> None:
    masks = {"a": torch.rand(3, 5) > 0.5, "b.c": torch.zeros(7, dtype=torch.bool)}
    back = load_masks(save_masks(masks, tmp_path / MASKS_FILE))
    assert all(torch.equal(back[k], masks[k]) for k in masks)


def test_saved_pruned_model_evaluated_again_records_its_real_sparsity(compose_cfg, pruned: Path, tmp_path: Path) -> None:
    cfg = compose_cfg([f"model.name={pruned}", "model.dtype=float32", "method=dense", "eval=none", *QUIET])
    run(cfg, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["sparsity"]["achieved"] == pytest.approx(0.5)  # not the 0.0 of a run that pruned nothing
    assert saved["sparsity"]["manifest"]["overall_sparsity"] == pytest.approx(0.5)
    manifest = json.loads((pruned / MANIFEST).read_text())["linears"]
    measured = saved["sparsity_per_linear"]
    assert set(measured) == set(manifest)
    assert all(measured[k]["achieved"] == pytest.approx(manifest[k]["achieved"]) for k in manifest)


def test_a_dense_model_measures_zero(compose_cfg, tmp_path: Path) -> None:
    run(compose_cfg(["model=tiny_llava", "method=dense", "eval=none", *QUIET]), tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["sparsity"]["achieved"] == 0.0 and "manifest" not in saved["sparsity"]
    assert saved["sparsity_per_linear"]


def _has_decord() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _has_decord(), reason="lmms-eval 0.7.3's llava_hf imports `decord` at module level")
def test_lmms_evals_own_cli_evaluates_the_saved_model(pruned: Path, tmp_path: Path) -> None:
    """The README's command, run from another folder: lmms-eval exits 0 even when it fails, so read its output."""
    out = tmp_path / "lmms"
    cmd = [
        sys.executable, "-m", "lmms_eval", "--model", "llava_hf",
        "--model_args", f"pretrained={pruned},device_map=cpu,dtype=float32", "--device", "cpu",
        "--tasks", "tamp_tiny_colour", "--include_path", str(REPO / "tamp" / "eval" / "tasks"),
        "--limit", "2", "--batch_size", "1", "--output_path", str(out),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    found = sorted(out.rglob("*_results.json"))
    assert proc.returncode == 0 and found, proc.stderr[-3000:]
    results = json.loads(found[-1].read_text())["results"]["tamp_tiny_colour"]
    assert isinstance(results["exact_match,none"], float)


def test_zoo_tasks_find_the_checkouts_build_from_another_folder(tmp_path: Path, monkeypatch) -> None:
    from tamp.eval.tasks.zoo import utils
    from tamp.zoo.cache import ZOO_DIR_ENV, data_dir

    checkout = tmp_path / "checkout"
    data = data_dir(None, checkout / "outputs" / "cache")
    data.mkdir(parents=True)
    record = {"id": "c0", "task": "color", "conversations": [{"value": "<image>\nWhat colour?"}],
              "answer": "red", "choices": ["red", "blue"], "image": ""}
    (data / "test_color.json").write_text(json.dumps([record]))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv(ZOO_DIR_ENV, raising=False)
    monkeypatch.setattr(utils, "CHECKOUT", checkout)
    docs = utils.zoo_docs("color")
    assert docs[0]["question"] == "What colour?" and docs[0]["answer_index"] == 0


def test_a_sparse_checkpoint_evaluated_as_dense_is_not_the_rel_reference() -> None:
    from tamp.tracking.run_names import is_dense

    method = {"name": "dense", "pruner": "none"}
    assert is_dense({"method": method, "sparsity": {"target": 0.0, "achieved": 0.0}})
    assert not is_dense({"method": method, "sparsity": {"target": 0.0, "achieved": 0.5}})


def test_a_saved_checkpoint_evaluated_again_is_named_by_its_own_method_and_sparsity(
    compose_cfg, pruned: Path, tmp_path: Path, capsys
) -> None:
    """Issue 26.3: `model.name=DIR method=dense` printed `dense: sparsity 0.5000 (target 0.0)`, a `dense | 0%`
    row and a W&B run `model/dense`; the folder, the W&B run, the line and the row now name what it is."""
    from omegaconf import OmegaConf

    from tamp.reporting import build_report, load_results
    from tamp.tracking.run_names import name_of_config

    overrides = [f"model.name={pruned}", "model.dtype=float32", "method=dense", "eval=none", *QUIET]
    assert OmegaConf.select(compose_cfg(overrides, hydra=True), "hydra.run.dir").endswith("_wanda-saved_0.5")
    cfg = compose_cfg(overrides)
    assert name_of_config(cfg).wandb(str(pruned)) == "ckpt/wanda-saved/50%"
    capsys.readouterr()
    run(cfg, tmp_path / "again")
    assert capsys.readouterr().out.startswith("wanda (saved checkpoint): sparsity 0.5000 (measured on its weights; "
                                              "saved by wanda at target 0.5)")
    (table,) = build_report(load_results([tmp_path / "again"])).tables
    assert [(row.method, row.target, row.dense) for row in table.rows] == [("wanda (saved checkpoint)", 0.5, False)]


@pytest.mark.slow
def test_a_saved_checkpoint_evaluated_again_from_the_command_line(pruned: Path, tmp_path: Path) -> None:
    """The same as a user types it: its run folder, W&B run, printed line and report row."""
    from tamp.cli.report_command import main as report_main
    from tamp.reporting.wandb_offline import find_offline_runs, read_offline_run

    cmd = [sys.executable, "-m", "tamp.run", f"model.name={pruned}", "model.dtype=float32", "method=dense",
           "eval=none", "runner.progress=false", "logger=wandb", f"paths.output_dir={tmp_path}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("wanda (saved checkpoint): sparsity 0.5000 (measured on its weights; saved by "
                                  "wanda at target 0.5)"), proc.stdout
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.endswith("_wanda-saved_0.5"), folder.name
    (wandb_run,) = map(read_offline_run, find_offline_runs([folder]))
    assert wandb_run.name == "ckpt/wanda-saved/50%"
    assert report_main([str(folder), "--out", str(tmp_path / "report")]) == 0
    assert "| wanda (saved checkpoint) | 50% |" in (tmp_path / "report" / "report.md").read_text()


def test_a_sparse_checkpoint_without_a_manifest_is_named_once_measured(
    compose_cfg, pruned: Path, tmp_path: Path, capsys
) -> None:
    import shutil

    from tamp.reporting import build_report, load_results
    from tamp.tracking.run_names import name_of_config

    bare = tmp_path / "elsewhere"
    shutil.copytree(pruned, bare)
    (bare / MANIFEST).unlink()
    cfg = compose_cfg([f"model.name={bare}", "model.dtype=float32", "method=dense", "eval=none", *QUIET])
    assert name_of_config(cfg).folder() == "dense"  # nothing tells it apart before its weights are measured
    capsys.readouterr()
    run(cfg, tmp_path / "run")
    assert capsys.readouterr().out.startswith("unknown (saved checkpoint): sparsity 0.5000 (measured on its "
                                              "weights; no sparsity manifest beside the weights)")
    (table,) = build_report(load_results([tmp_path / "run"])).tables
    assert [(row.method, row.target, row.dense) for row in table.rows] == [("unknown (saved checkpoint)", 0.5, False)]
