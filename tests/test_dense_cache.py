"""A sweep's dense scores are reused only by cells whose dense model is scored the same way.

Issue 32.2: in `-m model=zoo_llava_next method=dense model.dtype=float32,bfloat16 eval=zoo` the bfloat16
cell logged "dense scores reused" and recorded the float32 model's scores (position 0.55 where the
bfloat16 model alone scores 0.45): the cache was keyed by the model name and eval settings only. The key
is now every setting the report pairs a run with its dense run by (tamp.reporting.keys.table_items).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tamp.cli.dense_cache import DenseCache, weights_identity
from tamp.cli.runner import dense_cache
from tamp.cli.schema import validate

BASE = ["model=tiny_llava_next", "method=dense", "eval=tiny", "logger=none"]
#: each changes what the dense model scores, so none may reuse the base's scores
CHANGES = [
    "model.dtype=bfloat16",
    "runner.precision=bf16-mixed",
    "model.use_audio_in_video=true",
    "model.name=tiny:llava",
    "eval.limit=3",
    "eval.batch_size=1",
    "eval.max_new_tokens=2",
    "seed=7",  # a tiny random model's weights are drawn with the seed
]


def _entry(compose_cfg, overrides: list[str], cache_dir: Path) -> DenseCache:
    cfg = compose_cfg([*BASE, *overrides])
    config = OmegaConf.to_container(cfg, resolve=True)
    settings = validate(cfg) if "model.use_audio_in_video=true" not in overrides else None
    seed = cfg.seed if str(cfg.model.name).startswith("tiny:") else None
    if settings is not None:
        entry = dense_cache(settings, config, cache_dir)
        assert entry == DenseCache.for_cell(config, seed, cache_dir)
        return entry
    return DenseCache.for_cell(config, seed, cache_dir)  # (validation wants an audio-visual family for it)


@pytest.mark.parametrize("change", CHANGES)
def test_every_setting_that_changes_the_dense_scores_changes_the_entry(compose_cfg, tmp_path: Path,
                                                                       change: str) -> None:
    base = _entry(compose_cfg, [], tmp_path)
    other = _entry(compose_cfg, [change], tmp_path)
    assert other.path != base.path, f"{change} shares the base's dense scores"
    base.write({"scores": {"task": {"acc,none": 0.5}}}, "cpu")
    assert base.read() == {"scores": {"scores": {"task": {"acc,none": 0.5}}}, "device": "cpu"}
    assert other.read() is None
    # even a file at the reader's own path is read only when it was written for the reader's settings
    other.path.write_bytes(base.path.read_bytes())
    assert other.read() is None


def test_a_pruned_cell_finds_the_dense_scores_of_its_own_table(compose_cfg, tmp_path: Path) -> None:
    """What does not define the table (method, sparsity, calibration, seeds of the draw) shares the entry."""
    dense = _entry(compose_cfg, [], tmp_path)
    pruned = _entry(compose_cfg, ["method=tamp", "sparsity.target=0.6", "calib.seed=3", "calib.num_samples=2",
                                  "runner.progress=false"], tmp_path)
    assert pruned == dense


def test_a_file_from_an_older_tamp_is_not_reused(compose_cfg, tmp_path: Path) -> None:
    entry = _entry(compose_cfg, [], tmp_path)
    entry.path.parent.mkdir(parents=True, exist_ok=True)
    entry.path.write_text(json.dumps({"scores": {"task": {"acc,none": 0.9}}}))  # format 1: bare scores
    assert entry.read() is None
    entry.path.write_text("{not json")
    assert entry.read() is None


def test_a_local_model_folder_saved_again_is_another_model(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x" * 16)
    (folder / "config.json").write_text("{}")
    before = weights_identity(str(folder))
    assert before is not None and weights_identity(str(folder)) == before
    later = time.time() + 5
    os.utime(folder / "model.safetensors", (later, later))
    assert weights_identity(str(folder)) != before
    assert weights_identity("tiny:llava") is None and weights_identity("zoo") is None


@pytest.fixture(scope="module")
def zoo_dtype_sweep(zoo_cache_dir: Path, tmp_path_factory) -> dict[str, dict]:
    """The issue's sweep (float32 then bfloat16 dense cells sharing one cache folder) and a lone bfloat16 run."""
    from hydra import compose, initialize_config_dir

    from tamp.cli import CONF_DIR
    from tamp.cli.run_command import run
    from tamp.cli.schema import register_schema

    root = tmp_path_factory.mktemp("dtype_sweep")
    common = ["model=zoo_llava_next", "method=dense", "eval=zoo", "eval.limit=20", "logger=none",
              "runner.progress=false", f"paths.cache_dir={zoo_cache_dir}"]
    register_schema()
    out = {}
    cells = (("f32", "float32", root / ".cache"), ("bf16", "bfloat16", root / ".cache"),
             ("bf16_again", "bfloat16", root / ".cache"), ("alone", "bfloat16", None))
    for name, dtype, cache in cells:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("run", overrides=[*common, f"model.dtype={dtype}"])
        run(cfg, root / name, cache)
        out[name] = json.loads((root / name / "results.json").read_text())
    return out


