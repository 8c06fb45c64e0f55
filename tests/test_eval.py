"""lmms-eval integration: TampLMM, evaluate(), the tiny task folder and lmms-eval's llava_hf.

Models are tiny and random, so scores are arbitrary: the tests check structure, determinism and
that the numbers handed to lmms-eval are the ones a hand computation gives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

from tiny_models import fresh_tiny

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from tamp.eval.evaluate import UnknownTaskError, evaluate, evaluate_saved  # noqa: E402
from tamp.models.tiny import save_tiny  # noqa: E402

TASKS = ["tamp_tiny_colour", "tamp_tiny_colour_mc"]
TASKS_DIR = Path(__file__).resolve().parents[1] / "tamp" / "eval" / "tasks" / "tiny"
FAMILIES = ["llava_next", "qwen2_5_vl"]


@pytest.fixture(scope="module")
def bundles():
    return {family: fresh_tiny(family) for family in FAMILIES}


def _lm(bundle, **kwargs):
    from tamp.eval.lmms_model import TampLMM

    return TampLMM(bundle.model, bundle.processor, bundle.adapter, **kwargs)


def _colour_doc(colour: str = "red", seed: int = 3) -> dict:
    return {"id": 0, "seed": seed, "colour": colour, "question": "What colour is the square?"}


def _instance(request_type: str, arguments: tuple):
    from lmms_eval.api.instance import Instance

    meta = {"task": "t", "doc_id": 0, "repeats": 1}
    return Instance(request_type=request_type, arguments=arguments, idx=0, metadata=meta)


def _square_visual(doc: dict) -> list[Image.Image]:
    from tamp.eval.tasks.tiny.utils import doc_to_visual

    return doc_to_visual(doc)


# ------------------------------------------------------------------------------------------ evaluate
@pytest.mark.parametrize("family", FAMILIES)
def test_evaluate_scores_both_tiny_tasks(bundles, family):
    bundle = bundles[family]
    result = evaluate(bundle.model, bundle.processor, bundle.adapter, TASKS, limit=3, log_samples=True)
    assert set(result["scores"]) == set(TASKS)
    assert result["primary_metric"] == {
        "tamp_tiny_colour": "exact_match,none",
        "tamp_tiny_colour_mc": "acc,none",
    }
    for task, key in result["primary_metric"].items():
        assert 0.0 <= result["scores"][task][key] <= 1.0
        assert all(isinstance(v, float) for v in result["scores"][task].values())
        assert not any("stderr" in k for k in result["scores"][task])
    assert result["n_samples"]["tamp_tiny_colour"]["effective"] == 3
    assert result["versions"]["tamp_tiny_colour"] == 0.1
    # multiple choice: lmms-eval 0.7.3 takes the argmin of what loglikelihood returns (summed NLL)
    from tamp.eval.tasks.tiny.utils import COLOURS

    for sample in result["samples"]["tamp_tiny_colour_mc"]:
        nll = [resp[0][0] for resp in sample["resps"]]
        assert len(nll) == len(COLOURS) and all(v > 0 for v in nll)
        assert sample["acc"] == float(int(np.argmin(nll)) == list(COLOURS).index(sample["target"]))


def test_evaluate_is_deterministic_and_keeps_the_callers_rng(bundles):
    bundle = bundles["llava_next"]
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    first = evaluate(
        bundle.model, bundle.processor, bundle.adapter, ["tamp_tiny_colour"], limit=3, log_samples=True
    )
    assert torch.equal(torch.rand(1), expected_next)  # simple_evaluate reseeds; we restore
    second = evaluate(
        bundle.model, bundle.processor, bundle.adapter, ["tamp_tiny_colour"], limit=3, log_samples=True
    )
    assert first["scores"] == second["scores"]
    responses = [[s["resps"] for s in r["samples"]["tamp_tiny_colour"]] for r in (first, second)]
    assert responses[0] == responses[1]


def test_unknown_task_is_a_one_line_error_before_any_model_work():
    with pytest.raises(UnknownTaskError) as err:
        evaluate(None, None, None, ["tamp_tiny_colur"])  # no model: the name check comes first
    message = str(err.value)
    assert "\n" not in message
    assert "'tamp_tiny_colur'" in message and "tamp_tiny_colour_mc" in message
    assert "lmms-eval built-ins" in message


# ------------------------------------------------------------------------------------------ TampLMM
def test_generate_until_honours_until(bundles):
    from tamp.eval.lmms_model import truncate_at

    bundle = bundles["llava_next"]
    lm = _lm(bundle)
    doc = _colour_doc()
    lm.task_dict = {"t": {"test": [doc]}}
    args = (
        "What colour is the square?",
        {"max_new_tokens": 8, "temperature": 0},
        _square_visual,
        0,
        "t",
        "test",
    )
    (full,) = lm.generate_until([_instance("generate_until", args)])
    assert len(full) >= 3
    stop = full[1:3]
    cut_args = (args[0], {"max_new_tokens": 8, "until": [stop]}, *args[2:])
    (cut,) = lm.generate_until([_instance("generate_until", cut_args)])
    assert cut == full[: full.find(stop)]
    assert stop not in cut
    assert truncate_at("a. b\nc", ["\n", "."]) == "a" and truncate_at("abc", []) == "abc"


@pytest.mark.parametrize("family", FAMILIES)
def test_loglikelihood_matches_a_hand_computation(bundles, family):
    bundle = bundles[family]
    lm = _lm(bundle)
    doc = _colour_doc("blue", seed=5)
    lm.task_dict = {"t": {"test": [doc]}}
    context, continuation = "What colour is the square?", " blue square"
    args = (context, continuation, _square_visual, 0, "t", "test")
    (result,) = lm.loglikelihood([_instance("loglikelihood", args)])
    nll, greedy = result

    # by hand: the adapter's prompt, the continuation tokenised alone, the model's own mean CE
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": context}]}]
    inputs = bundle.adapter.process(bundle.adapter.render(messages, True), _square_visual(doc))
    tokenizer = bundle.processor.tokenizer
    cont = tokenizer(continuation, add_special_tokens=False, return_tensors="pt")["input_ids"]
    n, prompt_len = cont.shape[1], inputs["input_ids"].shape[1]
    assert n >= 2
    inputs["input_ids"] = torch.cat([inputs["input_ids"], cont], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in inputs:
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(cont)], dim=1)
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, prompt_len:] = cont
    with torch.no_grad():
        out = bundle.model(**inputs, labels=labels)
    assert nll == pytest.approx(out.loss.item() * n, rel=1e-5, abs=1e-5)
    argmax = out.logits[0, prompt_len - 1 : -1].argmax(-1)
    assert greedy == bool((argmax == cont[0]).all())
    logprob, _ = lm.continuation_logprob(context, continuation, lm.split_media(_square_visual(doc)))
    assert logprob == pytest.approx(-nll)


def test_generate_until_multi_round_feeds_previous_answers(bundles):
    lm = _lm(bundles["qwen2_5_vl"])
    doc = _colour_doc()
    lm.task_dict = {"t": {"test": [doc]}}
    calls = []

    def doc_to_text(doc, previous_output=None, round_idx=None, previous_round_info=None):
        calls.append((round_idx, list(previous_output)))
        terminal = round_idx == 2
        return (None if terminal else [], "And now?", terminal, previous_output, {"round": round_idx})

    args = ("What colour?", {"max_new_tokens": 3}, _square_visual, doc_to_text, 0, "t", "test")
    (rounds,) = lm.generate_until_multi_round([_instance("generate_until_multi_round", args)])
    assert len(rounds) == 2 and all(isinstance(r, str) for r in rounds)
    assert [c[0] for c in calls] == [1, 2] and calls[1][1] == rounds
    assert rounds[1] == lm.generate("And now?", lm.split_media([]), {"max_new_tokens": 3})


def test_split_media_sorts_every_kind(tmp_path, bundles):
    import av

    lm = _lm(bundles["qwen2_5_vl"])
    video = np.zeros((5, 16, 16, 3), dtype=np.uint8)
    frames = [Image.new("RGB", (16, 16), "red")] * 3
    audio = {"array": np.zeros(8000, dtype=np.float32), "sampling_rate": 8000}
    media = lm.split_media([Image.new("RGB", (8, 8)), video, frames, audio, np.zeros(100, np.float32), None])
    assert (len(media.images), len(media.videos), len(media.audios)) == (1, 2, 2)
    assert media.audios[0].shape == (16000,)  # resampled to the processor's rate

    mp4, wav = tmp_path / "v.mp4", tmp_path / "a.wav"
    with av.open(str(mp4), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(np.zeros(4000, np.int16).tobytes())
    from tamp.eval.doc_media import MediaReader, VideoSampling

    lm.media_reader = MediaReader(lm.sampling_rate, VideoSampling(num_frames=4))
    media = lm.split_media([str(mp4), str(wav)])
    assert media.videos[0].frames.shape == (4, 32, 32, 3) and media.audios[0].shape == (8000,)
    assert media.videos[0].fps == 4 and media.videos[0].indices == [0, 2, 3, 5]
    with pytest.raises(TypeError, match="unsupported media"):
        lm.split_media([object()])


def test_tiny_task_data_is_relative_and_images_are_seeded():
    from tamp.eval.tasks.tiny.utils import doc_to_visual

    docs = json.loads((TASKS_DIR / "colours.json").read_text())
    assert 10 <= len(docs) <= 20
    assert "colours.json" in (TASKS_DIR / "_tamp_tiny_template.yaml").read_text()
    a, b = doc_to_visual(docs[0])[0], doc_to_visual(docs[0])[0]
    assert np.array_equal(np.asarray(a), np.asarray(b)) and a.size == (32, 32)


def test_import_tamp_does_not_import_lmms_eval():
    code = "import sys, tamp, tamp.eval, tamp.eval.evaluate; print('lmms_eval' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------ llava_hf
def _has_decord() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(
    not _has_decord(),
    reason="lmms-eval 0.7.3's llava_hf imports `decord` at module level and lmms-eval does not install it",
)
@pytest.mark.parametrize("force_simple", [False, True], ids=["chat", "simple"])
def test_evaluate_saved_runs_lmms_evals_llava_hf_and_agrees_with_tamplmm(tmp_path, force_simple):
    bundle = fresh_tiny("llava")
    save_tiny(bundle, tmp_path)
    saved = evaluate_saved(
        tmp_path, ["tamp_tiny_colour"], limit=3, log_samples=True, force_simple=force_simple
    )
    ours = evaluate(
        bundle.model, bundle.processor, bundle.adapter, ["tamp_tiny_colour"], limit=3, log_samples=True
    )
    assert saved["scores"] == ours["scores"]
    texts = [[s["resps"][0][0] for s in r["samples"]["tamp_tiny_colour"]] for r in (saved, ours)]
    assert texts[0] == texts[1]  # same prompt, same greedy decoding: the two wrappers agree


def test_evaluate_saved_refuses_what_llava_hf_cannot_do(tmp_path):
    fresh_tiny("qwen2_5_vl").model.config.save_pretrained(tmp_path / "qwen")
    with pytest.raises(ValueError, match="qwen2_5_vl"):
        evaluate_saved(tmp_path / "qwen", ["tamp_tiny_colour"])
    fresh_tiny("llava").model.config.save_pretrained(tmp_path / "llava")
    with pytest.raises(ValueError, match="multiple-choice tasks on transformers 5: tamp_tiny_colour_mc"):
        evaluate_saved(tmp_path / "llava", ["tamp_tiny_colour_mc"])


# ------------------------------------------------------------------------------------------ ranks
_FABRIC_WORKER = """
import json, os, sys
from lightning.fabric import Fabric


