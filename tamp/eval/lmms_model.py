"""`TampLMM`: an lmms-eval model around an in-memory (pruned) HF model, its processor and tamp adapter.

lmms-eval hands the model `Instance`s whose `args` are (context, gen_kwargs | continuation,
doc_to_visual, doc_id, task, split); the media come from `doc_to_visual(self.task_dict[task][split]
[doc_id])`. Every request becomes one HF chat message (media parts first, then the text) rendered
and processed by the family adapter, so each family's own chat template and processor are used.
Adapters process one conversation, so every prompt is processed alone; `generate_until` then stacks
up to `batch_size` prompts that share generation kwargs (and input layout, see tamp.eval.batching)
into one left-padded generate() call. Greedy outputs are the same strings as one prompt at a time.
Log-likelihood requests run one at a time (the zoo demo has none).

Multi-process: lmms-eval's evaluator, not the model, shards the documents (rank r of W takes docs
r, r + W, ...) and gathers metrics to rank 0. It reads the ranks from the RANK / WORLD_SIZE /
LOCAL_RANK environment variables only and overwrites `lm._rank` / `lm._world_size` from them, so
`tamp.eval.evaluate.evaluate` sets those variables for the call (Lightning Fabric sets WORLD_SIZE
and LOCAL_RANK but not RANK). Every request given to this class is simply run on `self.device`.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from tamp.core.progress import progress_bar, track
from tamp.data.media import processor_sampling_rate
from tamp.eval.batching import DEFAULT_BATCH_SIZE, left_pad_batch, signature
from tamp.eval.doc_media import Media, MediaReader, VideoSampling
from tamp.eval.placement import place_for_eval
from tamp.models.base import FamilyAdapter, Message

DEFAULT_MAX_NEW_TOKENS = 256
#: placeholders some lmms-eval prompts embed for LLaVA's original code; media parts replace them here
_PLACEHOLDER = re.compile(r"<(image|video|audio)>\s*")
#: processor outputs cast to the model's dtype (other float outputs such as grid timings stay float32)
_CAST_PREFIXES = ("pixel_values", "input_features")


class TampLMM(lmms):
    """lmms-eval model over an in-memory model; greedy unless a task's gen_kwargs ask to sample.

    `device` moves the whole model there (tamp.eval.placement); None keeps it where it is, which must
    be one device (or an accelerate dispatch); `gen_kwargs` override every task's generation_kwargs (only what the user set: a task's
    own settings, such as MathVista's 16,384 new tokens, stand otherwise); `max_new_tokens` applies
    where a task sets none; rank / world_size default to torch.distributed's when a process group
    exists. `batch_size` prompts share one generate() call (greedy answers do not depend on it;
    sampled ones draw from a batch-shaped random stream). `video` says how many frames of each
    video are decoded (and at what rate); with the adapter's `use_audio_in_video` (Qwen2.5-Omni), a
    video file's own sound track goes in with it.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        adapter: FamilyAdapter,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        device: str | torch.device | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        gen_kwargs: Mapping[str, Any] | None = None,
        system_prompt: str | None = None,
        video: VideoSampling | None = None,
    ) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"eval.batch_size={batch_size!r} is out of range; valid: an integer >= 1")
        self._model = model
        self.processor = processor
        self.adapter = adapter
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.batch_size_per_gpu = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.gen_kwargs_override = dict(gen_kwargs or {})
        self.system_prompt = system_prompt
        # the whole model on one device (a pruned model with offload has its blocks in CPU memory)
        self._device = place_for_eval(model, device)
        self._dtype = next(model.parameters()).dtype
        self._rank, self._world_size = _ranks(rank, world_size)
        self.sampling_rate = processor_sampling_rate(processor)
        self.media_reader = MediaReader(
            self.sampling_rate, video or VideoSampling(), bool(getattr(adapter, "use_audio_in_video", False))
        )

    # ------------------------------------------------------------------------------ lmms API
    @property
    def model(self) -> torch.nn.Module:
        return self._model

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answers in request order; prompts are batched by generation kwargs and input layout.

        A prompt waits in its bucket until `batch_size` prompts share the bucket (then one generate()
        runs them), the rest run at the end; with batch_size 1 every prompt runs as it comes.
        """
        out: list[str | None] = [None] * len(requests)
        pending: dict[Hashable, list[tuple[int, dict[str, Any]]]] = {}
        with progress_bar(len(requests), "generate_until", self.rank == 0, "request", every_s=30.0) as bar:
            for index, req in enumerate(requests):
                context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
                options, until = self.generation_options(gen_kwargs)
                inputs = self.encode_prompt(context, self.media_of(doc_to_visual, task, split, doc_id))
                key = (_freeze(options), tuple(until), signature(inputs))
                bucket = pending.setdefault(key, [])
                bucket.append((index, inputs))
                if len(bucket) >= self.batch_size:
                    self._run_bucket(pending.pop(key), options, until, out, bar)
            for key in list(pending):
                options, until = dict(key[0]), list(key[1])
                self._run_bucket(pending.pop(key), options, until, out, bar)
        missing = [i for i, text in enumerate(out) if text is None]
        if missing:  # every bucket is run above; a gap would shift answers onto the wrong documents
            raise RuntimeError(f"generate_until lost requests {missing[:5]} of {len(out)}")
        return [text for text in out if text is not None]

    def _run_bucket(
        self,
        bucket: list[tuple[int, dict[str, Any]]],
        options: dict[str, Any],
        until: list[str],
        out: list[str | None],
        bar: Any,
    ) -> None:
        texts = self.generate_batch([inputs for _, inputs in bucket], options, until)
        for (index, _), text in zip(bucket, texts, strict=True):
            out[index] = text
            bar.update(1)  # per request: a first update of n > 1 reads as a resumed run in LogProgress

    def loglikelihood(self, requests: list[Instance]) -> list[LoglikelihoodResult]:
        """(negative log-likelihood, is_greedy) per request: lmms-eval 0.7.3 scores choices by argmin.

        Its `multiple_choice` tasks pick `np.argmin` of these values ("we return the actual loss"),
        unlike the base-class docstring; the value is the summed NLL of the continuation tokens, so
        the argmin is the lm-eval "acc" choice (highest summed log-probability). Each pair is wrapped
        in `LoglikelihoodResult` (it unpacks like the tuple) because the evaluator passes every
        response through `unwrap_generation_output`, which turns a plain (float, bool) into a string.
        """
        out = []
        for req in track(requests, "loglikelihood", enabled=self.rank == 0, unit="request"):
            args = req.args
            if len(args) == 2:  # acc_mutual_info's unconditional requests: ("", continuation)
                context, continuation, media = args[0], args[1], Media()
            else:
                context, target, doc_to_visual, doc_id, task, split = args
                doc = self.task_dict[task][split][doc_id]
                continuation = target if isinstance(target, str) else str(target(doc))
                media = self.media_of(doc_to_visual, task, split, doc_id)
            logprob, greedy = self.continuation_logprob(context, continuation, media)
            out.append(LoglikelihoodResult((-logprob, greedy)))
        return out

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        """Rounds as lmms-eval's own wrappers run them: each round a fresh single-turn prompt.

        Round 0 uses the request's context and doc_to_visual; later rounds call
        `doc_to_text(doc, previous_output=..., round_idx=k, previous_round_info=...)`, which returns
        (visuals, context, terminal, round_results, round_info) and stops the loop when terminal.
        """
        out = []
        for req in track(requests, "multi_round", enabled=self.rank == 0, unit="request"):
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = req.args
            doc = self.task_dict[task][split][doc_id]
            media = self.split_media(doc_to_visual(doc))
            rounds: list[str] = []
            info = None
            for round_idx in range(1, 1000):
                rounds.append(self.generate(context, media, gen_kwargs))
                visuals, context, terminal, results, info = doc_to_text(
                    doc, previous_output=list(rounds), round_idx=round_idx, previous_round_info=info
                )
                rounds = list(results) if results is not None else rounds
                if terminal:
                    break
                media = self.split_media(visuals)
            out.append(rounds)
        return out

    def clean(self) -> None:
        """Keep the model: lmms-eval's default `clean` deletes every nn.Module attribute after a run."""
        gc.collect()
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------------------ the work
    def messages(self, context: str, media: Media) -> list[Message]:
        content: list[dict[str, Any]] = [{"type": "image"} for _ in media.images]
        content += [{"type": "video"} for _ in media.videos]
        if not media.audio_in_video:  # a video's own track is interleaved by the processor, not a part
            content += [{"type": "audio"} for _ in media.audios]
        content.append({"type": "text", "text": _PLACEHOLDER.sub("", context)})
        messages: list[Message] = [{"role": "user", "content": content}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        return messages

    def encode_prompt(self, context: str, media: Media) -> dict[str, torch.Tensor]:
        """Processor outputs for the user turn plus the assistant prefix, on the model's device."""
        text = self.adapter.render(self.messages(context, media), add_generation_prompt=True)
        inputs = self.adapter.process(text, media.images or None, media.videos or None, media.audios or None)
        return self._to_device(inputs)

    def generate(self, context: str, media: Media, gen_kwargs: Mapping[str, Any] | None) -> str:
        """One prompt's answer (multi-round requests, and what a batch must reproduce per row)."""
        options, until = self.generation_options(gen_kwargs)
        return self.generate_batch([self.encode_prompt(context, media)], options, until)[0]

    def generation_options(self, gen_kwargs: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
        """generate() options from a task's generation kwargs (hashable values), and its stop strings."""
        kwargs = {**(gen_kwargs or {}), **self.gen_kwargs_override}
        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else [u for u in until if u]
        temperature = float(kwargs.get("temperature") or 0.0)
        options: dict[str, Any] = {
            "max_new_tokens": int(kwargs.get("max_new_tokens") or self.max_new_tokens),
            "num_beams": int(kwargs.get("num_beams") or 1),
            "do_sample": temperature > 0,
        }
        if temperature > 0:
            options["temperature"] = temperature
            if kwargs.get("top_p") is not None:
                options["top_p"] = float(kwargs["top_p"])
        return options, until

    @torch.inference_mode()
    def generate_batch(
        self, encodings: Sequence[Mapping[str, Any]], options: Mapping[str, Any], until: Sequence[str]
    ) -> list[str]:
        """One generate() over left-padded prompts; each row cut at its end of text and stop strings.

        Finished rows (EOS, or a stop string: `_StopOnStrings` answers per row) get pad tokens while
        the others go on, so a row's tokens are cut at its first EOS before decoding, then at its
        stop strings as lmms-eval's `until` asks.
        """
        pad_id = self._pad_id()
        inputs = left_pad_batch(encodings, pad_id if pad_id is not None else 0)
        prompt_len = inputs["input_ids"].shape[1]
        criteria = [_StopOnStrings(self.tokenizer, until, prompt_len)] if until else []
        output = self.model.generate(
            **inputs,
            **options,
            pad_token_id=pad_id,
            logits_processor=LogitsProcessorList([_FiniteLogits()]),
            stopping_criteria=StoppingCriteriaList(criteria),
        )
        eos = self._eos_ids()
        texts = []
        for row in output[:, prompt_len:].tolist():
            end = next((i + 1 for i, token in enumerate(row) if token in eos), len(row))
            texts.append(truncate_at(self.tokenizer.decode(row[:end], skip_special_tokens=True), until))
        return texts

    @torch.inference_mode()
    def continuation_logprob(self, context: str, continuation: str, media: Media) -> tuple[float, bool]:
        """Sum of log p(continuation tokens | prompt) and whether greedy decoding would produce them.

        The continuation is tokenised on its own and appended to the processed prompt (the lm-eval
        convention), so its tokens are exactly `tokenizer(continuation)` whatever the template.
        """
        inputs = self.encode_prompt(context, media)
        cont = self.tokenizer(continuation, add_special_tokens=False, return_tensors="pt")["input_ids"]
        cont = cont.to(self._device)
        n = cont.shape[1]
        if n == 0:
            return 0.0, True
        inputs = append_tokens(inputs, cont)
        length = inputs["input_ids"].shape[1]
        logits = self.model(**inputs).logits[0, length - n - 1 : length - 1].float()
        check_finite_logits(logits)
        logprobs = torch.log_softmax(logits, dim=-1)
        target = cont[0]
        total = logprobs.gather(-1, target[:, None]).sum().item()
        greedy = bool((logprobs.argmax(dim=-1) == target).all())
        return float(total), greedy

    # ------------------------------------------------------------------------------ media
    def media_of(self, doc_to_visual: Callable | None, task: str, split: str, doc_id: int) -> Media:
        if doc_to_visual is None or not callable(doc_to_visual):
            return Media()
        return self.split_media(doc_to_visual(self.task_dict[task][split][doc_id]))

    def split_media(self, visuals: Any) -> Media:
        """Sort doc_to_visual's output by kind (tamp.eval.doc_media: every form a dataset delivers)."""
        return self.media_reader.read(visuals)

    # ------------------------------------------------------------------------------ helpers
    def _to_device(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        moved = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self._device)
                if value.is_floating_point() and key.startswith(_CAST_PREFIXES):
                    value = value.to(self._dtype)
            moved[key] = value
        return moved

    def _eos_ids(self) -> set[int]:
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = getattr(self.tokenizer, "eos_token_id", None)
        return set() if eos is None else {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}

    def _pad_id(self) -> int | None:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return pad if pad is not None else getattr(self.tokenizer, "eos_token_id", None)


@dataclass
class LoglikelihoodResult(GenerationResult):
    """A (value, is_greedy) pair that lmms-eval's `unwrap_generation_output` passes through intact.

    The evaluator keeps `GenerationResult.text` as the response, whatever its type; plain tuples
    come out as their `str()`. It unpacks and indexes like the pair: `nll, greedy = result`.
    """

    def __iter__(self) -> Iterator[Any]:
        return iter(self.text)

    def __getitem__(self, index: int) -> Any:
        return self.text[index]

    def __len__(self) -> int:
        return len(self.text)


class NonFiniteLogitsError(RuntimeError):
    """The evaluated model produced NaN/inf logits: any score from them would be meaningless."""


def check_finite_logits(logits: torch.Tensor) -> None:
    """NaN or +inf anywhere, or a row without one finite value, fails the evaluation (-inf alone is a
    legitimately suppressed token)."""
    bad = torch.isnan(logits).any() or torch.isposinf(logits).any() or (~torch.isfinite(logits)).all(-1).any()
    if bool(bad):
        raise NonFiniteLogitsError(
            "non-finite logits (NaN/inf) during evaluation; the scores would be meaningless "
            "(a float16 overflow? try model.dtype=bfloat16 or float32)"
        )


class _FiniteLogits(LogitsProcessor):
    """Checks every generation step's scores (generate() would otherwise decode NaN into tokens)."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        check_finite_logits(scores)
        return scores


class _StopOnStrings(StoppingCriteria):
    """Stop as soon as the decoded new tokens contain one of lmms-eval's `until` strings."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_len: int) -> None:
        self.tokenizer, self.stops, self.prompt_len = tokenizer, list(stops), prompt_len

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        done = [
            any(
                s in self.tokenizer.decode(row[self.prompt_len :], skip_special_tokens=True)
                for s in self.stops
            )
            for row in input_ids
        ]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def truncate_at(text: str, stops: Iterable[str]) -> str:
    """The text before the earliest stop string (lmms-eval's `until` semantics)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:cut]


def append_tokens(inputs: Mapping[str, Any], tokens: torch.Tensor) -> dict[str, Any]:
    """Append text tokens to processed inputs, extending the per-token masks that ride along."""
    out = dict(inputs)
    out["input_ids"] = torch.cat([inputs["input_ids"], tokens], dim=1)
    if "attention_mask" in inputs:
        mask = inputs["attention_mask"]
        out["attention_mask"] = torch.cat([mask, torch.ones_like(tokens, dtype=mask.dtype)], dim=1)
    for key, value in inputs.items():
        if key.endswith("token_type_ids") and isinstance(value, torch.Tensor):
            out[key] = torch.cat([value, torch.zeros_like(tokens, dtype=value.dtype)], dim=1)
    return out


def _freeze(options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """generate() options as a hashable bucket key (their values are numbers and booleans)."""
    return tuple(sorted(options.items()))


def _ranks(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else torch.distributed's (a Fabric world), else a single process."""
    dist = torch.distributed
    initialised = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of size {world_size}")
    return int(rank), int(world_size)
