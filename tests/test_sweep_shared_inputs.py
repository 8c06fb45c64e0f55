"""A sweep encodes its calibration samples and captures the block-0 inputs once per key (issue 34).

The second cell of a key loads both from SWEEP_DIR/.cache instead of decoding, encoding and forwarding
the samples again, prunes to the masks of the same cell run alone, and says in results.json what it
reused from which file. Another model dtype, seed or sample count is another key; an entry a killed cell
left half-written is never read; an entry whose bytes changed on disk is refused with a warning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tiny_models import fresh_tiny

import tamp
import tamp.pipeline.distributed as distributed
import tamp.pipeline.engine as engine_module
from tamp.cli.input_cache import InputCache
from tamp.cli.run_command import run
from tamp.models.mask_file import load_masks

BASE = ["model=tiny_llava_next", "method=wanda", "calib.num_samples=2", "runner.progress=false", "logger=none",
        "runner.save_masks=true"]


class Calls:
    """How many times the cells encoded calibration samples and captured block-0 inputs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.encoded = self.captured = 0
        real_share, real_capture = distributed.calibration_share, engine_module.capture_block_inputs

        def share(*args, **kwargs):
            self.encoded += 1
            return real_share(*args, **kwargs)

        def capture(*args, **kwargs):
            self.captured += 1
            return real_capture(*args, **kwargs)

        monkeypatch.setattr(distributed, "calibration_share", share)
        monkeypatch.setattr(engine_module, "capture_block_inputs", capture)


def _cell(compose_cfg, tmp_path: Path, folder: str, cache: Path | None, *extra: str, target: float = 0.5) -> dict:
    run(compose_cfg([*BASE, f"sparsity.target={target}", *extra]), tmp_path / folder, cache)
    return json.loads((tmp_path / folder / "results.json").read_text())


def _masks(tmp_path: Path, folder: str) -> dict[str, torch.Tensor]:
    return load_masks(tmp_path / folder / "model" / "masks.safetensors")


