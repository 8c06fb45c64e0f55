"""Batched generation in TampLMM: the same strings as one request at a time, in request order.

Greedy answers of a batch must equal the unbatched ones exactly (left padding, attention mask and
position ids must not change any row's argmax), on the trained zoo model with real zoo requests and
on tiny random families with images; stop strings end each row on its own.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from tiny_models import fresh_tiny

from tamp.eval.batching import left_pad_batch, signature
from tamp.models.tiny.llava import shape_image

QUESTIONS = [
    "What colour is the square?",
    "Is it big?",
    "Describe the picture in a few short words, please, and say where the square is.",
    "How many squares are there in this small picture?",
    "Colour?",
]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]


def _lm(bundle, **kwargs):
    from tamp.eval.lmms_model import TampLMM

    return TampLMM(bundle.model, bundle.processor, bundle.adapter, **kwargs)


def _instances(docs: list[dict], gen_kwargs: dict) -> list:
    from lmms_eval.api.instance import Instance

    def visual(doc: dict) -> list[Image.Image]:
        return [shape_image(doc["colour"], *doc["size"])] if doc["colour"] else []

    return [
        Instance(
            request_type="generate_until",
            arguments=(doc["question"], dict(gen_kwargs), visual, i, "t", "test"),
            idx=0,
            metadata={"task": "t", "doc_id": i, "repeats": 1},
        )
        for i, doc in enumerate(docs)
    ]


def _docs(n: int) -> list[dict]:
    """Prompts of several lengths; most with an image (two sizes), some text only, interleaved."""
    docs = []
    for i in range(n):
        colour = None if i % 5 == 4 else COLOURS[i % len(COLOURS)]
        size = (40, 32) if i % 3 else (48, 40)
        docs.append({"question": QUESTIONS[i % len(QUESTIONS)], "colour": colour, "size": size})
    return docs


def _answers(bundle, docs: list[dict], gen_kwargs: dict, batch_size: int) -> list[str]:
    lm = _lm(bundle, batch_size=batch_size)
    lm.task_dict = {"t": {"test": docs}}
    return lm.generate_until(_instances(docs, gen_kwargs))


@pytest.fixture(scope="module")
def tiny():
    return {family: fresh_tiny(family) for family in ("llava_next", "qwen2_5_vl")}


# ------------------------------------------------------------------------------------ tiny families
@pytest.mark.parametrize("family", ["llava_next", "qwen2_5_vl"])
def test_batches_give_the_unbatched_answers_on_tiny_families(tiny, family):
    docs = _docs(20)
    gen_kwargs = {"max_new_tokens": 6, "temperature": 0}
    one = _answers(tiny[family], docs, gen_kwargs, 1)
    assert len(set(one)) > 3, "the prompts should not all give the same answer"
    for batch_size in (4, 32):
        assert _answers(tiny[family], docs, gen_kwargs, batch_size) == one


def test_stop_strings_end_each_row_on_its_own(tiny):
    bundle = tiny["llava_next"]
    docs = _docs(10)
    full = _answers(bundle, docs, {"max_new_tokens": 8}, 1)
    # a stop string that ends one row early and that some other rows never produce
    stop = next(
        s
        for s in (a[i : i + 2] for a in full for i in range(1, 4))
        if s.strip() and sum(s in a for a in full) < 6
    )
    cut = {"max_new_tokens": 8, "until": [stop]}
    one = _answers(bundle, docs, cut, 1)
    batched = _answers(bundle, docs, cut, 10)
    assert batched == one
    for whole, answer in zip(full, batched, strict=True):
        assert answer == (whole[: whole.find(stop)] if stop in whole else whole)
    assert any(stop in a for a in full) and any(stop not in a and len(a) > 3 for a in full)


def test_stop_criterion_answers_per_row(tiny):
    from tamp.eval.lmms_model import _StopOnStrings

    tokenizer = tiny["llava_next"].processor.tokenizer
    rows = [
        tokenizer("x x", add_special_tokens=False)["input_ids"]
        + tokenizer(t, add_special_tokens=False)["input_ids"]
        for t in ("red square", "blue circle")
    ]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    prompt = width - 2
    assert _StopOnStrings(tokenizer, ["square"], prompt)(ids, None).tolist() == [True, False]


def test_left_pad_batch_pads_tokens_and_stacks_media():
    a = {
        "input_ids": torch.tensor([[5, 6, 7]]),
        "attention_mask": torch.ones(1, 3, dtype=torch.long),
        "pixel_values": torch.zeros(1, 3, 4, 4),
    }
    b = {
        "input_ids": torch.tensor([[8]]),
        "attention_mask": torch.ones(1, 1, dtype=torch.long),
        "pixel_values": torch.ones(1, 3, 4, 4),
    }
    assert signature(a) == signature(b)
    batch = left_pad_batch([a, b], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert torch.equal(batch["pixel_values"], torch.cat([a["pixel_values"], b["pixel_values"]]))
    assert signature(a) != signature({**b, "pixel_values": torch.ones(1, 3, 8, 8)})


# ------------------------------------------------------------------------------------ batch size
@pytest.mark.parametrize("bad", [0, -3, 2.5, "8", True])
def test_bad_batch_size_is_a_one_line_error(tiny, bad):
    with pytest.raises(ValueError) as err:
        _lm(tiny["llava_next"], batch_size=bad)
    message = str(err.value)
    assert "\n" not in message and "batch_size" in message and ">= 1" in message


def test_batch_size_is_lmms_evals_property(tiny):
    assert _lm(tiny["llava_next"], batch_size=16).batch_size == 16
    assert _lm(tiny["llava_next"]).batch_size >= 1


# ------------------------------------------------------------------------------------ the zoo model
@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The shipped default zoo model (a LLaVA-NeXT) and a 48-document test split (8 per task) of fresh zoo data."""
    from tamp.models.loading import load_model
    from tamp.zoo.build import build_zoo
    from tamp.zoo.cache import ZOO_DIR_ENV
    from tamp.zoo.recipe import DEFAULT
    from tamp.zoo.shipped import shipped_dir

    data = tmp_path_factory.mktemp("zoo") / "data"
    build_zoo(data, {"train": 0, "calib": 0, "test": 48}, DEFAULT.data.seed, progress=False, world=DEFAULT.data.world)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ZOO_DIR_ENV, str(data))
        yield load_model(str(shipped_dir(DEFAULT) / "model"), DEFAULT.model.family, "float32")


