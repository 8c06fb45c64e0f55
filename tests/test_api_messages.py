"""The Python API's message format: text-only samples (`images=[None]`) and placeholder mismatches."""

from __future__ import annotations

import pytest
from tiny_models import fresh_tiny

import tamp
from tamp.data.sample import TEXT

TEXT_ONLY = [
    {"role": "user", "content": [{"type": "text", "text": "What colour is the sky?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Blue."}]},
]


@pytest.mark.parametrize("family", ["llava_next", "qwen2_5_vl"])
@pytest.mark.parametrize("images", [[None], None, []], ids=["none_item", "none", "empty"])
def test_text_only_sample_encodes_as_text(family: str, images) -> None:
    bundle = fresh_tiny(family)
    sample = bundle.adapter.encode(TEXT_ONLY, images=images)
    assert "pixel_values" not in sample.inputs
    assert bool((sample.modality_ids == TEXT).all())
    assert int((sample.labels != -100).sum()) > 0  # the answer is labelled
    out = bundle.model(**sample.inputs)
    assert out.logits.shape[1] == sample.inputs["input_ids"].shape[1]


def test_mixed_text_only_and_image_samples_prune() -> None:
    bundle = fresh_tiny("llava_next")
    example = bundle.examples()[0]
    samples = [
        bundle.adapter.encode(example.messages, images=example.images),
        bundle.adapter.encode(TEXT_ONLY, images=[None]),
    ]
    report = tamp.prune(bundle.model, samples, {"method": {"pruner": "wanda"}, "sparsity": {"target": 0.5},
                                                "progress": False})
    assert report.achieved == pytest.approx(0.5, abs=0.01)


def test_placeholder_without_an_image_is_a_one_line_error() -> None:
    bundle = fresh_tiny("llava_next")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    with pytest.raises(ValueError, match=r"1 \{'type': 'image'\} placeholder\(s\) but 0 image\(s\)"):
        bundle.adapter.encode(messages, images=[None])
