"""Build calibration samples for a model from a LLaVA JSON/JSONL file or an HF dataset.

`build_calibration(adapter, cfg)` selects records (prefix / field filters), draws `num_samples` of
them with a seeded RNG without replacement (`calib.draw`: `python`, the default, is
`random.Random(seed).sample`; `official` is the TAMP repository's `np.random.seed(seed)` then
`np.random.choice(..., replace=False)`, which picks other records for the same seed), checks everything
that can be checked before decoding (answers, placeholders, media files, what the processor accepts),
then decodes media, encodes each conversation through the family adapter and cuts samples longer than
`max_tokens` or the model's context (tamp.data.fit). Every failure is one line naming the key or file.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tamp.core.io import first_line
from tamp.core.progress import track
from tamp.data.calib_config import CalibConfig  # the config lives apart: composing a run needs no numpy
from tamp.data.conversations import Record, to_messages
from tamp.data.fit import fit, token_limit, truncate
from tamp.data.media import (
    check_exists,
    describe,
    load_audio,
    load_image,
    load_video,
    processor_sampling_rate,
    verify_image,
)
from tamp.data.sample import CalibSample
from tamp.data.sources import register_source
from tamp.data.types import Message, SampleEncoder

#: processor attribute that must exist for a media kind to be accepted
_MEDIA_PROCESSORS = {"image": "image_processor", "video": "video_processor", "audio": "feature_extractor"}


class RecordSource(Protocol):
    label: str

    def __len__(self) -> int: ...
    def field_values(self, field: str) -> list[Any]: ...
    def prefix_values(self, prefix_field: str | None) -> list[str | None]: ...
    def records(self, indices: list[int]) -> list[Record]: ...


def as_calib_config(cfg: CalibConfig | Mapping[str, Any] | Any) -> CalibConfig:
    """A validated `CalibConfig` from a dataclass, a dict or an OmegaConf node (unknown keys rejected)."""
    from tamp.core.config import from_dict

    if isinstance(cfg, CalibConfig):
        return cfg.validate()
    if hasattr(cfg, "items") and not isinstance(cfg, dict):  # an OmegaConf DictConfig
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
    return from_dict(CalibConfig, dict(cfg), "calib").validate()


def open_source(cfg: CalibConfig) -> RecordSource:
    if cfg.source == "hf":
        from tamp.data.hf_dataset import hf_source

        return hf_source(cfg.path, cfg.subset, cfg.split, cfg.columns)
    from tamp.data.llava_json import JsonSource

    return JsonSource(cfg.path, cfg.columns)


def _top_folders(values: Sequence[str | None], limit: int = 5) -> str:
    seen: list[str] = []
    for value in values:
        head = value.removeprefix("./").partition("/") if value else None
        head = (head[0] + head[1] if head[1] else head[0]) if head else None  # 'folder/' or the name
        if head and head not in seen:
            seen.append(head)
        if len(seen) == limit:
            break
    return ", ".join(f"'{s}'" for s in seen) or "none (no media paths)"


def select_indices(source: RecordSource, cfg: CalibConfig) -> list[int]:
    """Indices of the records that pass the prefix and field filters, in file order."""
    keep = list(range(len(source)))
    if cfg.prefix:
        values = source.prefix_values(cfg.prefix_field)
        prefix = cfg.prefix.removeprefix("./") if not cfg.prefix_field else cfg.prefix
        keep = [i for i in keep if values[i] is not None and _strip(values[i], cfg).startswith(prefix)]
        if not keep:
            what = f"field '{cfg.prefix_field}'" if cfg.prefix_field else "media path"
            raise ValueError(
                f"calib.prefix='{cfg.prefix}' matches no {what} of the {len(source)} records "
                f"in {source.label}; "
                f"valid: a prefix such as {_top_folders(values)}"
            )
    for key, wanted in cfg.where.items():
        allowed = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
        values = source.field_values(key)
        keep = [i for i in keep if values[i] in allowed]
        if not keep:
            seen = list(dict.fromkeys(repr(v) for v in values if v is not None))[:5]
            raise ValueError(
                f"calib.where.{key}={wanted!r} matches no record in {source.label}; "
                f"valid: a value it holds such as {', '.join(seen) or 'none (the field is absent)'}"
            )
    return keep


def _strip(value: str, cfg: CalibConfig) -> str:
    return value if cfg.prefix_field else value.removeprefix("./")


def draw(indices: Sequence[int], cfg: CalibConfig, label: str) -> list[int]:
    """`num_samples` of `indices` without replacement; the same seed (and `draw`) gives the same draw.

    `official`: the TAMP repository's draw (np.random.seed(seed), then np.random.choice over the
    task's records without replacement), from a private RandomState seeded the same way, so the
    global numpy stream is left alone. It equals the official draw when `indices` are the records of
    the official task range in file order (split_finetune_llava_next.py's contiguous task ranges).
    """
    if cfg.num_samples is None:
        return list(indices)
    if cfg.num_samples > len(indices):
        filters = " after the prefix/where filters" if (cfg.prefix or cfg.where) else ""
        raise ValueError(
            f"calib.num_samples={cfg.num_samples} but {label} has {len(indices)} records{filters}; "
            f"valid: num_samples <= {len(indices)}"
        )
    if cfg.draw == "official":
        chosen = np.random.RandomState(cfg.seed).choice(np.asarray(indices), size=cfg.num_samples, replace=False)
        return [int(i) for i in chosen]
    return random.Random(cfg.seed).sample(list(indices), cfg.num_samples)


def draw_note(cfg: CalibConfig) -> str:
    """Which draw picked the calibration samples (a report footnote)."""
    if cfg.draw == "official":
        return f"np.random.seed({cfg.seed}) + np.random.choice, as the TAMP repository (as published)"
    return f"random.Random({cfg.seed}).sample"


def _media_dir(cfg: CalibConfig) -> Path | None:
    if cfg.media_dir:
        return Path(cfg.media_dir)
    path = Path(cfg.path)
    if cfg.source == "llava_json":
        return path.parent
    return path if path.is_dir() else None


@dataclass
class _Plan:
    """A record checked and ready to decode: its messages and its media references by kind."""

    record: Record
    messages: list[Message]
    media: dict[str, list[Any]]


def check_media(records: Sequence[Record], cfg: CalibConfig) -> None:
    """The drawn records' media files exist and their images read whole: before the model loads."""
    media_dir = _media_dir(cfg)
    for record in records:
        for kind, refs in record.media.items():
            for ref in refs:
                check_exists(ref, media_dir, record.id)
                if kind == "image":
                    verify_image(ref, media_dir, record.id)


def plan_record(record: Record, adapter: SampleEncoder, cfg: CalibConfig, media_dir: Path | None) -> _Plan:
    """Everything about a record that can fail without decoding media: fail before the slow part."""
    media = {kind: list(refs) for kind, refs in record.media.items()}
    if cfg.audio_from_video and media["video"] and not media["audio"]:
        media["audio"] = list(media["video"])
    in_video = bool(getattr(adapter, "use_audio_in_video", False) and media["video"] and media["audio"])
    messages = to_messages(record, {k: len(v) for k, v in media.items()}, drop=("audio",) if in_video else ())
    for kind, refs in media.items():
        if refs and getattr(adapter.processor, _MEDIA_PROCESSORS[kind], None) is None:
            raise ValueError(
                f"record '{record.id}' has {kind} but the {adapter.family} processor takes no {kind}; "
                f"valid: records with only the media this model reads (or another calib.prefix/where)"
            )
        for ref in refs:
            check_exists(ref, media_dir, record.id)
    return _Plan(record, messages, media)


def _decode(kind: str, ref: Any, media_dir: Path | None, record_id: str, loader: Any, *args: Any) -> Any:
    """One media item decoded; a file that does not decode is one line naming it and its record."""
    try:
        return loader(ref, media_dir, *args)
    except Exception as err:  # noqa: BLE001 - PIL and PyAV raise OSError, SyntaxError, av.error.*, ...
        raise ValueError(
            f"record '{record_id}': {kind} {describe(ref, media_dir)} cannot be decoded "
            f"({type(err).__name__}: {first_line(err)}); valid: a whole {kind} file (re-copy it)"
        ) from None


def encode_plan(plan: _Plan, adapter: SampleEncoder, cfg: CalibConfig, media_dir: Path | None) -> CalibSample:
    """Decode the plan's media and encode the conversation through the family adapter."""
    record = plan.record.id
    images = [_decode("image", ref, media_dir, record, load_image) for ref in plan.media["image"]]
    decoded = [_decode("video", ref, media_dir, record, load_video, cfg.num_frames, cfg.fps)
               for ref in plan.media["video"]]
    rate = processor_sampling_rate(adapter.processor)
    audios = [_decode("audio", ref, media_dir, record, load_audio, rate) for ref in plan.media["audio"]]
    # whole DecodedVideos: their frame rate and indices reach the processor (Qwen times positions by them)
    sample = adapter.encode(plan.messages, images or None, decoded or None, audios or None)
    sample.meta.update({"id": plan.record.id, "video_metadata": [v.metadata() for v in decoded]})
    return sample


def _draw_key(cfg: CalibConfig) -> tuple[Any, ...]:
    """What a draw depends on: the selection settings and the file as it is on disk now."""
    path = Path(cfg.path)
    stat = path.stat() if path.is_file() else None
    skip = ("progress", "name", "num_frames", "fps", "max_tokens")
    fields = {k: v for k, v in asdict(cfg).items() if k not in skip}
    return (repr(sorted(fields.items())), str(path.resolve()), stat and (stat.st_mtime_ns, stat.st_size))


_DRAWN: dict[tuple[Any, ...], list[Record]] = {}


def draw_records(cfg: CalibConfig | Mapping[str, Any] | Any) -> list[Record]:
    """The records a calibration set draws (filters, then the seeded draw), media not decoded.

    This is the only step that parses the file (845 MB for ShareGPT4V: gigabytes of Python objects),
    so it is remembered per process: the pre-run check and the run itself share one parse, and only
    the drawn records (a few hundred small objects) are kept, never the parsed file.
    """
    cfg = as_calib_config(cfg)
    key = _draw_key(cfg)
    if key not in _DRAWN:
        source = open_source(cfg)
        chosen = draw(select_indices(source, cfg), cfg, source.label)
        _DRAWN.clear()  # one set per process is enough (a sweep's cells share theirs)
        _DRAWN[key] = source.records(chosen)
    return list(_DRAWN[key])


def encode_records(
    records: Sequence[Record], adapter: SampleEncoder, cfg: CalibConfig | Mapping[str, Any] | Any
) -> list[CalibSample]:
    """Check every record first (fail before the slow part), then decode its media and encode it."""
    cfg = as_calib_config(cfg)
    media_dir = _media_dir(cfg)
    plans = [plan_record(record, adapter, cfg, media_dir) for record in records]
    samples = []
    # a bar on a terminal; elsewhere (a cluster job's log) a line every 30 s and at the end
    for plan in track(plans, f"calibration ({cfg.name or cfg.source})", enabled=cfg.progress, unit="sample"):
        samples.append(encode_plan(plan, adapter, cfg, media_dir))
    return samples


class ConversationSet:
    """`calib.source=llava_json | hf`: samples drawn from a conversation set (`calib.*`).

    In two steps, `draw` (parse the file, filter, draw: done once, by rank 0 of a data-parallel run)
    and `encode` (decode media, encode: each process its own share), see tamp.pipeline.distributed.
    """

    def draw(self, cfg: Any) -> list[Record]:
        return draw_records(cfg)

    def encode(self, records: Sequence[Record], encoder: SampleEncoder, cfg: Any) -> list[CalibSample]:
        return encode_records(records, encoder, cfg)

    def __call__(self, cfg: Any, encoder: SampleEncoder, examples: Sequence[Any] | None = None) -> list[CalibSample]:
        return self.encode(self.draw(cfg), encoder, cfg)


conversation_set = register_source("hf")(register_source("llava_json")(ConversationSet()))


__all__ = ["CalibConfig", "build_calibration", "requires_modalities", "truncate"]


def build_calibration(
    adapter: SampleEncoder, cfg: CalibConfig | Mapping[str, Any] | Any
) -> list[CalibSample]:
    """Calibration samples for `adapter`'s model, drawn from the configured conversation set."""
    cfg = as_calib_config(cfg)  # the file is parsed once per process (draw_records), the draw seeded by calib.seed
    return fit(encode_records(draw_records(cfg), adapter, cfg), token_limit(cfg.max_tokens, adapter))[0]


def samples_from_source(adapter: SampleEncoder, source: RecordSource, cfg: CalibConfig) -> list[CalibSample]:
    """Filter, draw (seeded), check, decode and encode the records of an opened source."""
    chosen = draw(select_indices(source, cfg), cfg, source.label)
    return fit(encode_records(source.records(chosen), adapter, cfg), token_limit(cfg.max_tokens, adapter))[0]


@dataclass
class ModalityReport:
    """Which modalities a set of samples holds: tokens in all, and how many samples hold each."""

    tokens: dict[str, int]
    samples: dict[str, int]
    missing: list[str]
    min_modalities: int

    @property
    def present(self) -> list[str]:
        return [name for name, count in self.tokens.items() if count > 0]

    @property
    def ok(self) -> bool:
        return not self.missing and len(self.present) >= self.min_modalities

    def message(self) -> str:
        """One line for an error or a warning, saying what is there and what was asked for."""
        have = ", ".join(f"{n} ({self.tokens[n]} tokens in {self.samples[n]} samples)" for n in self.present)
        want = f"at least {self.min_modalities} modalities"
        if self.missing:
            want += f" including {', '.join(self.missing)}"
        return f"calibration samples hold {have or 'nothing'}; needed: {want}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def requires_modalities(
    samples: Sequence[CalibSample], required: Iterable[str] = (), min_modalities: int = 1
) -> ModalityReport:
    """Report the modalities the samples contain against what a method needs; the caller decides.

    Inter-modality terms (DAS) need text plus at least one media kind, i.e. `min_modalities=2`.
    """
    tokens: dict[str, int] = {}
    holders: dict[str, int] = {}
    for sample in samples:
        for name, count in sample.modality_counts().items():
            tokens[name] = tokens.get(name, 0) + count
            holders[name] = holders.get(name, 0) + (count > 0)
    missing = [name for name in required if tokens.get(name, 0) == 0]
    return ModalityReport(tokens, holders, missing, min_modalities)