def test_zoo_batches_give_the_unbatched_answers(zoo):
    from tamp.eval.evaluate import evaluate
    from tamp.zoo.recipe import DEFAULT
    from tamp.zoo.worlds import PANELS

    assert DEFAULT.data.world == PANELS.name

    def answers(batch_size: int) -> dict[str, list]:
        result = evaluate(*zoo, [PANELS.eval_tag], batch_size=batch_size, log_samples=True, bootstrap_iters=0)
        return {
            task: [(s["doc_id"], s["resps"]) for s in samples] for task, samples in result["samples"].items()
        }

    one = answers(1)
    assert len(one) == len(PANELS.tasks) == 6 and sum(len(v) for v in one.values()) == 48
    assert len({str(resps) for rows in one.values() for _, resps in rows}) > 8
    assert answers(8) == one
    assert answers(32) == one


def test_progress_counts_requests_not_batches(tiny, monkeypatch, caplog):
    monkeypatch.setenv("TAMP_PROGRESS", "log")
    caplog.set_level("INFO", logger="tamp.core.progress")
    _answers(tiny["llava_next"], _docs(6), {"max_new_tokens": 2}, 32)
    lines = [r.getMessage() for r in caplog.records if r.name == "tamp.core.progress"]
    assert lines[0].startswith("generate_until: request 1/6") and lines[-1].startswith(
        "generate_until: request 6/6"
    )
    assert not any("resumed" in line for line in lines)
