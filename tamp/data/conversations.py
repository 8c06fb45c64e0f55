"""LLaVA-style conversation records and their conversion to HF chat messages.

A record is `{"id", "image": path | [paths], "video": ..., "audio": ..., "conversations": [{"from":
"human" | "gpt" | ..., "value": "<image>\\n..."}, ...]}`. Placeholders (`<image>`, `<video>`,
`<audio>`) become content entries where they stand, so interleaved multi-image prompts keep their
order; media a record names without any placeholder go first in the first user turn, as LLaVA does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tamp.data.types import Message

MEDIA_KINDS = ("image", "video", "audio")
ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
_PLACEHOLDER = re.compile(r"\n?<(image|video|audio)>\n?")


@dataclass
class Record:
    """One conversation and its media references (paths or in-memory values), before decoding."""

    id: str
    turns: list[Mapping[str, Any]]
    media: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in MEDIA_KINDS})
    fields: Mapping[str, Any] = field(default_factory=dict)

    def first_media_path(self) -> str | None:
        """The path a prefix filter looks at: first image, else first video, else first audio."""
        for kind in MEDIA_KINDS:
            for ref in self.media.get(kind, []):
                if isinstance(ref, str):
                    return ref
                if isinstance(ref, Mapping) and isinstance(ref.get("path"), str):
                    return ref["path"]
        return None


def as_list(value: Any) -> list[Any]:
    """A record's media field as a list: absent -> [], one value -> [value]."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [v for v in value if v is not None]
    return [value]


def record_from_dict(raw: Mapping[str, Any], index: int, keys: Mapping[str, str] | None = None) -> Record:
    """A `Record` from a raw LLaVA dict; `keys` renames columns (id, conversations, image, video, audio)."""
    keys = {"id": "id", "conversations": "conversations", **{k: k for k in MEDIA_KINDS}, **(keys or {})}
    if not isinstance(raw, Mapping):
        raise ValueError(f"record #{index} is a {type(raw).__name__}; valid: a JSON object per record")
    record_id = str(raw.get(keys["id"], f"#{index}"))
    turns = raw.get(keys["conversations"])
    if isinstance(turns, str):  # some HF sets store the conversation as a JSON string
        try:
            turns = json.loads(turns)
        except json.JSONDecodeError:
            turns = None
    if not isinstance(turns, (list, tuple)) or not turns:
        raise ValueError(
            f"record '{record_id}' has no '{keys['conversations']}' list; "
            "valid: a non-empty list of {from, value} turns"
        )
    media = {kind: as_list(raw.get(keys[kind])) for kind in MEDIA_KINDS}
    return Record(record_id, list(turns), media, raw)


def _turn_text(turn: Any, record_id: str, index: int) -> tuple[str, str]:
    """(role, text) of a LLaVA turn ({from, value}) or an HF turn with string content ({role, content})."""
    if not isinstance(turn, Mapping):
        raise ValueError(f"record '{record_id}' turn {index} is not an object; valid: {{from, value}}")
    speaker = turn.get("from", turn.get("role"))
    text = turn.get("value", turn.get("content"))
    if speaker not in ROLES:
        raise ValueError(
            f"record '{record_id}' turn {index} has speaker {speaker!r}; valid: {', '.join(ROLES)}"
        )
    if not isinstance(text, str):
        raise ValueError(f"record '{record_id}' turn {index} has no text value; valid: a string 'value'")
    return ROLES[speaker], text


def split_placeholders(text: str) -> list[dict[str, str]]:
    """Content entries for one turn: text pieces and media entries in the order they appear.

    The newline LLaVA writes next to a placeholder ("<image>\\n") is dropped with it; other
    whitespace is kept so interleaved text reads as written.
    """
    content: list[dict[str, str]] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        if text[position : match.start()].strip():
            content.append({"type": "text", "text": text[position : match.start()]})
        content.append({"type": match.group(1)})
        position = match.end()
    if text[position:].strip() or not content:
        content.append({"type": "text", "text": text[position:]})
    return content


def to_messages(
    record: Record, counts: Mapping[str, int] | None = None, drop: Sequence[str] = ()
) -> list[Message]:
    """HF chat messages for a record; `counts` overrides how many media of each kind it holds.

    `drop` names media kinds that get no content entry (an audio that is its video's sound track,
    interleaved by the processor inside the video's tokens).
    """
    counts = dict(counts) if counts is not None else {k: len(v) for k, v in record.media.items()}
    messages: list[Message] = []
    for index, turn in enumerate(record.turns):
        role, text = _turn_text(turn, record.id, index)
        messages.append({"role": role, "content": split_placeholders(text)})
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError(
            f"record '{record.id}' has no answer (no gpt/assistant turn); valid: a conversation "
            "with at least one assistant turn, whose tokens become the labels"
        )
    unplaced: list[dict[str, str]] = []
    for kind in MEDIA_KINDS:
        found = sum(1 for m in messages for c in m["content"] if c["type"] == kind)
        given = counts.get(kind, 0)
        if found == 0:
            unplaced.extend({"type": kind} for _ in range(given))
        elif found != given:
            raise ValueError(
                f"record '{record.id}' has {found} <{kind}> placeholder(s) but {given} {kind}(s); "
                f"valid: one <{kind}> per {kind}, or none to put them all first"
            )
    if unplaced:
        first_user = next((m for m in messages if m["role"] == "user"), None)
        if first_user is None:
            raise ValueError(f"record '{record.id}' has media but no user turn; valid: a human/user turn")
        first_user["content"] = [*unplaced, *first_user["content"]]
    if drop:
        for message in messages:
            message["content"] = [c for c in message["content"] if c["type"] not in drop]
    return messages


class RecordsInMemory:
    """A calibration source whose records are all parsed (tamp.data.calib.RecordSource): a subclass sets
    `label` and `_records`; lookups by field, media prefix and index are the same for all of them."""

    label: str
    _records: list[Record]

    def __len__(self) -> int:
        return len(self._records)

    def field_values(self, field: str) -> list[Any]:
        return [record.fields.get(field) for record in self._records]

    def prefix_values(self, prefix_field: str | None) -> list[str | None]:
        if prefix_field:
            return [None if v is None else str(v) for v in self.field_values(prefix_field)]
        return [record.first_media_path() for record in self._records]

    def records(self, indices: list[int]) -> list[Record]:
        return [self._records[i] for i in indices]
