"""Calibration records from an HF `datasets` dataset (a local folder, a `save_to_disk` folder, or the cache).

Rows are read in Arrow format, so media columns (Image, Audio, Video features) arrive as their stored
`{"bytes", "path"}` and go through the same PyAV/PIL decoders as files on disk: nothing is decoded
by `datasets` (no torchcodec needed) and nothing is rewritten, however large the set. Filters read
single Arrow columns, never whole rows, so drawing 128 records out of hundreds of thousands does not
touch the others' image bytes. `datasets` may keep only the base name of embedded media (it does for
lists of images), so a prefix on media paths can miss here: filter on a column (`prefix_field`,
`where`) instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tamp.core.io import first_line
from tamp.data.conversations import MEDIA_KINDS, Record, record_from_dict

DEFAULT_COLUMNS = {"id": "id", "conversations": "conversations", **{k: k for k in MEDIA_KINDS}}


def open_dataset(path: str | Path, name: str | None = None, split: str = "train") -> Any:
    """One split of a dataset, offline: `save_to_disk` folders, data folders, or cached Hub ids."""
    import datasets

    local = Path(path).expanduser()
    where = f"calibration dataset {path} (subset={name}, split={split})"
    if (local.is_absolute() or str(path).startswith((".", "~"))) and not local.exists():
        raise FileNotFoundError(
            f"calibration dataset folder {local} does not exist; valid: a folder of data files "
            "(parquet, json, arrow, ...), a `save_to_disk` folder, or a Hub id in the HF cache"
        )
    try:
        if (local / "dataset_dict.json").is_file():
            return datasets.load_from_disk(str(local))[split]
        if (local / "state.json").is_file():
            return datasets.load_from_disk(str(local))
        return datasets.load_dataset(str(local) if local.exists() else str(path), name, split=split)
    except KeyError:
        raise ValueError(f"{where} has no such split; valid: one of its splits") from None
    except ConnectionError:
        raise FileNotFoundError(
            f"{where} is not in the HF cache and the network is off; valid: a local dataset folder, or a "
            f"Hub id downloaded beforehand (`hf download --repo-type dataset {path}` where there is network)"
        ) from None
    except (OSError, ValueError) as err:
        kind = FileNotFoundError if isinstance(err, FileNotFoundError) else ValueError
        raise kind(f"{where} cannot be loaded: {first_line(err)}") from None


class HFSource:
    """Rows of one split as calibration records, with columns renamed by `columns`."""

    def __init__(self, dataset: Any, columns: Mapping[str, str] | None = None, label: str = "") -> None:
        self.columns = {**DEFAULT_COLUMNS, **(columns or {})}
        self.label = label or "hf dataset"
        names = set(dataset.column_names)
        conv = self.columns["conversations"]
        if conv not in names:
            raise ValueError(
                f"{self.label} has no conversation column '{conv}'; valid: calib.columns.conversations = "
                f"one of {', '.join(sorted(names))}"
            )
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def _arrow_column(self, column: str) -> Any:
        return self.dataset.select_columns([column]).with_format("arrow")[:].column(column)

    def field_values(self, field: str) -> list[Any]:
        """One column's values (a filter key); only that column is read."""
        if field not in self.dataset.column_names:
            raise ValueError(
                f"{self.label} has no column '{field}' to filter on; "
                f"valid: {', '.join(self.dataset.column_names)}"
            )
        return self._arrow_column(field).to_pylist()

    def _paths(self, column: str) -> list[str | None]:
        """The first media path of each row, from strings, {bytes, path} structs or lists of either."""
        import pyarrow as pa

        values = self._arrow_column(column)
        kind = values.type
        item = kind.value_type if pa.types.is_list(kind) or pa.types.is_large_list(kind) else kind
        if pa.types.is_struct(item):
            if item.get_field_index("path") < 0:
                return [None] * len(values)
            slim = pa.struct([("path", pa.string())])
            values = values.cast(pa.list_(slim) if item is not kind else slim)
        rows = values.to_pylist()
        out: list[str | None] = []
        for row in rows:
            first = row[0] if isinstance(row, list) and row else (None if isinstance(row, list) else row)
            out.append(first.get("path") if isinstance(first, dict) else first)
        return out

    def prefix_values(self, prefix_field: str | None) -> list[str | None]:
        """What a prefix filter compares: a named column, or the first image/video/audio path."""
        if prefix_field:
            return [None if v is None else str(v) for v in self.field_values(prefix_field)]
        merged: list[str | None] = [None] * len(self)
        for kind in MEDIA_KINDS:
            column = self.columns[kind]
            if column in self.dataset.column_names:
                paths = self._paths(column)
                merged = [m if m is not None else p for m, p in zip(merged, paths, strict=True)]
        return merged

    def records(self, indices: Sequence[int]) -> list[Record]:
        """The chosen rows as records (media stay undecoded references)."""
        # arrow rows are the stored values: media stay {bytes, path} instead of decoded objects
        rows = self.dataset.select(list(indices)).with_format("arrow")[:].to_pylist()
        return [record_from_dict(row, index, self.columns) for index, row in zip(indices, rows, strict=True)]


def hf_source(
    path: str | Path, name: str | None = None, split: str = "train", columns: Mapping[str, str] | None = None
) -> HFSource:
    return HFSource(open_dataset(path, name, split), columns, label=f"calibration dataset {path}")