def test_a_dtype_sweep_scores_each_dense_model_itself(zoo_dtype_sweep: dict[str, dict]) -> None:
    f32, bf16, alone = zoo_dtype_sweep["f32"], zoo_dtype_sweep["bf16"], zoo_dtype_sweep["alone"]
    assert bf16["scores"] == alone["scores"], "the bfloat16 cell recorded scores of another model"
    assert bf16["scores"] != f32["scores"], "the two dtypes must score differently for this test to tell"
    assert bf16["devices"]["eval"] == alone["devices"]["eval"] == "cpu"


def test_a_cell_of_the_same_settings_reuses_the_scores(zoo_dtype_sweep: dict[str, dict]) -> None:
    again, bf16 = zoo_dtype_sweep["bf16_again"], zoo_dtype_sweep["bf16"]
    assert again["scores"] == bf16["scores"]
    assert again["timings"]["eval_s"] < 0.2 * bf16["timings"]["eval_s"], "the same dense model was scored again"
    assert again["devices"]["eval"] == "cpu", "reused scores keep the device they were computed on"


def test_a_saved_checkpoint_is_compared_with_the_dense_run_of_its_source_model(compose_cfg, tmp_path: Path) -> None:
    """Issue 32.8: a saved pruned checkpoint evaluated as is logged no Rel.% to W&B; its reference is the
    dense run of the model its manifest names, scored with the same eval settings (as the report pairs it)."""
    from tamp.cli.runner import dense_reference
    from tamp.tracking.run_record import RunRecord, Sparsity

    cache_dir = tmp_path / ".cache"
    source = _entry(compose_cfg, [], cache_dir)  # the sweep's dense cell of tiny:llava_next
    source.write({"scores": {"task": {"acc,none": 0.8}}}, "cpu")
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "config.json").write_text("{}")
    cfg = compose_cfg([*BASE, f"model.name={saved}"])
    settings = validate(cfg)
    cache = dense_cache(settings, OmegaConf.to_container(cfg, resolve=True), cache_dir)
    manifest = {"method": "wanda", "source_model": {"name": "tiny:llava_next"}}
    record = RunRecord(sparsity=Sparsity(target=0.0, achieved=0.5, manifest=manifest))
    assert dense_reference(settings, cache, record) == {"scores": {"task": {"acc,none": 0.8}}}
    other = RunRecord(sparsity=Sparsity(target=0.0, achieved=0.5, manifest={"source_model": {"name": "tiny:llava"}}))
    assert dense_reference(settings, cache, other) is None, "another source model's dense run is not the reference"
    unknown = RunRecord(sparsity=Sparsity(target=0.0, achieved=0.5, manifest={"method": "wanda"}))
    assert dense_reference(settings, cache, unknown) is None
    dense = RunRecord(sparsity=Sparsity(target=0.0, achieved=0.0))
    assert dense_reference(settings, cache, dense) is dense