def test_the_second_cell_reuses_samples_and_block_inputs_and_prunes_as_alone(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(monkeypatch)
    cache = tmp_path / "sweep" / ".cache"
    first = _cell(compose_cfg, tmp_path, "sweep/0", cache)
    assert "reused" not in first and (calls.encoded, calls.captured) == (1, 1)
    second = _cell(compose_cfg, tmp_path, "sweep/1", cache, target=0.6)
    assert (calls.encoded, calls.captured) == (1, 1), "the second cell encoded or captured again"
    manifests = {kind: sorted(cache.glob(f"{kind}_*.rank0.json")) for kind in ("calibration_samples", "block_inputs")}
    assert all(len(found) == 1 for found in manifests.values()), manifests
    assert second["reused"] == {kind: str(found[0]) for kind, found in manifests.items()}
    assert all(Path(path).parent == cache for path in second["reused"].values())
    alone = _cell(compose_cfg, tmp_path, "alone", None, target=0.6)
    assert "reused" not in alone and (calls.encoded, calls.captured) == (2, 2)
    assert second["calibration"] == alone["calibration"]
    assert second["sparsity_per_linear"] == alone["sparsity_per_linear"]
    reusing, lone = _masks(tmp_path, "sweep/1"), _masks(tmp_path, "alone")
    assert reusing.keys() == lone.keys() and len(lone) == 14
    for linear, mask in lone.items():
        assert torch.equal(reusing[linear], mask), linear


@pytest.mark.parametrize("change", ["model.dtype=bfloat16", "seed=7", "calib.num_samples=1"])
def test_a_change_of_key_computes_its_own(compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          change: str) -> None:
    cache = tmp_path / "sweep" / ".cache"
    _cell(compose_cfg, tmp_path, "sweep/0", cache, "runner.save_masks=false")
    calls = Calls(monkeypatch)
    other = _cell(compose_cfg, tmp_path, "sweep/1", cache, "runner.save_masks=false", change)
    assert "reused" not in other and (calls.encoded, calls.captured) == (1, 1), f"{change} reused another key's entry"
    assert len(list(cache.glob("calibration_samples_*.rank0.json"))) == 2


def test_block_inputs_can_be_left_to_each_cell(compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """runner.share_block_inputs=false: the samples are shared, the block-0 inputs captured by every cell."""
    cache = tmp_path / "sweep" / ".cache"
    off = ("runner.save_masks=false", "runner.share_block_inputs=false")
    _cell(compose_cfg, tmp_path, "sweep/0", cache, *off)
    calls = Calls(monkeypatch)
    second = _cell(compose_cfg, tmp_path, "sweep/1", cache, *off, target=0.6)
    assert set(second["reused"]) == {"calibration_samples"} and (calls.encoded, calls.captured) == (0, 1)
    assert list(cache.glob("block_inputs_*")) == []


def test_a_bad_share_block_inputs_value_is_one_line(compose_cfg) -> None:
    from tamp.cli.schema import validate

    with pytest.raises(Exception, match=r"runner.share_block_inputs='sometimes' is unknown; valid: auto, true, false"):
        validate(compose_cfg(["runner.share_block_inputs=sometimes"]))


# --- through tamp.prune: the block-0 inputs of another run, offload or not ---


def _prune(store: InputCache | None, target: float, offload: bool = False):
    bundle = fresh_tiny("llava_next")
    sample = bundle.example_sample(0)
    samples = [sample, replace(sample, inputs={**sample.inputs, "pixel_values": sample.inputs["pixel_values"].flip(-1)})]
    config = {"method": {"pruner": "wanda"}, "sparsity": {"target": target}, "device": "cpu", "progress": False,
              "keep_masks": True, "offload": offload}
    return tamp.prune(bundle.model, samples, config, adapter=bundle.adapter, input_store=store)


def test_tamp_prune_shares_block_inputs_across_offload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _prune(InputCache(tmp_path), 0.5)
    calls = Calls(monkeypatch)
    store = InputCache(tmp_path)
    reusing = _prune(store, 0.6, offload=True)
    assert calls.captured == 0 and set(store.reused) == {"block_inputs"}
    alone = _prune(None, 0.6)
    assert all(torch.equal(reusing.masks[k], m) for k, m in alone.masks.items())


# --- the store itself: interrupted writers, changed bytes ---

TREE = {"hidden": [torch.arange(12, dtype=torch.float32).reshape(1, 3, 4)], "kwargs": [{"mask": None, "n": 3}]}


def _fresh() -> dict:
    return {"hidden": [torch.ones(1, 3, 4)], "kwargs": [{"mask": None, "n": 3}]}


def _same(a: dict, b: dict) -> bool:
    return torch.equal(a["hidden"][0], b["hidden"][0]) and a["kwargs"] == b["kwargs"]


def _never():
    raise AssertionError("a complete entry was computed again")


@pytest.mark.fast
def test_a_half_written_entry_is_not_read_as_complete(tmp_path: Path) -> None:
    store = InputCache(tmp_path)
    entry = store.entry("block_inputs", {"k": "v"})

    def killed():
        raise KeyboardInterrupt("killed while capturing")

    with pytest.raises(KeyboardInterrupt):
        store.fetch("block_inputs", {"k": "v"}, killed)
    assert not entry.manifest.exists() and not entry.data.exists()
    # killed between the data file and its manifest: the data alone is not an entry
    store.fetch("block_inputs", {"k": "v"}, lambda: TREE)
    entry.manifest.unlink()
    assert _same(store.fetch("block_inputs", {"k": "v"}, _fresh), _fresh()) and store.reused == {}
    # a manifest without its completion mark, or one cut short, is not read either
    complete = json.loads(entry.manifest.read_text())
    for text in (json.dumps({**complete, "complete": False}), json.dumps(complete)[:60]):
        entry.manifest.write_text(text)
        assert _same(store.fetch("block_inputs", {"k": "v"}, lambda: TREE), TREE) and store.reused == {}
    reader = InputCache(tmp_path)
    assert _same(reader.fetch("block_inputs", {"k": "v"}, _never), TREE)
    assert reader.reused == {"block_inputs": str(entry.manifest)}
    assert list(tmp_path.glob(".*.tmp")) == []


@pytest.mark.fast
def test_a_tampered_entry_is_refused_with_a_warning_and_computed_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = InputCache(tmp_path)
    entry = store.entry("calibration_samples", {"k": "v"})
    store.fetch("calibration_samples", {"k": "v"}, lambda: TREE)
    data = bytearray(entry.data.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor's values: same size, the header still parses
    entry.data.write_bytes(bytes(data))
    reader = InputCache(tmp_path)
    with caplog.at_level(logging.WARNING, logger="tamp"):
        got = reader.fetch("calibration_samples", {"k": "v"}, _fresh)
    assert _same(got, _fresh()) and reader.reused == {}
    assert any("has changed since it was written" in r.getMessage() and str(entry.data) in r.getMessage()
               for r in caplog.records), caplog.text
    again = InputCache(tmp_path)  # the entry was written again, whole
    assert _same(again.fetch("calibration_samples", {"k": "v"}, _never), _fresh())


@pytest.mark.fast
def test_an_entry_of_other_settings_or_a_link_is_not_read(tmp_path: Path) -> None:
    InputCache(tmp_path, {"model.dtype": "float32"}).fetch("block_inputs", {"k": "v"}, lambda: TREE)
    other = InputCache(tmp_path, {"model.dtype": "bfloat16"})
    assert _same(other.fetch("block_inputs", {"k": "v"}, _fresh), _fresh()) and other.reused == {}
    store = InputCache(tmp_path / "links")
    entry = store.entry("block_inputs", {"k": "v"})
    store.fetch("block_inputs", {"k": "v"}, lambda: TREE)
    moved = entry.data.with_name("elsewhere.safetensors")
    entry.data.rename(moved)
    entry.data.symlink_to(moved)
    reader = InputCache(tmp_path / "links")
    assert _same(reader.fetch("block_inputs", {"k": "v"}, _fresh), _fresh()) and reader.reused == {}
    assert not entry.data.is_symlink(), "the entry was not written again as a file of its own"


# --- a two-process world: every rank stores and loads its own share, the collectives stay in step ---


def _cells_in_world(fabric, cells: list[tuple[object, str, str | None]]) -> None:
    from tamp.cli.runner import run_cell

    for sealed, run_dir, cache in cells:
        run_cell(fabric, sealed, run_dir, cache)


@pytest.mark.slow  # spawns a 2-process Fabric world and runs three cells in it: ~40 s on a loaded 2-core box
def test_a_two_process_cell_reuses_every_ranks_share(compose_cfg, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from tamp.cli.runner import SealedConfig, make_fabric

    media = tmp_path / "data" / "media"
    media.mkdir(parents=True)
    records = []
    for i in range(4):  # a LLaVA JSON file: rank 0 draws, each rank encodes its share (the collectives)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(media / f"{i}.png")
        records.append({"id": f"r{i}", "image": f"{i}.png", "conversations": [
            {"from": "human", "value": f"<image>\nWhat is in picture {i}?"}, {"from": "gpt", "value": f"Shapes {i}."}]})
    calib = tmp_path / "data" / "calib.json"
    calib.write_text(json.dumps(records))
    cache = tmp_path / "sweep" / ".cache"
    base = ["calib.source=llava_json", f"calib.path={calib}", f"calib.media_dir={media}", "calib.num_samples=4",
            "runner=ddp_cpu", "runner.save_masks=true", "runner.progress=false", "logger=none"]
    cells = [(SealedConfig(compose_cfg([*base, f"sparsity.target={target}"])), str(tmp_path / folder), cached)
             for folder, target, cached in (("sweep/0", 0.5, str(cache)), ("sweep/1", 0.6, str(cache)),
                                            ("alone", 0.6, None))]
    make_fabric(cells[0][0].settings).launch(_cells_in_world, cells)
    second = json.loads((tmp_path / "sweep" / "1" / "results.json").read_text())
    assert set(second["reused"]) == {"calibration_samples", "block_inputs"}
    for kind in second["reused"]:
        assert sorted(p.name.rsplit(".", 2)[1] for p in cache.glob(f"{kind}_*.json")) == ["rank0", "rank1"]
    alone = json.loads((tmp_path / "alone" / "results.json").read_text())
    assert second["calibration"] == alone["calibration"] and sorted(second["calibration"]["ids"]) == ["r0", "r1", "r2", "r3"]
    reusing, lone = _masks(tmp_path, "sweep/1"), _masks(tmp_path, "alone")
    assert reusing.keys() == lone.keys() and all(torch.equal(reusing[k], m) for k, m in lone.items())


def _llava_json(tmp_path: Path, count: int = 2) -> tuple[Path, Path]:
    """A LLaVA JSON calibration file and its media folder: `count` records of one PNG each."""
    import numpy as np
    from PIL import Image

    media = tmp_path / "data" / "media"
    media.mkdir(parents=True)
    records = []
    for i in range(count):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(media / f"{i}.png")
        records.append({"id": f"r{i}", "image": f"{i}.png", "conversations": [
            {"from": "human", "value": f"<image>\nWhat is in picture {i}?"}, {"from": "gpt", "value": f"Shapes {i}."}]})
    calib = tmp_path / "data" / "calib.json"
    calib.write_text(json.dumps(records))
    return calib, media


@pytest.mark.parametrize("named", [True, False], ids=["media_dir", "next_to_the_file"])
def test_an_image_replaced_under_its_name_is_another_calibration_set(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named: bool
) -> None:
    """The JSON file is unchanged, one picture's pixels are not: the next cell encodes again (else it would
    prune with the old picture's statistics and say nothing)."""
    import os

    import numpy as np
    from PIL import Image

    calib, media = _llava_json(tmp_path)
    if not named:  # media paths relative to the file's own folder
        for png in media.iterdir():
            png.rename(calib.parent / png.name)
        media = calib.parent
    cache = tmp_path / "sweep" / ".cache"
    data = ["calib.source=llava_json", f"calib.path={calib}", "runner.save_masks=false",
            *([f"calib.media_dir={media}"] if named else [])]
    _cell(compose_cfg, tmp_path, "sweep/0", cache, *data)
    calls = Calls(monkeypatch)
    same = _cell(compose_cfg, tmp_path, "sweep/1", cache, *data, target=0.6)
    assert set(same["reused"]) == {"calibration_samples", "block_inputs"} and calls.encoded == 0
    picture = media / "1.png"
    before = picture.stat()
    Image.fromarray(np.full((32, 40, 3), 200, dtype=np.uint8)).save(picture)
    os.utime(picture, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    replaced = _cell(compose_cfg, tmp_path, "sweep/2", cache, *data, target=0.6)
    assert "reused" not in replaced and calls.encoded == 1, "samples of the old picture were reused"
