"""Tiny Qwen2-VL, Qwen2.5-VL and Qwen2.5-Omni thinker models run through their adapters, offline."""

from __future__ import annotations

import functools
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from tamp.data.sample import AUDIO, IMAGE, TEXT, VIDEO, CalibSample
from tamp.models.loading import load_model
from tamp.models.qwen2_5_omni import Qwen2_5OmniAdapter
from tamp.models.registry import family_for_model_type
from tamp.models.tiny import TinyBundle, build_tiny, save_tiny
from tamp.models.tiny.qwen import omni_examples, omni_processor, omni_thinker_config, omni_tokenizer

NAMES = ("qwen2_vl", "qwen2_5_vl", "qwen2_5_omni")
#: VL: an image example and a video example; Omni: audio + video, then an image
CASES = [(n, i) for n in NAMES for i in (0, 1)]
LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@functools.cache
def bundle(name: str) -> TinyBundle:
    return build_tiny(name, seed=0)


@functools.cache
def sample(name: str, index: int) -> CalibSample:
    return bundle(name).example_sample(index)


def logits(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs, use_cache=False).logits


def expected_counts(b: TinyBundle, inputs: dict) -> dict[int, int]:
    """Media positions implied by the processor's outputs: grids / merge^2, audio frames after the tower."""
    merge = b.model.config.vision_config.spatial_merge_size
    counts = {}
    for code, key in ((IMAGE, "image_grid_thw"), (VIDEO, "video_grid_thw")):
        if key in inputs:
            counts[code] = int((inputs[key].prod(-1) // merge**2).sum())
    if "feature_attention_mask" in inputs:
        tower = b.model.model.audio_tower
        _, lengths = tower._get_feat_extract_output_lengths(inputs["feature_attention_mask"].sum(-1))
        counts[AUDIO] = int(lengths.sum())
    return counts


@pytest.mark.parametrize(("name", "index"), CASES)
def test_forward_runs(name: str, index: int) -> None:
    b, s = bundle(name), sample(name, index)
    out = logits(b.model, s.inputs)
    assert out.shape == (1, s.num_tokens, b.model.config.get_text_config().vocab_size)
    assert torch.isfinite(out).all()
    assert family_for_model_type(b.model.config.model_type) == b.family
    assert not b.model.training and next(b.model.parameters()).dtype == torch.float32


@pytest.mark.parametrize(("name", "index"), CASES)
def test_modality_ids_match_processor_expansion(name: str, index: int) -> None:
    b, s = bundle(name), sample(name, index)
    ids = s.inputs["input_ids"][0]
    counts = {int(c): int((s.modality_ids == c).sum()) for c in torch.unique(s.modality_ids)}
    text = counts.pop(TEXT)
    assert counts == expected_counts(b, s.inputs)
    assert text == ids.numel() - sum(counts.values())
    ex = b.examples()[index]
    assert (IMAGE in counts, VIDEO in counts, AUDIO in counts) == (
        bool(ex.images),
        bool(ex.videos),
        bool(ex.audios),
    )
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


@pytest.mark.parametrize(("name", "index"), CASES)
def test_labels_are_exactly_the_answers(name: str, index: int) -> None:
    b, s = bundle(name), sample(name, index)
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
    # towers, projector, embeddings and head: every parameter outside the blocks is protected
    block_ids = {id(p) for p in adapter.decoder_blocks().parameters()}
    outside = {id(p) for p in adapter.model.parameters()} - block_ids
    assert outside <= protected_ids


@pytest.mark.parametrize("name", NAMES)
def test_seed_determines_weights(name: str) -> None:
    a, b = build_tiny(name, seed=0).model.state_dict(), bundle(name).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = build_tiny(name, seed=1).model.state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize(("name", "index"), CASES)
def test_block_replay_reproduces_hidden_states(name: str, index: int) -> None:
    """The pipeline's scheme: capture block 0's args/kwargs, then run `block(hidden, **kwargs)` in turn."""
    b, s = bundle(name), sample(name, index)
    blocks = b.adapter.decoder_blocks()
    captured: dict = {}

    def grab(_module, args, kwargs) -> None:
        captured.update(args=args, kwargs=dict(kwargs))

    handle = blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            ref = b.model(**s.inputs, use_cache=False, output_hidden_states=True).hidden_states
    finally:
        handle.remove()
    kwargs = captured["kwargs"]
    hidden = captured["args"][0]
    assert torch.equal(hidden, ref[0])
    with torch.no_grad():
        for i, block in enumerate(blocks):
            hidden = block(hidden, **kwargs)
            if i + 1 < len(blocks):
                assert torch.equal(hidden, ref[i + 1]), f"block {i}"
        # the last entry of hidden_states is taken after the final norm
        assert torch.equal(b.model.model.language_model.norm(hidden), ref[-1])
    # M-RoPE travels in the captured kwargs: media samples get positions unlike plain 1-D ones
    cos, _ = kwargs["position_embeddings"]
    rotary = b.model.model.language_model.rotary_emb
    plain, _ = rotary(hidden, torch.arange(hidden.shape[1])[None])
    assert not torch.allclose(cos, plain)


@pytest.mark.parametrize("name", NAMES)
def test_cached_rope_deltas_do_not_leak_between_calls(name: str) -> None:
    b = bundle(name)
    first, second = sample(name, 0), sample(name, 1)
    before = logits(b.model, first.inputs)
    logits(b.model, second.inputs)
    assert torch.equal(logits(b.model, first.inputs), before)


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_round_trip(name: str, tmp_path: Path) -> None:
    b = bundle(name)
    save_tiny(b, tmp_path / name)
    model, _, adapter = load_model(str(tmp_path / name), dtype="float32")
    assert type(adapter) is type(b.adapter) and type(model) is type(b.model) and not model.training
    for index, ex in enumerate(b.examples()):
        s = sample(name, index)
        reloaded = adapter.encode(ex.messages, ex.images, ex.videos, ex.audios)
        assert reloaded.inputs.keys() == s.inputs.keys()
        for key, value in s.inputs.items():
            assert torch.equal(reloaded.inputs[key], value), key
        assert torch.equal(reloaded.labels, s.labels) and torch.equal(reloaded.modality_ids, s.modality_ids)
        assert torch.equal(logits(model, reloaded.inputs), logits(b.model, s.inputs))


def test_omni_full_checkpoint_loads_the_thinker(tmp_path: Path) -> None:
    """A Qwen2.5-Omni directory (model_type qwen2_5_omni, `thinker.` weights, talker weights) -> thinker."""
    tokenizer, template = omni_tokenizer()
    thinker_config = omni_thinker_config(tokenizer).to_dict()
    config = transformers.Qwen2_5OmniConfig(thinker_config=thinker_config, enable_audio_output=False)
    torch.manual_seed(0)
    full = transformers.Qwen2_5OmniForConditionalGeneration(config).eval()
    full.save_pretrained(tmp_path)
    omni_processor(tokenizer, template).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")  # stand-ins for the talker and vocoder
    weights["talker.model.layers.0.mlp.up_proj.weight"] = torch.zeros(4, 4)
    weights["token2wav.code2wav_dit_model.proj.weight"] = torch.zeros(4)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})

    model, _, adapter = load_model(str(tmp_path), dtype="float32")
    assert isinstance(model, transformers.Qwen2_5OmniThinkerForConditionalGeneration)
    assert isinstance(adapter, Qwen2_5OmniAdapter) and model.config.model_type == "qwen2_5_omni_thinker"
    ex = omni_examples(0)[0]
    s = adapter.encode(ex.messages, ex.images, ex.videos, ex.audios)
    assert torch.equal(logits(model, s.inputs), logits(full.thinker, s.inputs))


