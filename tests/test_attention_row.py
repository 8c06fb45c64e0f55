"""last_row_attention against eager attention's own weights, every tiny family and example."""

from __future__ import annotations

import pytest
import torch
from tiny_models import fresh_tiny

from tamp.pipeline.context import SampleContext
from tamp.pipeline.engine import LayerwiseEngine
from tamp.tokens.attention import last_row_attention

FAMILIES = ["llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen2_5_omni"]
FAMILIES += ["llama", "qwen2"]


class _RowRecorder:
    """Computes the attention row from inside a linear hook, as the selectors do."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, int], torch.Tensor] = {}
        self.calls = 0

    def observe(self, name: str, x: torch.Tensor, z: torch.Tensor, ctx: SampleContext) -> None:
        row = last_row_attention(ctx)
        self.calls += 1
        key = (ctx.block_index, ctx.index)
        if key in self.rows:
            assert self.rows[key] is row, "the row must be memoised per (sample, block)"
        self.rows[key] = row


def _rows_through_engine(bundle, samples) -> tuple[dict[tuple[int, int], torch.Tensor], int]:
    engine = LayerwiseEngine(bundle.model, bundle.adapter, samples, progress=False)
    store = engine.captured().copy()
    recorder = _RowRecorder()
    for index in range(len(engine.blocks)):
        engine.forward_block(index, store, recorder)
    return recorder.rows, recorder.calls


@pytest.fixture(scope="module", params=FAMILIES)
def family_samples(request):
    """One tiny model per family and all its examples, shared by the capture variants."""
    bundle = fresh_tiny(request.param)
    return bundle, [bundle.example_sample(i) for i in range(len(bundle.examples()))]


@pytest.mark.parametrize("capture_impl", ["sdpa", "eager"])
def test_last_row_matches_eager_attention(family_samples, capture_impl: str) -> None:
    """sdpa capture: no mask in the kwargs; eager capture: the 4-D additive mask is applied too."""
    bundle, samples = family_samples
    bundle.model.set_attn_implementation(capture_impl)
    rows, calls = _rows_through_engine(bundle, samples)
    num_blocks = len(bundle.adapter.decoder_blocks())
    linears_per_block = len(bundle.adapter.target_linears()[0])
    assert calls == num_blocks * len(samples) * linears_per_block

    bundle.model.set_attn_implementation("eager")
    for i, sample in enumerate(samples):
        with torch.no_grad():
            out = bundle.model(**sample.inputs, output_attentions=True, use_cache=False)
        assert len(out.attentions) == num_blocks
        for layer, weights in enumerate(out.attentions):
            expected = weights[0, :, -1, :].float().mean(0)
            got = rows[(layer, i)]
            assert got.dtype == torch.float32 and got.shape == (sample.num_tokens,)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
            assert abs(float(got.sum()) - 1.0) < 1e-5


def test_sliding_window_without_mask_hides_far_keys() -> None:
    """Flash/sdpa give no mask; a sliding-window layer must still hide keys outside its window."""
    bundle = fresh_tiny("qwen2")
    sample = bundle.example_sample(0)
    engine = LayerwiseEngine(bundle.model, bundle.adapter, [sample], progress=False)
    hidden, kwargs = engine.captured().get(0)
    block = engine.blocks[0]
    kwargs = {**kwargs, "attention_mask": None}

    def ctx() -> SampleContext:
        return SampleContext(0, 0, block, sample.modality_ids, None, hidden, kwargs, bundle.adapter)

    full = last_row_attention(ctx())
    block.self_attn.sliding_window = 4
    try:
        windowed = last_row_attention(ctx())
    finally:
        block.self_attn.sliding_window = None
    assert torch.all(windowed[:-4] == 0) and abs(float(windowed.sum()) - 1.0) < 1e-5
    assert not torch.equal(full, windowed)

    keep = torch.zeros(1, 1, sample.num_tokens, sample.num_tokens, dtype=torch.bool)
    keep[..., -4:] = True  # the same window as a boolean keep-mask (sdpa's convention)
    kwargs["attention_mask"] = keep
    torch.testing.assert_close(last_row_attention(ctx()), windowed)
