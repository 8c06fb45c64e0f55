"""The toy zoo's model end to end on the micro recipes: build, cache, encode, load, prune, evaluate.

`micro_next` is the default model's kind (a LLaVA-NeXT on the panel world, started from `micro`'s
weights), `micro` the v1 model's (a LLaVA-1.5 on the first world).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tamp.cli.run_command import run
from tamp.data.conversations import record_from_dict, to_messages
from tamp.data.sample import IMAGE
from tamp.models.llava import LlavaAdapter
from tamp.models.llava_next import LlavaNextAdapter
from tamp.models.loading import load_model
from tamp.zoo import cache as zoo_cache
from tamp.zoo import worlds
from tamp.zoo.encode import IGNORE, encode_records, image_processor_pixels
from tamp.zoo.recipe import DEFAULT, MICRO, MICRO_NEXT, V1, TrainRecipe, recipe_hash, replace
from tamp.zoo.worlds import PANELS

#: the micro zoo recipes this module builds in the session's zoo_cache_dir (started early: conftest.py)
ZOO_BUILDS = ("micro_next",)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache_dir(zoo_cache_dir: Path) -> Path:
    return zoo_cache_dir


@pytest.fixture(scope="module")
def micro_next(cache_dir: Path) -> zoo_cache.ZooBuild:
    return zoo_cache.ensure_zoo("micro_next", cache_dir, progress=False)


@pytest.fixture(scope="module")
def micro(cache_dir: Path) -> zoo_cache.ZooBuild:
    return zoo_cache.ensure_zoo("micro", cache_dir, progress=False)


def test_recipe_hash_is_stable_and_follows_the_recipe() -> None:
    assert recipe_hash(MICRO) == recipe_hash(replace(MICRO))
    assert recipe_hash(replace(MICRO, name="renamed")) == recipe_hash(MICRO), "the name is not the recipe"
    changed = [
        replace(MICRO, train=replace(MICRO.train, lr=1e-3)),
        replace(MICRO, data=replace(MICRO.data, train=481)),
        replace(MICRO, model=replace(MICRO.model, layers=3)),
        replace(MICRO, train=TrainRecipe()),
        replace(MICRO, data=replace(MICRO.data, world="panels")),
        replace(MICRO_NEXT, model=replace(MICRO_NEXT.model, tiles=(2, 2))),
        MICRO_NEXT,
        replace(MICRO_NEXT, train=replace(MICRO_NEXT.train, init="")),
        DEFAULT,
        V1,
    ]
    hashes = {recipe_hash(r) for r in changed}
    assert len(hashes) == len(changed) and recipe_hash(MICRO) not in hashes
    code = "from tamp.zoo.recipe import MICRO, recipe_hash; print(recipe_hash(MICRO))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == recipe_hash(MICRO), "the hash must not depend on the process"


def test_build_layout_and_cache_reuse(micro_next: zoo_cache.ZooBuild, cache_dir: Path, monkeypatch) -> None:
    micro = micro_next
    assert micro.root == cache_dir / "zoo" / recipe_hash(MICRO_NEXT)
    assert (micro.data_dir / "calib.json").is_file() and (micro.model_dir / "model.safetensors").is_file()
    assert all((micro.data_dir / f"test_{t}.json").is_file() for t in PANELS.task_names)
    info = json.loads((micro.root / "build.json").read_text())
    assert info["hash"] == micro.root.name and set(info["test_answer_accuracy"]) == set(PANELS.task_names)
    assert info["train"]["final_loss"] < info["train"]["loss_curve"][0], "training lowered the loss"

    def no_training(*args, **kwargs):
        raise AssertionError("a cached build was rebuilt")

    monkeypatch.setattr(zoo_cache, "_build", no_training)
    again = zoo_cache.ensure_zoo("zoo:micro_next", cache_dir)
    assert again.root == micro.root and again.info == micro.info


def test_model_loads_like_any_llava_next_with_a_word_level_tokenizer(micro_next: zoo_cache.ZooBuild) -> None:
    model, processor, adapter = load_model(str(micro_next.model_dir), dtype="float32")
    assert isinstance(adapter, LlavaNextAdapter) and adapter.family == "llava_next"
    assert type(model).__name__ == "LlavaNextForConditionalGeneration" and model.config.image_grid_pinpoints
    assert model.model.image_newline.shape == (model.config.text_config.hidden_size,)
    tokenizer = processor.tokenizer
    assert len(tokenizer) == len(PANELS.vocabulary()) + 8  # 5 specials + USER, ASSISTANT, ':'
    words = "which row of its panel is the red square in ?".split()
    ids = tokenizer("which row of its panel is the red square in?")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == words
    for linear in (m for m in adapter.decoder_blocks().modules() if isinstance(m, torch.nn.Linear)):
        assert linear.in_features % 8 == 0, "2:4 and 4:8 need in_features divisible by 8"


def test_v1_kind_loads_as_llava(micro: zoo_cache.ZooBuild) -> None:
    model, processor, adapter = load_model(str(micro.model_dir), dtype="float32")
    assert isinstance(adapter, LlavaAdapter) and adapter.family == "llava"
    assert len(processor.tokenizer) == len(worlds.V1.vocabulary()) + 8


def _first_image(build: zoo_cache.ZooBuild, raw: dict):
    from PIL import Image

    with Image.open(build.data_dir / raw["image"]) as img:
        return [img.convert("RGB")]


@pytest.mark.parametrize("recipe", ["micro", "micro_next"])
def test_bulk_encoding_equals_the_adapter(recipe: str, cache_dir: Path, request) -> None:
    """Training sees exactly what calibration and evaluation see: ids, answer labels, pixels."""
    build = request.getfixturevalue(recipe)
    model, processor, adapter = load_model(str(build.model_dir), dtype="float32")
    records = json.loads((build.data_dir / "train.json").read_text())[:16]
    if recipe == "micro":  # the first world mixes text-only questions in
        assert any("image" in r for r in records) and any("image" not in r for r in records)
        n_image, pixels = model.config.image_seq_length, None
    else:
        assert all("image" in r for r in records)
        n_image, pixels = 120, image_processor_pixels(processor.image_processor)
    bulk = encode_records(records, build.data_dir, processor.tokenizer, n_image, pixels)
    for i, raw in enumerate(records):
        images = _first_image(build, raw) if "image" in raw else None
        sample = adapter.encode(to_messages(record_from_dict(raw, i)), images)
        batch = bulk.batch(torch.tensor([i]), processor.tokenizer.pad_token_id)
        assert torch.equal(batch["input_ids"], sample.inputs["input_ids"]), raw["id"]
        assert torch.equal(batch["labels"], sample.labels), raw["id"]
        assert (batch["labels"] != IGNORE).sum() == 2, "the answer word and </s>"
        if images:
            assert torch.allclose(batch["pixel_values"], sample.inputs["pixel_values"], atol=1e-6)
            if "image_sizes" in sample.inputs:
                assert torch.equal(batch["image_sizes"], sample.inputs["image_sizes"])
        if pixels is not None:  # the model's own image processor: the very same forward
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            assert torch.equal(logits, model(**sample.inputs).logits), raw["id"]


def test_calibration_and_test_samples_are_long_and_image_dominated(micro_next: zoo_cache.ZooBuild) -> None:
    """The paper's regime at toy scale: > 100 tokens a sample, >= 80% of them image tokens (LLaVA-NeXT: ~2,900, 92%)."""
    micro = micro_next
    model, processor, adapter = load_model(str(micro.model_dir), dtype="float32")
    for split in ("calib", "test"):
        for i, raw in enumerate(json.loads((micro.data_dir / f"{split}.json").read_text())):
            messages = to_messages(record_from_dict(raw, i))
            if split == "test":  # what lmms-eval scores: the question and the assistant prefix
                inputs = adapter.process(adapter.render(messages[:1], True), _first_image(micro, raw))
                modality = adapter.modality_ids(inputs["input_ids"])
            else:
                modality = adapter.encode(messages, _first_image(micro, raw)).modality_ids
            share = (modality == IMAGE).float().mean().item()
            assert modality.numel() > 100 and share >= 0.8, (split, raw["id"], modality.numel(), share)




