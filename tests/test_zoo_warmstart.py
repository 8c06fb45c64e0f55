"""A zoo recipe with `train.init` starts from another recipe's trained model (tamp.zoo.warmstart).

The default LLaVA-NeXT starts from the v1 LLaVA-1.5 this way; here `micro_next` starts from `micro`.
What a user relies on: the copied weights are the source's exactly (token rows matched by word, not
by id), what is new stays new, a widened MLP computes what the source's did, a size mismatch stops
with the parameter's name before any training, and a change to the source recipe rebuilds the recipe
that starts from it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoTokenizer

from tamp.zoo import cache as zoo_cache
from tamp.zoo import recipe as zoo_recipe
from tamp.zoo.model import build_model
from tamp.zoo.recipe import MICRO, MICRO_NEXT, init_recipe, recipe_hash, replace
from tamp.zoo.warmstart import VOCAB_PARAMS, warm_start
from tamp.zoo.worlds import PANELS

#: the micro zoo recipes this module builds in the session's zoo_cache_dir (started early: conftest.py)
ZOO_BUILDS = ("micro_next",)


def saved_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """A saved zoo model's parameters under the names the loaded model uses."""
    return AutoModelForImageTextToText.from_pretrained(str(model_dir)).state_dict()


@pytest.fixture(scope="module")
def micro(zoo_cache_dir: Path) -> zoo_cache.ZooBuild:
    return zoo_cache.ensure_zoo("micro", zoo_cache_dir, progress=False)


def test_warm_start_copies_every_shared_weight_and_matches_tokens_by_word(micro):
    model, processor = build_model(MICRO_NEXT.model, PANELS.vocabulary(), seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    record = warm_start(model, processor.tokenizer, micro.model_dir)
    source = saved_weights(micro.model_dir)
    src_vocab = AutoTokenizer.from_pretrained(str(micro.model_dir)).get_vocab()
    ours = model.state_dict()
    assert record["fresh"] == ["model.image_newline"], "LLaVA-1.5 has no image_newline; everything else is copied"
    assert torch.equal(ours["model.image_newline"], before["model.image_newline"])
    assert record["widened"] == 3 * MICRO.model.layers, "gate, up and down of every block: 128 -> 192 units"
    units = MICRO.model.intermediate
    for name, tensor in ours.items():
        if name in VOCAB_PARAMS or name == "model.image_newline":
            continue
        if name.endswith("mlp.down_proj.weight"):
            assert torch.equal(tensor[:, :units], source[name]) and not tensor[:, units:].any(), name
        elif name.endswith(("mlp.gate_proj.weight", "mlp.up_proj.weight")) and "language_model" in name:
            assert torch.equal(tensor[:units], source[name]) and torch.equal(tensor[units:], before[name][units:])
        else:
            assert torch.equal(tensor, source[name]), name
    vocab = processor.tokenizer.get_vocab()
    assert record["new_tokens"] == sorted(set(vocab) - set(src_vocab)) == ["panel"]
    assert vocab["square"] != src_vocab["square"], "the two worlds number their words differently"
    for name in VOCAB_PARAMS:
        for word in ("square", "red", "<image>", "</s>", "ASSISTANT"):
            assert torch.equal(ours[name][vocab[word]], source[name][src_vocab[word]]), (name, word)
        assert torch.equal(ours[name][vocab["panel"]], before[name][vocab["panel"]]), "an unseen word keeps its row"


@torch.no_grad()
def test_the_widened_decoder_computes_what_the_source_computed(micro):
    model, processor = build_model(MICRO_NEXT.model, PANELS.vocabulary(), seed=3)
    warm_start(model, processor.tokenizer, micro.model_dir)
    source = AutoModelForImageTextToText.from_pretrained(str(micro.model_dir)).eval()
    assert model.config.text_config.intermediate_size > source.config.text_config.intermediate_size
    embeds = torch.randn(2, 40, MICRO.model.hidden, generator=torch.Generator().manual_seed(0))
    ours = model.eval().model.language_model(inputs_embeds=embeds).last_hidden_state
    theirs = source.model.language_model(inputs_embeds=embeds).last_hidden_state
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("sizes", [
    {"hidden": 128, "intermediate": 384},  # another width
    {"intermediate": 96},  # a narrower MLP: units would be lost
])
def test_a_source_of_other_sizes_stops_before_training(micro, sizes):
    model, processor = build_model(replace(MICRO_NEXT.model, **sizes), PANELS.vocabulary())
    with pytest.raises(ValueError, match=r"'model\..*' is \(.*\) there and \(.*\) here; give both recipes the same"):
        warm_start(model, processor.tokenizer, micro.model_dir)


def test_the_micro_next_build_records_its_start(zoo_cache_dir):
    build = zoo_cache.ensure_zoo("micro_next", zoo_cache_dir, progress=False)
    init = build.info["init"]
    assert init["recipe"] == "micro" and init["hash"] == recipe_hash(MICRO)
    assert init["fresh"] == ["model.image_newline"] and build.info["vision_pretrain"]["steps"] == 0
    tower = saved_weights(build.model_dir)
    source = saved_weights(zoo_cache_dir / "zoo" / recipe_hash(MICRO) / "model")
    frozen = [k for k in tower if k.startswith("model.vision_tower.")]
    assert frozen and all(torch.equal(tower[k], source[k]) for k in frozen), "the tower stays the source's (frozen)"


def test_the_start_recipe_is_part_of_the_hash(monkeypatch):
    base = recipe_hash(MICRO_NEXT)
    monkeypatch.setitem(zoo_recipe.RECIPES, "micro", replace(MICRO, train=replace(MICRO.train, lr=1e-3)))
    assert recipe_hash(MICRO_NEXT) != base, "retraining the source must rebuild what starts from it"
    monkeypatch.setitem(zoo_recipe.RECIPES, "micro", MICRO)
    assert recipe_hash(MICRO_NEXT) == base


@pytest.mark.parametrize(("init", "message"), [
    ("nope", r"train.init='nope' is unknown; valid: default, v1, micro, micro_next"),
    ("micro_next", r"train.init='micro_next' must name a recipe trained from scratch"),
])
def test_a_bad_start_recipe_is_named(init, message):
    bad = replace(MICRO_NEXT, train=replace(MICRO_NEXT.train, init=init))
    with pytest.raises(ValueError, match=message):
        recipe_hash(bad)
    assert init_recipe(MICRO) is None
