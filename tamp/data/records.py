"""Calibration samples from conversations held in memory: `tamp.build_samples(adapter, conversations)`.

The Python API's way in, beside the files and datasets a run config names. `conversations` is
- a list of LLaVA-style records (`{"conversations": [{"from": "human", "value": "<image>\\n..."}, ...],
  "image": PIL image | bytes | path}`), media paths relative to `media_dir`;
- a list of chat entries (`{"messages": [transformers chat messages], "images": [...], "videos": [...],
  "audios": [...]}`), each placeholder `{"type": "image"}` taking the next item of its media list;
- a `datasets.Dataset` of LLaVA-style rows (media columns as stored: Image features, bytes, paths).
The same seeded draw as a run's `calib.num_samples` / `calib.seed` picks the records.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from tamp.data.calib import CalibConfig, samples_from_source
from tamp.data.conversations import RecordsInMemory, record_from_dict
from tamp.data.sample import CalibSample
from tamp.data.types import SampleEncoder

MEDIA = ("images", "videos", "audios")


class RecordList(RecordsInMemory):
    """LLaVA-style records held in a list, as a calibration source (tamp.data.calib.RecordSource)."""

    def __init__(self, records: Sequence[Mapping[str, Any]], columns: Mapping[str, str] | None = None) -> None:
        self.label = f"the {len(records)} conversations given"
        self._records = [record_from_dict(raw, i, columns) for i, raw in enumerate(records)]


def _is_dataset(value: Any) -> bool:
    return hasattr(value, "column_names") and hasattr(value, "select") and hasattr(value, "with_format")


def build_samples(
    adapter: SampleEncoder,
    conversations: Any,
    num_samples: int | None = None,
    seed: int = 42,
    media_dir: str | None = None,
    columns: Mapping[str, str] | None = None,
    progress: bool = True,
) -> list[CalibSample]:
    """Encoded calibration samples for `adapter`'s model (`tamp.get_adapter(model, processor)`).

    `num_samples` records are drawn with `seed` (None: all, in order); `columns` renames a dataset's or
    record's keys (id, conversations, image, video, audio); `media_dir` roots relative media paths.
    """
    cfg = CalibConfig(name="given", source="hf" if _is_dataset(conversations) else "llava_json", path="memory",
                      media_dir=media_dir, num_samples=num_samples, seed=seed, columns=dict(columns or {}),
                      progress=progress).validate()
    if _is_dataset(conversations):
        from tamp.data.hf_dataset import HFSource

        return samples_from_source(adapter, HFSource(conversations, columns, "the dataset given"), cfg)
    items = list(conversations)
    if not items:
        raise ValueError("no conversations given; valid: a non-empty list of records or chat entries, or a dataset")
    if all(isinstance(item, Mapping) and "messages" in item for item in items):
        return _chat_samples(adapter, items, cfg)
    if not all(isinstance(item, Mapping) and "conversations" in item for item in items):
        raise ValueError("conversations must all be LLaVA records ({'conversations': [...], 'image': ...}) or all "
                         "chat entries ({'messages': [...], 'images': [...]}); valid: one kind per call")
    return samples_from_source(adapter, RecordList(items, columns), cfg)


def _chat_samples(adapter: SampleEncoder, items: list[Mapping[str, Any]], cfg: CalibConfig) -> list[CalibSample]:
    """Chat entries encoded as they are: the adapter places each media item at its placeholder."""
    indices = list(range(len(items)))
    if cfg.num_samples is not None:
        if cfg.num_samples > len(items):
            raise ValueError(f"num_samples={cfg.num_samples} but {len(items)} conversations were given; "
                             f"valid: num_samples <= {len(items)}")
        indices = random.Random(cfg.seed).sample(indices, cfg.num_samples)
    samples = []
    for index in indices:
        item = items[index]
        unknown = sorted(set(item) - {"messages", "id", *MEDIA})
        if unknown:
            raise ValueError(f"conversation #{index} has key '{unknown[0]}'; valid: messages, id, {', '.join(MEDIA)}")
        sample = adapter.encode(item["messages"], item.get("images"), item.get("videos"), item.get("audios"))
        sample.meta["id"] = str(item.get("id", f"#{index}"))
        samples.append(sample)
    return samples