@pytest.mark.parametrize(("recipe", "method"), [("micro", "wanda"), ("micro", "tamp"), ("micro_next", "tamp")])
def test_micro_zoo_prunes_and_evaluates_end_to_end(compose_cfg, cache_dir: Path, tmp_path: Path, recipe: str,
                                                    method: str, request) -> None:
    micro = request.getfixturevalue(recipe)
    world = worlds.V1 if recipe == "micro" else PANELS
    cfg = compose_cfg([
        "+experiment=toy_demo", f"+cell={method}_50", f"model.name=zoo:{recipe}", f"paths.cache_dir={cache_dir}",
        "calib.num_samples=8", "eval.limit=2", "logger=none", "runner.progress=false",
    ])
    assert cfg.calib.path == str(micro.data_dir / "calib.json")
    out = run(cfg, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert out["status"] == saved["status"] == "completed"
    assert set(saved["scores"]) == {f"tamp_zoo_{t}" for t in world.task_names}
    assert all(saved["primary_metric"][t] == "exact_match,none" for t in saved["scores"])
    assert abs(saved["sparsity"]["achieved"] - 0.5) < 0.02
    assert os.environ[zoo_cache.ZOO_DIR_ENV] == str(micro.data_dir.resolve())


@pytest.mark.slow
def test_demo_sweep_on_the_micro_zoo_gives_a_report(micro, cache_dir: Path, tmp_path: Path) -> None:
    """The demo's 9-cell sweep as `make demo` runs it, on the micro recipe and 2 documents per task."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = [sys.executable, "-m", "tamp.run", "-m", "+experiment=toy_demo", f"hydra.sweep.dir={tmp_path}",
           "model.name=zoo:micro", f"paths.cache_dir={cache_dir}", "calib.num_samples=8", "eval.limit=2",
           "runner.progress=false"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.rglob("results.json"))]
    assert len(results) == 9 and all(r["status"] == "completed" for r in results), [r.get("error") for r in results]
    from tamp.cli.report_command import main as report_main

    assert report_main([str(tmp_path)]) == 0
    assert (tmp_path / "report.md").is_file() and (tmp_path / "sparsity_vs_rel.png").is_file()
