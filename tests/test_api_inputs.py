"""`tamp.prune` takes what a user holds: CalibSamples, raw conversations or a datasets.Dataset of them, and a
module or a model folder; each gives the masks the usual CalibSamples give, and a wrong input is one line."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
import torch
from PIL import Image
from tiny_models import fresh_tiny

import tamp

QUIET = {"device": "cpu", "progress": False, "keep_masks": True, "sparsity": 0.5}


def _records(n: int = 3) -> list[dict]:
    colours = ["red", "blue", "green", "yellow"][:n]
    return [{"id": c, "image": Image.new("RGB", (32, 32), c),
             "conversations": [{"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": c}]}
            for c in colours]


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    """The masks of the usual path: samples built with tamp.build_samples, then tamp.prune."""
    bundle = fresh_tiny("llava_next")
    samples = tamp.build_samples(bundle.adapter, _records(), progress=False)
    return tamp.prune(bundle.model, samples, "tamp", **QUIET).masks


def _same(masks: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> bool:
    return masks.keys() == reference.keys() and all(torch.equal(masks[k], reference[k]) for k in reference)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny LLaVA-NeXT saved with save_pretrained: weights, config and processor files."""
    bundle = fresh_tiny("llava_next")
    folder = tmp_path_factory.mktemp("tiny_llava_next")
    bundle.model.save_pretrained(folder)
    bundle.processor.save_pretrained(folder)
    return folder


def test_raw_conversations_prune_as_their_samples_do(reference) -> None:
    """The issue's call with a processor given: it raised `'dict' object has no attribute 'meta'`."""
    bundle = fresh_tiny("llava_next")
    summary = tamp.prune(bundle.model, _records(), "tamp", processor=bundle.processor, **QUIET)
    assert summary.num_samples == 3 and _same(summary.masks, reference)
    assert summary.model is None  # the caller holds the module it passed


def test_a_dataset_of_conversations_prunes_as_its_samples_do(reference) -> None:
    bundle = fresh_tiny("llava_next")
    summary = tamp.prune(bundle.model, datasets.Dataset.from_list(_records()), "tamp", adapter=bundle.adapter,
                         **QUIET)
    assert _same(summary.masks, reference)


def test_a_model_folder_is_loaded_pruned_and_handed_back(model_dir, reference, tmp_path) -> None:
    summary = tamp.prune(str(model_dir), _records(), "tamp", model_settings={"dtype": "float32"}, **QUIET)
    assert _same(summary.masks, reference)
    assert summary.model is not None and summary.processor is not None
    linear = summary.model.get_submodule(summary.linears[0].name)
    assert torch.equal(linear.weight == 0, reference[summary.linears[0].name])  # the handed-back model is pruned
    out = tamp.save(summary.model, summary.processor, tmp_path / "pruned", summary)
    assert (out / "config.json").is_file()


def test_a_module_loaded_from_a_folder_finds_its_processor(model_dir, reference) -> None:
    """The issue's exact call, `tamp.prune(model, conversations, "tamp")`: the processor saved with the model."""
    from transformers import LlavaNextForConditionalGeneration

    model = LlavaNextForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    assert _same(tamp.prune(model, _records(), "tamp", **QUIET).masks, reference)


@pytest.mark.parametrize(
    ("model", "samples", "keywords", "error", "message"),
    [
        ("module", _records()[0], {}, TypeError, r"calibration is a dict; valid: a list of CalibSample"),
        ("module", "calib.json", {}, TypeError, r"calibration is a path \(load a JSON calibration file"),
        ("module", [], {}, ValueError, r"no calibration samples given; valid: "),
        ("module", [1, 2], {}, TypeError, r"calibration item #0 is a int; valid: "),
        ("module", "mixed", {}, TypeError, r"calibration mixes CalibSample and conversations"),
        ("module", _records(), {}, ValueError, r"conversations need the model's processor to be encoded; valid: "),
        (3, _records(), {}, TypeError, r"model is a int; valid: a torch module, a Hub id \(org/name\), a local"),
        ("folder", _records(), {"model_settings": {"dtyp": "float32"}}, ValueError,
         r"model_settings has unknown key 'dtyp'; valid: family, dtype, trust_remote_code"),
        ("module", _records(), {"model_settings": {"dtype": "float32"}}, ValueError,
         r"model_settings \(dtype\) apply to a model tamp loads"),
        ("folder", _records(), {"processor": object()}, ValueError, r"adapter=/processor= belong to a module"),
        ("/nonexistent/model", _records(), {}, FileNotFoundError, r"does not exist; valid: a local model directory"),
        ("module", _records(), {"sparsityy": 0.5}, ValueError,
         r"unknown setting 'sparsityy'; valid: sparsity, pattern, overrides, processor, model_settings, "),
    ],
)
def test_bad_inputs_are_one_line(model, samples, keywords, error, message, model_dir) -> None:
    bundle = fresh_tiny("llava_next")
    model = {"module": bundle.model, "folder": str(model_dir)}.get(model, model) if isinstance(model, str) else model
    if samples == "mixed":
        samples = [bundle.example_sample(0), _records()[0]]
    with pytest.raises(error, match=message) as err:
        tamp.prune(model, samples, "tamp", device="cpu", progress=False, **keywords)
    assert "\n" not in str(err.value)
    first = next(iter(bundle.adapter.target_linears()[0].values()))
    assert not (first.weight == 0).any()  # refused before any work
