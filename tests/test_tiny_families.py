"""Tiny random models of every family run through their adapters, offline.

The checks every family shares (forward pass, target linears, seeded weights, save and reload) run over
all eight; each family kind then checks its own way of laying out media tokens and answer labels: the
LLaVA families against their towers' feature counts, the Qwen families against their processor's own
token types (Qwen-only mechanics, M-RoPE and Omni's audio, are in test_tiny_qwen.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import LLAVA_NAMES, NAMES, QWEN_NAMES, expected_counts, logits, shared_tiny, tiny_sample

from tamp.data.sample import AUDIO, IMAGE, TEXT, VIDEO
from tamp.models.loading import WeightsNotAvailableError, load_model
from tamp.models.registry import family_for_model_type
from tamp.models.tiny import TinyBundle, build_tiny, save_tiny

#: (tiny name, example index): OneVision has an image and a video example; a Qwen VL model an image and
#: a video; Omni audio + video, then an image
LLAVA_CASES = [(n, 0) for n in LLAVA_NAMES] + [("llava_onevision", 1)]
QWEN_CASES = [(n, i) for n in QWEN_NAMES for i in (0, 1)]
CASES = LLAVA_CASES + QWEN_CASES
LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


pytestmark = pytest.mark.usefixtures("hub_offline")


@pytest.mark.parametrize(("name", "index"), CASES)
def test_forward_runs(name: str, index: int) -> None:
    b, s = shared_tiny(name), tiny_sample(name, index)
    out = logits(b.model, s.inputs)
    assert out.shape == (1, s.num_tokens, b.model.config.get_text_config().vocab_size)
    assert torch.isfinite(out).all()
    assert family_for_model_type(b.model.config.model_type) == b.family
    assert not b.model.training and next(b.model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_target_linears_are_the_decoder_projections(name: str) -> None:
    adapter = shared_tiny(name).adapter
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
    if name in QWEN_NAMES:  # towers, projector, embeddings and head: every parameter outside the blocks
        block_ids = {id(p) for p in adapter.decoder_blocks().parameters()}
        outside = {id(p) for p in adapter.model.parameters()} - block_ids
        assert outside <= protected_ids


@pytest.mark.parametrize("name", NAMES)
def test_seed_determines_weights(name: str) -> None:
    a, b = build_tiny(name, seed=0).model.state_dict(), shared_tiny(name).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = build_tiny(name, seed=1).model.state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_round_trip(name: str, tmp_path: Path) -> None:
    b = shared_tiny(name)
    save_tiny(b, tmp_path / name)
    model, _, adapter = load_model(str(tmp_path / name), dtype="float32")
    assert type(adapter) is type(b.adapter) and type(model) is type(b.model) and not model.training
    for index, ex in enumerate(b.examples()):
        s = tiny_sample(name, index)
        reloaded = adapter.encode(ex.messages, ex.images, ex.videos, ex.audios)
        assert reloaded.inputs.keys() == s.inputs.keys()
        for key, value in s.inputs.items():
            assert torch.equal(reloaded.inputs[key], value), key
        assert torch.equal(reloaded.labels, s.labels) and torch.equal(reloaded.modality_ids, s.modality_ids)
        assert torch.equal(logits(model, reloaded.inputs), logits(b.model, s.inputs))


def test_missing_hub_id_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # so the id cannot resolve to a local directory
    with pytest.raises(WeightsNotAvailableError) as info:
        load_model("tamp-tests/no-such-model")
    message = str(info.value)
    assert "\n" not in message and "tamp-tests/no-such-model" in message


# --- the LLaVA families and plain decoder LMs: media rows from the towers, answers closed by EOS


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
            counts[IMAGE] = _rows(_pooled(inner.get_image_features(pixel_values=inputs["pixel_values"], **extra)))
        if "pixel_values_videos" in inputs:
            out = inner.get_video_features(pixel_values_videos=inputs["pixel_values_videos"])
            counts[VIDEO] = _rows(_pooled(out))
    return counts


@pytest.mark.parametrize(("name", "index"), LLAVA_CASES)
def test_modality_ids_match_model_features(name: str, index: int) -> None:
    b, s = shared_tiny(name), tiny_sample(name, index)
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


@pytest.mark.parametrize(("name", "index"), LLAVA_CASES)
def test_labels_are_exactly_the_answers(name: str, index: int) -> None:
    b, s = shared_tiny(name), tiny_sample(name, index)
    tok = getattr(b.processor, "tokenizer", b.processor)
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


# --- the Qwen families: media rows from the processor's grids, ChatML answers


@pytest.mark.parametrize(("name", "index"), QWEN_CASES)
def test_modality_ids_match_processor_expansion(name: str, index: int) -> None:
    b, s = shared_tiny(name), tiny_sample(name, index)
    ids = s.inputs["input_ids"][0]
    counts = {int(c): int((s.modality_ids == c).sum()) for c in torch.unique(s.modality_ids)}
    text = counts.pop(TEXT)
    assert counts == expected_counts(b, s.inputs)
    assert text == ids.numel() - sum(counts.values())
    ex = b.examples()[index]
    assert (IMAGE in counts, VIDEO in counts, AUDIO in counts) == (bool(ex.images), bool(ex.videos), bool(ex.audios))
    # the processor's own per-token modality types use the same codes (0 text, 1 image, 2 video, 3 audio)
    text_in = b.adapter.render(ex.messages, False)
    kwargs = {"text": [text_in], "return_tensors": "pt", "return_mm_token_type_ids": True}
    for key, media in (("images", ex.images), ("videos", ex.videos), ("audio", ex.audios)):
        if media:
            kwargs[key] = media
    if ex.videos and name == "qwen2_5_omni":
        kwargs["videos_kwargs"] = {"size": b.adapter._video_size()}
    assert torch.equal(s.modality_ids, b.processor(**kwargs)["mm_token_type_ids"][0].long())
    if AUDIO in counts:  # the tower really emits that many vectors
        with torch.no_grad():
            feats = b.model.model.get_audio_features(
                s.inputs["input_features"], s.inputs["feature_attention_mask"]
            ).last_hidden_state
        assert feats.shape[0] == counts[AUDIO]


@pytest.mark.parametrize(("name", "index"), QWEN_CASES)
def test_chatml_labels_are_exactly_the_answers(name: str, index: int) -> None:
    b, s = shared_tiny(name), tiny_sample(name, index)
    tok = b.processor.tokenizer
    expected: list[int] = []
    for message in b.examples()[index].messages:
        if message["role"] == "assistant":
            # ChatML closes every turn with "<|im_end|>\n": the newline is part of the assistant span
            text = "".join(part["text"] for part in message["content"]) + "<|im_end|>\n"
            expected += tok.encode(text, add_special_tokens=False)
    labels, ids = s.labels[0], s.inputs["input_ids"][0]
    kept = labels != -100
    assert labels[kept].tolist() == expected
    assert torch.equal(labels[kept], ids[kept])
    assert kept[-len(expected) :].all()  # the answer closes the conversation
    assert (s.modality_ids[kept] == TEXT).all()
