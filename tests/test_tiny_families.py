"""Tiny models of the LLaVA families and plain decoder LMs run through their adapters, offline."""

from __future__ import annotations

import functools
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from tamp.data.sample import IMAGE, TEXT, VIDEO
from tamp.models.loading import WeightsNotAvailableError, load_model
from tamp.models.registry import family_for_model_type
from tamp.models.tiny import TinyBundle, build_tiny, save_tiny

NAMES = ("llava", "llava_next", "llava_onevision", "llama", "qwen2")
#: (tiny name, example index): OneVision has an image example and a video example
CASES = [(n, 0) for n in NAMES] + [("llava_onevision", 1)]
LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


@functools.cache
def bundle(name: str) -> TinyBundle:
    return build_tiny(name, seed=0)


@functools.cache
def sample(name: str, index: int):
    return bundle(name).example_sample(index)


def _tokenizer(b: TinyBundle):
    return getattr(b.processor, "tokenizer", b.processor)


def _rows(features) -> int:
    """Number of feature vectors in a tensor [..., hidden] or a list of them."""
    if torch.is_tensor(features):
        return features.reshape(-1, features.shape[-1]).shape[0]
    return sum(_rows(f) for f in features)


def _pooled(output):
    return output.pooler_output if hasattr(output, "pooler_output") else output


def media_feature_counts(b: TinyBundle, inputs: dict) -> dict[int, int]:
    """How many image / video feature vectors the model's own towers produce for these inputs."""
    inner = b.model.model
    counts = {}
    with torch.no_grad():
        if "pixel_values" in inputs:
            extra = {k: inputs[k] for k in ("image_sizes", "batch_num_images") if k in inputs}
            counts[IMAGE] = _rows(
                _pooled(inner.get_image_features(pixel_values=inputs["pixel_values"], **extra))
            )
        if "pixel_values_videos" in inputs:
            out = inner.get_video_features(pixel_values_videos=inputs["pixel_values_videos"])
            counts[VIDEO] = _rows(_pooled(out))
    return counts


@pytest.mark.parametrize(("name", "index"), CASES)
def test_forward_runs(name: str, index: int) -> None:
    b, s = bundle(name), sample(name, index)
    with torch.no_grad():
        logits = b.model(**s.inputs).logits
    assert logits.shape == (1, s.num_tokens, b.model.config.get_text_config().vocab_size)
    assert torch.isfinite(logits).all()
    assert family_for_model_type(b.model.config.model_type) == b.family


@pytest.mark.parametrize(("name", "index"), CASES)
def test_modality_ids_match_model_features(name: str, index: int) -> None:
    b, s = bundle(name), sample(name, index)
    ids = s.inputs["input_ids"][0]
    assert s.modality_ids.shape == ids.shape
    counts = {int(c): int((s.modality_ids == c).sum()) for c in torch.unique(s.modality_ids)}
    text = counts.pop(TEXT)
    assert counts == media_feature_counts(b, s.inputs)
    assert text == ids.numel() - sum(counts.values())
    ex = b.examples()[index]
    assert (IMAGE in counts) == bool(ex.images) and (VIDEO in counts) == bool(ex.videos)
    # every media position holds its placeholder id and nothing else does
    for code, token_ids in b.adapter.modality_token_ids().items():
        assert torch.equal(s.modality_ids == code, torch.isin(ids, torch.tensor(token_ids)))


@pytest.mark.parametrize(("name", "index"), CASES)
def test_labels_are_exactly_the_answers(name: str, index: int) -> None:
    b, s = bundle(name), sample(name, index)
    tok = _tokenizer(b)
    answers = []
    for message in b.examples()[index].messages:
        if message["role"] == "assistant":
            content = message["content"]
            text = content if isinstance(content, str) else "".join(p["text"] for p in content)
            answers.append(text + tok.eos_token)
    labels, ids = s.labels[0], s.inputs["input_ids"][0]
    kept = labels != -100
    assert torch.equal(labels[kept], ids[kept])
    assert (s.modality_ids[kept] == TEXT).all()
    # one contiguous span per answer, each decoding to the answer and its end-of-turn token
    edges = torch.diff(torch.cat([torch.tensor([0]), kept.int(), torch.tensor([0])])).tolist()
    starts = [i for i, e in enumerate(edges) if e == 1]
    ends = [i for i, e in enumerate(edges) if e == -1]
    spans = [tok.decode(ids[a:z]).strip() for a, z in zip(starts, ends, strict=True)]
    assert spans == answers


@pytest.mark.parametrize("name", NAMES)
def test_target_linears_are_the_decoder_projections(name: str) -> None:
    adapter = bundle(name).adapter
    per_block = adapter.target_linears()
    assert len(per_block) == 2
    for index, linears in enumerate(per_block):
        prefix = f"{adapter.blocks_path}.{index}"
        assert sorted(linears) == sorted(f"{prefix}.{lin}" for lin in LINEARS)
        assert all(lin.in_features % 8 == 0 for lin in linears.values())
    protected = adapter.protected_modules()
    assert set(protected) == set(adapter.protected_paths)
    protected_ids = {id(p) for m in protected.values() for p in m.parameters()}
    target_ids = {id(lin.weight) for linears in per_block for lin in linears.values()}
    assert not protected_ids & target_ids


@pytest.mark.parametrize("name", NAMES)
def test_seed_determines_weights(name: str) -> None:
    a, b = build_tiny(name, seed=0).model.state_dict(), bundle(name).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = build_tiny(name, seed=1).model.state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize(("name", "index"), CASES)
def test_save_and_load_round_trip(name: str, index: int, tmp_path: Path) -> None:
    b, s = bundle(name), sample(name, index)
    save_tiny(b, tmp_path / name)
    model, _, adapter = load_model(str(tmp_path / name), dtype="float32")
    assert type(adapter) is type(b.adapter) and not model.training
    ex = b.examples()[index]
    reloaded = adapter.encode(ex.messages, ex.images, ex.videos, ex.audios)
    assert reloaded.inputs.keys() == s.inputs.keys()
    for key, value in s.inputs.items():
        assert torch.equal(reloaded.inputs[key], value), key
    assert torch.equal(reloaded.labels, s.labels) and torch.equal(reloaded.modality_ids, s.modality_ids)
    with torch.no_grad():
        assert torch.equal(model(**reloaded.inputs).logits, b.model(**s.inputs).logits)


def test_missing_hub_id_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # so the id cannot resolve to a local directory
    with pytest.raises(WeightsNotAvailableError) as info:
        load_model("tamp-tests/no-such-model")
    message = str(info.value)
    assert "\n" not in message and "tamp-tests/no-such-model" in message
