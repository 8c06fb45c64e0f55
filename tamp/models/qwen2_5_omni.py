"""Qwen2.5-Omni, thinker only: audio tower + vision tower + Qwen2 decoder with time-aligned M-RoPE.

Only the thinker (the part that reads audio, images, video and text and writes text) is loaded and
pruned; the talker and the token2wav vocoder are never built. `model_class` is the thinker class,
which transformers can load from either checkpoint layout: a full `Qwen/Qwen2.5-Omni-*` directory
(config `model_type` "qwen2_5_omni"; the thinker's sub-config is picked out of `thinker_config` and
the `thinker.` weight prefix is stripped, talker/token2wav weights are ignored) or a thinker saved on
its own (`model_type` "qwen2_5_omni_thinker").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from tamp.data.sample import AUDIO, IMAGE, VIDEO
from tamp.models.base import FamilyAdapter, sampled_fps, video_inputs
from tamp.models.registry import register_family


@register_family
class Qwen2_5OmniAdapter(FamilyAdapter):
    """The Qwen2.5-Omni thinker. Set `use_audio_in_video = True` when each audio is its video's track."""

    family: ClassVar[str] = "qwen2_5_omni"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_5_omni", "qwen2_5_omni_thinker")
    model_class: ClassVar[str] = "Qwen2_5OmniThinkerForConditionalGeneration"
    blocks_path: ClassVar[str] = "model.language_model.layers"
    protected_paths: ClassVar[tuple[str, ...]] = (
        "model.audio_tower",  # Whisper-style encoder, its pooling and its output projection
        "model.visual",  # vision tower, including its patch merger (the projector)
        "model.language_model.embed_tokens",
        "model.language_model.norm",
        "lm_head",
    )
    # the thinker config's own names; `*_token_id` are aliases of them (attribute_map)
    modality_config_keys: ClassVar[dict[int, tuple[str, ...]]] = {
        IMAGE: ("image_token_index",),
        VIDEO: ("video_token_index",),
        AUDIO: ("audio_token_index",),
    }
    #: audios[i] is the sound track of videos[i]: the processor interleaves their tokens in 2 s chunks
    #: and the model must be told (`use_audio_in_video`) to build the matching positions
    use_audio_in_video: bool = False

    def process(
        self,
        text: str,
        images: Sequence[Any] | None = None,
        videos: Sequence[Any] | None = None,
        audios: Sequence[Any] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The Omni processor needs the audio rate, the video size, its rate and the audio-in-video switch.

        Its class defaults hard-code `sampling_rate=16000` (an error for any other feature extractor
        rate, so the extractor's own rate is passed), a video `size` that overrides the video
        processor's own (see `_video_size`) and 2 frames per second of video: a `DecodedVideo`'s
        own sampling rate is passed instead (8 frames of an hour are not a 4-second clip).
        """
        kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
        if images:
            kwargs["images"] = list(images)
        if videos:
            kwargs["videos"], _ = video_inputs(videos)
            videos_kwargs: dict[str, Any] = {}
            size = self._video_size()
            if size is not None:
                videos_kwargs["size"] = size
            rate = sampled_fps(videos)
            if rate is not None:  # the Omni processor times video (and interleaved audio) by this rate
                videos_kwargs["fps"] = rate
            if videos_kwargs:
                kwargs["videos_kwargs"] = videos_kwargs
        if audios:
            kwargs["audio"] = list(audios)
            kwargs["audio_kwargs"] = {"sampling_rate": self.processor.feature_extractor.sampling_rate}
        in_video = bool(self.use_audio_in_video and videos and audios)
        if in_video:
            if len(audios) != len(videos):
                raise ValueError("use_audio_in_video needs exactly one audio track per video")
            kwargs["load_audio_from_video"] = True
            kwargs["audio_from_video_indices"] = list(range(len(videos)))
        inputs = dict(self.processor(**kwargs))
        if in_video:
            # a forward kwarg, not a processor output: without it the positions ignore the interleaving
            inputs["use_audio_in_video"] = torch.tensor(True)
        return inputs

    def _video_size(self) -> dict[str, int] | None:
        """The video size to force, or None to keep the processor's class default.

        That default (128 to 768 merged 28 x 28 units per frame, the reference Omni preprocessing)
        replaces whatever the checkpoint's video processor says, which is right for the real
        checkpoints. A video processor that allows no frame even as large as the default's minimum
        (a tiny test model) is taken at its word instead.
        """
        default = (getattr(self.processor, "videos_kwargs", None) or {}).get("size")
        own = dict(self.processor.video_processor.size)
        if default and own.get("longest_edge", 0) < default.get("shortest_edge", 0):
            return own
        return None
