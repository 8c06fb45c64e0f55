"""LLaVA-format calibration files: a JSON list of records or JSONL (one record per line).

Parsing failures name the file and the line and column, because the sets are large (LLaVA-NeXT-Data
is ~780k records) and a bare `JSONDecodeError` does not say which file of a sweep broke.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tamp.data.conversations import Record, RecordsInMemory, record_from_dict

FORMATS = "a JSON list of records or JSONL (one record object per line)"


def _bad_json(path: Path, line: int, column: int, why: str) -> ValueError:
    return ValueError(
        f"calibration file {path} is not valid JSON at line {line}, column {column}: {why}; valid: {FORMATS}"
    )


def read_raw_records(path: str | Path) -> list[Any]:
    """The raw record objects of a `.json` list or a `.jsonl` file, whichever the content is."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"calibration file {path} is a directory; valid: a .json or .jsonl file")
    if not path.is_file():
        raise FileNotFoundError(
            f"calibration file {path} does not exist; valid: an existing .json or .jsonl file"
        )
    text = path.read_text(encoding="utf-8-sig")  # tolerate a BOM
    stripped = text.lstrip()
    if not stripped:
        raise ValueError(f"calibration file {path} is empty; valid: {FORMATS}")
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise _bad_json(path, err.lineno, err.colno, err.msg) from None
        if not isinstance(data, list):  # "[1] [2]" style garbage is caught above; keep the check cheap
            raise ValueError(f"calibration file {path} holds a {type(data).__name__}; valid: {FORMATS}")
        return data
    records: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise _bad_json(path, number, err.colno, err.msg) from None
    if len(records) == 1 and isinstance(records[0], Mapping) and "conversations" not in records[0]:
        raise ValueError(f"calibration file {path} holds one object, not records; valid: {FORMATS}")
    return records


def load_llava_records(path: str | Path, keys: Mapping[str, str] | None = None) -> list[Record]:
    """Every record of a LLaVA JSON/JSONL file (media stay references; nothing is decoded)."""
    raw = read_raw_records(path)
    if not raw:
        raise ValueError(f"calibration file {path} holds no records; valid: {FORMATS}")
    return [record_from_dict(item, index, keys) for index, item in enumerate(raw)]


class JsonSource(RecordsInMemory):
    """A LLaVA JSON/JSONL file as a calibration source (all records parsed, media undecoded)."""

    def __init__(self, path: str | Path, keys: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.label = f"calibration file {self.path}"
        self._records = load_llava_records(self.path, keys)