def test_omni_audio_in_video_interleaves_and_runs() -> None:
    b = bundle("qwen2_5_omni")
    adapter = Qwen2_5OmniAdapter(b.model, b.processor)
    adapter.use_audio_in_video = True
    ex = b.examples()[0]  # its video and its audio, the audio taken as the video's sound track
    messages = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "what sound is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a dog."}]},
    ]
    s = adapter.encode(messages, None, ex.videos, ex.audios)
    counts = {int(c): int((s.modality_ids == c).sum()) for c in torch.unique(s.modality_ids)}
    counts.pop(TEXT)
    assert counts == expected_counts(b, s.inputs)
    media = (s.modality_ids == VIDEO) | (s.modality_ids == AUDIO)
    first, last = media.nonzero()[[0, -1], 0].tolist()
    assert media[first : last + 1].all()  # one block of interleaved video and audio
    assert (s.modality_ids[first : last + 1] == AUDIO).any() and bool(s.inputs["use_audio_in_video"])
    out = logits(b.model, s.inputs)
    assert torch.isfinite(out).all()
    without = {k: v for k, v in s.inputs.items() if k != "use_audio_in_video"}
    assert not torch.equal(out, logits(b.model, without))  # the flag changes the positions


def test_omni_video_size_keeps_the_reference_default_for_real_checkpoints() -> None:
    b = build_tiny("qwen2_5_omni")
    assert b.adapter._video_size() == dict(b.processor.video_processor.size)  # tiny: its own bounds
    b.processor.video_processor.size = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384}
    assert b.adapter._video_size() is None  # real-checkpoint bounds: the processor's class default
    ex = b.examples()[0]
    inputs = b.adapter.process(b.adapter.render(ex.messages, False), None, ex.videos, ex.audios)
    assert inputs["video_grid_thw"][0, 1:].prod() * 28 * 28 // 4 >= 128 * 28 * 28
