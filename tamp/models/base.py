"""What the pipeline needs to know about a model family, and nothing it can find out itself.

An adapter wraps a loaded transformers model (and optionally its processor). It says where the
language model's decoder blocks are, which linears are pruned, which token ids belong to which
modality, and how a conversation becomes a `CalibSample`. Adding a family is one subclass in its
own file, registered with `@register_family`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from tamp.data.sample import TEXT, CalibSample
from tamp.data.types import Message
from tamp.data.video import DecodedVideo
from tamp.models.attention_row import llama_last_row_attention

DEFAULT_TARGETS: tuple[str, ...] = (r".*",)  # every nn.Linear inside the decoder blocks
#: config keys that hold a language model's context length, by family convention
CONTEXT_KEYS: tuple[str, ...] = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


class FamilyAdapter:
    """Base adapter: subclasses set the class attributes and override the few family hooks."""

    family: ClassVar[str] = ""
    #: values of `config.model_type` this adapter handles (the top-level config)
    model_types: ClassVar[tuple[str, ...]] = ()
    #: transformers class used to load the model from a Hub id or a local directory
    model_class: ClassVar[str] = ""
    #: attribute path from the top-level model to the decoder's `layers` ModuleList
    blocks_path: ClassVar[str] = ""
    #: attribute paths of modules that must never be pruned (towers, projector, embeddings, head)
    protected_paths: ClassVar[tuple[str, ...]] = ()
    #: modality code -> names of config attributes holding that modality's placeholder token id
    modality_config_keys: ClassVar[dict[int, tuple[str, ...]]] = {}

    def __init__(self, model: nn.Module, processor: Any | None = None) -> None:
        self.model = model
        self.processor = processor

    # ----------------------------------------------------------------------------- structure
    def decoder_blocks(self) -> nn.ModuleList:
        return _get_path(self.model, self.blocks_path)

    def protected_modules(self) -> dict[str, nn.Module]:
        """Modules outside the decoder blocks that pruning must leave bit-identical."""
        found = {}
        for path in self.protected_paths:
            module = _get_path(self.model, path, missing_ok=True)
            if module is not None:
                found[path] = module
        return found

    def decoder(self) -> nn.Module:
        """The module that owns the decoder's `layers` (and, in HF models, the final `norm`)."""
        parent, _, _ = self.blocks_path.rpartition(".")
        return _get_path(self.model, parent) if parent else self.model

    def final_norm(self) -> nn.Module:
        """The norm applied after the last block (needed to compute the loss from block outputs)."""
        norm = getattr(self.decoder(), "norm", None)
        if norm is None:
            raise AttributeError(f"{self.family}: no final `norm` next to '{self.blocks_path}'; override final_norm")
        return norm

    def lm_head(self) -> nn.Module:
        """The output projection to the vocabulary (HF's `get_output_embeddings()`)."""
        head = self.model.get_output_embeddings()
        if head is None:
            raise AttributeError(f"{self.family}: the model has no output embeddings; override lm_head")
        return head

    def attention_module(self, block: nn.Module) -> nn.Module:
        """The self-attention module of a decoder block (used by attention-based token selection)."""
        return block.self_attn

    def last_row_attention(self, block: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        """[T] float32: `block`'s attention of the last query row over all positions, averaged over heads,
        for the input `hidden` [1, T, C] and the keyword arguments it was called with (AMIA's `a`).

        The default recomputes Llama-style attention (tamp.models.attention_row); a family whose attention
        differs (another norm placement, rotary form or score function) overrides this.
        """
        return llama_last_row_attention(block, self.attention_module(block), hidden, kwargs)

    def target_linears(
        self, targets: Sequence[str] = DEFAULT_TARGETS, ignore: Sequence[str] = ()
    ) -> list[dict[str, nn.Linear]]:
        """Per block, the linears to prune keyed by their qualified name in the whole model.

        A linear is pruned when its qualified name matches one of `targets` (re.search) and none of
        `ignore`. Only modules inside the decoder blocks are ever considered.
        """
        target_res = [re.compile(t) for t in targets]
        ignore_res = [re.compile(t) for t in ignore]
        per_block: list[dict[str, nn.Linear]] = []
        for index, block in enumerate(self.decoder_blocks()):
            prefix = f"{self.blocks_path}.{index}"
            chosen: dict[str, nn.Linear] = {}
            for rel_name, module in block.named_modules():
                if not isinstance(module, nn.Linear):
                    continue
                name = f"{prefix}.{rel_name}"
                if any(r.search(name) for r in target_res) and not any(r.search(name) for r in ignore_res):
                    chosen[name] = module
            per_block.append(chosen)
        return per_block

    def context_length(self) -> tuple[int, str] | None:
        """(positions, config key) of the language model's context, None when its config does not say.

        Calibration samples are cut to it (tamp.data.fit): positions past it are outside what the
        model was trained on and its rotary tables.
        """
        config = self.model.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        for key in CONTEXT_KEYS:
            value = getattr(text, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value, key
        return None

    # ----------------------------------------------------------------------------- modalities
    def modality_token_ids(self) -> dict[int, list[int]]:
        """Modality code -> the placeholder token ids the processor expands media into."""
        config = self.model.config
        ids: dict[int, list[int]] = {}
        for code, keys in self.modality_config_keys.items():
            for key in keys:
                value = _find_config_value(config, key)
                if value is not None:
                    ids.setdefault(code, []).append(int(value))
        return ids

    def modality_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """One modality code per position of the decoder sequence, from the token ids alone."""
        flat = input_ids.reshape(-1)
        codes = torch.full_like(flat, TEXT)
        for code, token_ids in self.modality_token_ids().items():
            ids = torch.tensor(token_ids, dtype=flat.dtype, device=flat.device)
            codes[torch.isin(flat, ids)] = code
        return codes

    # ----------------------------------------------------------------------------- calibration
    def process(
        self,
        text: str,
        images: Sequence[Any] | None = None,
        videos: Sequence[Any] | None = None,
        audios: Sequence[Any] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run the processor on one rendered conversation (families override for odd kwargs).

        A video is frames ((T, H, W, 3) array or list of PIL images) or a `DecodedVideo`, whose
        frame rate and indices reach the processor as transformers' `video_metadata` (Qwen2-VL and
        Qwen2.5-VL time their position ids with it; without it they assume a rate).
        """
        kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
        if images:
            kwargs["images"] = list(images)
        if videos:
            kwargs["videos"], metadata = video_inputs(videos)
            if metadata is not None:
                kwargs["video_metadata"] = metadata
        if audios:
            kwargs["audio"] = list(audios)
        return dict(self.processor(**kwargs))

    def render(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        return self.processor.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def encode(
        self,
        messages: Sequence[Message],
        images: Sequence[Any] | None = None,
        videos: Sequence[Any] | None = None,
        audios: Sequence[Any] | None = None,
    ) -> CalibSample:
        """Format a chat-style conversation into model inputs, modality ids and answer labels.

        `messages` are transformers chat messages: `{"role": "user" | "assistant" | "system",
        "content": [{"type": "image"}, {"type": "text", "text": "..."}]}`; each `{"type": "image"}`
        (or "video", "audio") entry is a placeholder for the next item of `images` (`videos`,
        `audios`), in order. `None` items are dropped, so `images=[None]` is a text-only sample.
        Labels are the assistant turns' tokens; everything else is -100. Answer spans are found by
        rendering each prefix of the conversation with the same media, so they are correct after the
        processor expands media placeholders into many tokens.
        """
        if self.processor is None:
            raise ValueError(f"{self.family}: a processor is needed to encode conversations")
        images, videos, audios = (present_media(messages, kind, items) for kind, items in
                                  (("image", images), ("video", videos), ("audio", audios)))
        inputs = self.process(self.render(messages, False), images, videos, audios)
        input_ids = inputs["input_ids"]
        labels = torch.full_like(input_ids, -100)
        for turn, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            start = self.process(self.render(messages[:turn], True), images, videos, audios)
            end = self.process(self.render(messages[: turn + 1], False), images, videos, audios)
            lo, hi = start["input_ids"].shape[1], end["input_ids"].shape[1]
            labels[:, lo:hi] = input_ids[:, lo:hi]
        return CalibSample(inputs=inputs, modality_ids=self.modality_ids(input_ids), labels=labels)


def video_inputs(videos: Sequence[Any]) -> tuple[list[Any], list[dict[str, Any]] | None]:
    """(frames per video, transformers `VideoMetadata` fields per video or None when none is known)."""
    frames = [v.frames if isinstance(v, DecodedVideo) else v for v in videos]
    if not any(isinstance(v, DecodedVideo) and v.fps for v in videos):
        return frames, None
    metadata = [
        v.metadata() if isinstance(v, DecodedVideo) else
        {"total_num_frames": len(v), "fps": None, "frames_indices": list(range(len(v)))}
        for v in videos
    ]
    return frames, metadata


def sampled_fps(videos: Sequence[Any]) -> float | None:
    """The rate one prompt's videos were sampled at (their mean: a processor takes one number)."""
    rates = [v.sampled_fps for v in videos if isinstance(v, DecodedVideo) and v.sampled_fps]
    return sum(rates) / len(rates) if rates else None


def present_media(messages: Sequence[Message], kind: str, items: Sequence[Any] | None) -> list[Any] | None:
    """The non-None media of one kind; None when there are none (a text-only sample).

    Processors fail deep inside transformers on a `None` image or on a placeholder with no media
    behind it, so both are settled here (the second with one line naming the shortfall). More
    media than list-content placeholders is left to the processor: string contents may spell
    placeholders as text and Omni's video sound track has none.
    """
    present = [item for item in (items or ()) if item is not None]
    slots = sum(
        1
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == kind
    )
    if slots > len(present):
        raise ValueError(
            f"the messages hold {slots} {{'type': '{kind}'}} placeholder(s) but {len(present)} {kind}(s) "
            f"were given; give one {kind} per placeholder (None entries are dropped)"
        )
    return present or None


def _get_path(root: nn.Module, path: str, missing_ok: bool = False) -> Any:
    obj: Any = root
    for part in path.split("."):
        if not hasattr(obj, part):
            if missing_ok:
                return None
            raise AttributeError(f"{type(root).__name__} has no module at '{path}' (missing '{part}')")
        obj = getattr(obj, part)
    return obj


def _find_config_value(config: Any, key: str) -> Any:
    """Look a key up on a config and its nested sub-configs (thinker_config, text_config, ...)."""
    if hasattr(config, key) and getattr(config, key) is not None:
        return getattr(config, key)
    for sub_name in ("thinker_config", "text_config"):
        sub = getattr(config, sub_name, None)
        if sub is not None and hasattr(sub, key) and getattr(sub, key) is not None:
            return getattr(sub, key)
    return None