def run(fabric):
    from tamp.eval import lmms_model
    from tamp.eval.evaluate import evaluate
    from tamp.models.tiny import build_tiny

    seen = []
    generate = lmms_model.TampLMM.generate
    lmms_model.TampLMM.generate = lambda self, c, m, g: seen.append(c) or generate(self, c, m, g)
    b = fresh_tiny("llava_next")
    result = evaluate(b.model, b.processor, b.adapter, {tasks}, limit=6, log_samples=True)
    doc_ids = sorted(s["doc_id"] for s in result["samples"]["tamp_tiny_colour"])
    out = dict(scores=result["scores"], generated=len(seen), doc_ids=doc_ids, rank_env=os.environ.get("RANK"))
    with open(os.path.join(sys.argv[1], f"rank{{fabric.global_rank}}.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn").launch(run)
"""


@pytest.mark.slow
def test_two_fabric_ranks_shard_the_documents_and_share_the_result(tmp_path, bundles):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(_FABRIC_WORKER.format(tasks=TASKS)))
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=300, capture_output=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["generated"] for r in ranks] == [3, 3]  # each rank generated its half of 6 docs
    assert ranks[0]["doc_ids"] == ranks[1]["doc_ids"] == list(range(6))  # gathered on rank 0, broadcast
    assert ranks[0]["scores"] == ranks[1]["scores"]
    assert ranks[0]["rank_env"] is None  # RANK set for lmms-eval only during the call
    bundle = bundles["llava_next"]
    single = evaluate(bundle.model, bundle.processor, bundle.adapter, TASKS, limit=6)
    for task in TASKS:
        key = single["primary_metric"][task]
        assert ranks[0]["scores"][task][key] == pytest.approx(single["scores"][task][key])
