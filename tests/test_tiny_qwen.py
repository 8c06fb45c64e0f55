"""What only the Qwen families have: M-RoPE positions through the block replay, and Qwen2.5-Omni's thinker
and audio (the checks every family shares are in test_tiny_families.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from tiny_models import QWEN_NAMES, expected_counts, logits, shared_tiny, tiny_sample

from tamp.data.sample import AUDIO, TEXT, VIDEO
from tamp.models.loading import load_model
from tamp.models.qwen2_5_omni import Qwen2_5OmniAdapter
from tamp.models.tiny import build_tiny
from tamp.models.tiny.qwen import omni_examples, omni_processor, omni_thinker_config, omni_tokenizer

#: VL: an image example and a video example; Omni: audio + video, then an image
CASES = [(n, i) for n in QWEN_NAMES for i in (0, 1)]


pytestmark = pytest.mark.usefixtures("hub_offline")


@pytest.mark.parametrize(("name", "index"), CASES)
def test_block_replay_reproduces_hidden_states(name: str, index: int) -> None:
    """The pipeline's scheme: capture block 0's args/kwargs, then run `block(hidden, **kwargs)` in turn."""
    b, s = shared_tiny(name), tiny_sample(name, index)
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


@pytest.mark.parametrize("name", QWEN_NAMES)
def test_cached_rope_deltas_do_not_leak_between_calls(name: str) -> None:
    b = shared_tiny(name)
    first, second = tiny_sample(name, 0), tiny_sample(name, 1)
    before = logits(b.model, first.inputs)
    logits(b.model, second.inputs)
    assert torch.equal(logits(b.model, first.inputs), before)


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
    b = shared_tiny("qwen2_5_omni")
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
