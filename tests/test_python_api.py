"""The one-call Python API: presets by name, the adapter from the model, samples from
conversations or a dataset, and a save helper writing the model, its manifest and bit-packed masks."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from PIL import Image
from tiny_models import fresh_tiny

import tamp
from tamp.methods.presets import prune_config
from tamp.models.loading import load_model
from tamp.models.mask_file import MASKS_FILE, load_masks
from tamp.models.saving import MANIFEST

TAMP_AS_DICT = {"method": {"pruner": "wanda", "allocation": {"name": "das"}, "tokens": {"name": "amia"}}}
QUIET = {"device": "cpu", "progress": False, "keep_masks": True}


def _records(n: int = 4) -> list[dict]:
    colours = ["red", "blue", "green", "yellow", "white", "black"][:n]
    return [{"id": c, "image": Image.new("RGB", (32, 32), c),
             "conversations": [{"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": c}]}
            for c in colours]


def test_a_preset_by_name_prunes_as_its_composition_does() -> None:
    samples_of = lambda b: [b.example_sample(i % len(b.examples())) for i in range(3)]  # noqa: E731
    by_name, by_dict = fresh_tiny("llava_next"), fresh_tiny("llava_next")
    named = tamp.prune(by_name.model, samples_of(by_name), "tamp", sparsity=0.5, **QUIET)
    composed = tamp.prune(by_dict.model, samples_of(by_dict), {**TAMP_AS_DICT, "sparsity": {"target": 0.5}, **QUIET})
    assert named.method_name == "tamp" and (named.allocation, named.tokens) == ("das", "amia")
    assert named.masks.keys() == composed.masks.keys()
    assert all(torch.equal(named.masks[k], composed.masks[k]) for k in named.masks)


def test_presets_take_hydra_overrides_and_keywords() -> None:
    cfg = prune_config("tamp", sparsity=0.6, overrides=["method.tokens.knn=5"], seed=7, offload=True)
    assert (cfg.method.name, cfg.method.tokens.knn, cfg.sparsity.target, cfg.seed, cfg.offload) == ("tamp", 5, 0.6, 7, True)
    cfg = prune_config("sparsegpt", pattern="2:4", overrides=["method.blocksize=64"])
    assert (cfg.method.blocksize, cfg.sparsity.pattern, cfg.sparsity.target) == (64, "2:4", 0.5)
    swapped = prune_config("tamp", overrides=["method/tokens=attention"])
    assert swapped.method.tokens.name == "attention" and swapped.method.allocation.name == "das"
    assert prune_config({"method": {"pruner": "magnitude"}}, sparsity=0.7).sparsity.target == 0.7
    # the spelling: a preset name under "method" (it was `expected a mapping of settings, got 'tamp'`)
    in_dict = prune_config({"method": "tamp", "sparsity": {"target": 0.6}}, overrides=["method.tokens.knn=4"])
    assert (in_dict.method.name, in_dict.method.tokens.knn, in_dict.sparsity.target) == ("tamp", 4, 0.6)
    assert "tamp" in tamp.preset_names() and "das_sparsegpt" in tamp.preset_names()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: prune_config("tampp"), r"method preset 'tampp' is unknown; valid: amia, attention_tokens, "),
        (lambda: prune_config("tamp", overrides=["method.tokens.foo=1"]), r"foo"),
        (lambda: prune_config("tamp", overrides=["sparsity.target=0.6"]), r"override 'sparsity.target=0.6' is not a "
                                                                          r"method setting; valid: method.KEY=VALUE"),
        (lambda: prune_config("tamp", sparsityy=0.5), r"unknown setting 'sparsityy'; valid: sparsity, pattern, "),
        (lambda: prune_config("wanda", sparsity=0.6, pattern="2:4"), r"sparsity.target=0.6 contradicts"),
        (lambda: prune_config({"method": {"pruner": "wanda"}}, overrides=["method.x=1"]), r"apply to a preset by name"),
    ],
)
def test_bad_presets_and_settings_are_one_line(call, message) -> None:
    with pytest.raises(ValueError, match=message) as err:
        call()
    assert "\n" not in str(err.value)


def test_samples_from_records_chat_entries_and_a_dataset_are_the_same() -> None:
    bundle = fresh_tiny("llava_next")
    adapter = tamp.get_adapter(bundle.model, bundle.processor)  # found from model.config.model_type
    assert adapter.family == "llava_next"
    records = _records()
    chats = [{"id": r["id"], "images": [r["image"]], "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": r["id"]}]}]} for r in records]
    from_records = tamp.build_samples(adapter, records, progress=False)
    from_chats = tamp.build_samples(adapter, chats)
    from_dataset = tamp.build_samples(adapter, datasets.Dataset.from_list(records), progress=False)
    for a, b, c in zip(from_records, from_chats, from_dataset, strict=True):
        assert a.meta["id"] == b.meta["id"] == c.meta["id"]
        for key in a.inputs:
            assert torch.equal(a.inputs[key], b.inputs[key]) and torch.equal(a.inputs[key], c.inputs[key]), key
        assert torch.equal(a.labels, b.labels) and torch.equal(a.modality_ids, c.modality_ids)
    draws = [[s.meta["id"] for s in tamp.build_samples(adapter, records, num_samples=2, seed=seed, progress=False)]
             for seed in (1, 2, 1)]
    assert draws[0] == draws[2] != draws[1]  # the same seeded draw as calib.num_samples / calib.seed


@pytest.mark.parametrize(
    ("conversations", "message"),
    [
        ([], "no conversations given"),
        ([_records(1)[0], {"messages": []}], "must all be LLaVA records"),
        ([{"messages": [], "image": None}], "conversation #0 has key 'image'; valid: messages, id, images"),
    ],
)
def test_bad_conversations_are_one_line(conversations, message) -> None:
    bundle = fresh_tiny("llava_next")
    with pytest.raises(ValueError, match=message):
        tamp.build_samples(bundle.adapter, conversations)


@pytest.mark.parametrize("keep_masks", [True, False])
def test_save_writes_the_model_its_manifest_and_bit_packed_masks(tmp_path, keep_masks: bool) -> None:
    bundle = fresh_tiny("llava_next")
    samples = tamp.build_samples(bundle.adapter, _records(2), progress=False)
    report = tamp.prune(bundle.model, samples, "wanda", sparsity=0.5, device="cpu", progress=False,
                        keep_masks=keep_masks)
    out = tamp.save(bundle.model, bundle.processor, tmp_path / "pruned", report)
    manifest = json.loads((out / MANIFEST).read_text())
    assert (manifest["method"], manifest["target"], manifest["pattern"]) == ("wanda", 0.5, "unstructured")
    assert manifest["overall_sparsity"] == pytest.approx(report.achieved)
    model, _, adapter = load_model(str(out), dtype="float32")
    masks = load_masks(out / MASKS_FILE)
    linears = {name: lin for block in adapter.target_linears() for name, lin in block.items()}
    assert set(masks) == set(linears) == set(manifest["linears"])
    assert all(torch.equal(masks[name], linear.weight == 0) for name, linear in linears.items())
    assert not list(tmp_path.glob(".*partial*"))  # written under a temporary name, renamed when complete
