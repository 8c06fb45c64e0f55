"""results.json as one typed record, shared by its writer, the W&B logger, failure handling and the report.

The keys of results.json are spelled here and nowhere else. Reading is tolerant: users have run
folders from older versions and hand-made files, so a missing part reads as empty (a file without
a status is a finished run, as the report has always counted it) and unknown keys are kept and
written back. Only a file that is not a JSON object at all is an error, one line naming the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tamp.core.io import first_line, write_json_atomic

RESULTS_FILE = "results.json"
RUNNING, COMPLETED, FAILED, INTERRUPTED = "running", "completed", "failed", "interrupted"
#: the top-level keys of results.json, in the order they are written
FIELDS = (
    "status", "error", "run_dir", "experiment", "model", "method", "sparsity", "config", "versions",
    "timings", "sparsity_per_linear", "allocation_scores", "scores", "primary_metric", "columns", "groups",
    "variants",
)
#: top-level keys written only when they hold something (files without them read and write back unchanged)
OPTIONAL_FIELDS = ("calibration", "devices", "reused")
_LAYER_INDEX = re.compile(r"layers\.(\d+)\.")
_ANY_INDEX = re.compile(r"\.(\d+)\.")  # names of hand-made files whose blocks are not called `layers`


def pattern_label(pattern: str | None, nm: Any, allocation: str | None) -> str:
    """The pattern as tables and W&B label it: N:M under a layer-wise allocation is `mixed N:M` when the plan
    mixed its N per layer, `N:M uniform` when it did not (every linear rounded to N, or a run from before
    mixed N:M, which ignored the allocation), so such a run never reads as an allocation it did not make."""
    pattern = str(pattern or "unstructured")
    if pattern == "unstructured":
        return pattern
    if isinstance(nm, dict) and nm.get("mixed"):
        return f"mixed {pattern}"
    return f"{pattern} uniform" if allocation not in (None, "uniform") else pattern


class RunRecordError(ValueError):
    """results.json cannot be read as a record; the message is one line naming the file."""


def block_index(name: str) -> int | None:
    """The decoder block of a linear from its qualified name: '...layers.3.mlp.up_proj' -> 3."""
    found = _LAYER_INDEX.search(name) or _ANY_INDEX.search(name)
    return int(found.group(1)) if found else None


def projection_kind(name: str) -> str:
    """'...layers.3.self_attn.q_proj' -> 'q_proj' (the figure 7 grouping)."""
    return name.rsplit(".", 1)[-1]


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _extra(data: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    """The keys a part does not know: kept so reading and writing a file loses nothing."""
    return {k: v for k, v in data.items() if k not in known}


@dataclass
class ModelId:
    """Which model ran: its name (Hub id, directory, tiny:/zoo) and the family adapter that loaded it."""

    name: str | None = None
    family: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, **self.extra}

    @classmethod
    def from_json(cls, data: Any) -> ModelId:
        d = _dict(data)
        return cls(d.get("name"), d.get("family"), _extra(d, ("name", "family")))


@dataclass
class MethodId:
    """Which method ran: its name and the names of its pruner, allocation and token selector."""

    name: str | None = None
    pruner: str | None = None
    allocation: str | None = None
    tokens: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("name", "pruner", "allocation", "tokens")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "pruner": self.pruner, "allocation": self.allocation,
                "tokens": self.tokens, **self.extra}

    @classmethod
    def from_json(cls, data: Any) -> MethodId:
        d = _dict(data)
        return cls(*(d.get(k) for k in cls._KEYS), extra=_extra(d, cls._KEYS))


@dataclass
class Sparsity:
    """Target and pattern asked for; achieved and planned once pruned; a saved checkpoint's manifest."""

    target: float | None = None
    pattern: str | None = "unstructured"
    achieved: float | None = None
    planned: float | None = None
    manifest: dict[str, Any] | None = None
    #: N:M runs: linears per N, whether the plan is mixed, a note when an allocation rounded to uniform
    nm: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("target", "pattern", "achieved", "planned", "manifest", "nm")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"target": self.target, "pattern": self.pattern}
        out |= {k: getattr(self, k) for k in self._KEYS[2:] if getattr(self, k) is not None}
        return out | self.extra

    @classmethod
    def from_json(cls, data: Any) -> Sparsity:
        d = _dict(data)
        pattern = d["pattern"] if "pattern" in d else "unstructured"
        manifest = d.get("manifest") if isinstance(d.get("manifest"), dict) else None
        nm = d.get("nm") if isinstance(d.get("nm"), dict) else None
        return cls(d.get("target"), pattern, d.get("achieved"), d.get("planned"), manifest, nm, _extra(d, cls._KEYS))


@dataclass
class LinearEntry:
    """One pruned linear: planned and achieved sparsity, its size, its block and projection kind."""

    planned: float | None = None
    achieved: float | None = None
    numel: int | None = None
    block: int | None = None
    kind: str | None = None
    #: N:M runs: the linear's planned N:M (N varies under a layer-wise allocation) and the one its weights meet
    pattern: str | None = None
    achieved_pattern: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("planned", "achieved", "numel", "block", "kind", "pattern", "achieved_pattern")
    _OPTIONAL = ("pattern", "achieved_pattern")  # written only when set

    @classmethod
    def of(cls, name: str, planned: float | None, achieved: float | None, numel: int,
           pattern: str | None = None, achieved_pattern: str | None = None) -> LinearEntry:
        """An entry whose block and kind come from the linear's qualified name."""
        return cls(planned, achieved, numel, block_index(name), projection_kind(name), pattern, achieved_pattern)

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self._KEYS if k not in self._OPTIONAL or getattr(self, k) is not None}
        return out | self.extra

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> LinearEntry:
        """Block and kind, when an older file lacks them, from the name as the writer derives them."""
        block = data.get("block")
        return cls(
            data.get("planned"),
            data.get("achieved"),
            data.get("numel"),
            int(block) if isinstance(block, (int, float)) else block_index(name),
            data.get("kind") or projection_kind(name),
            data.get("pattern"),
            data.get("achieved_pattern"),
            _extra(data, cls._KEYS),
        )


def linears_to_json(table: dict[str, LinearEntry]) -> dict[str, dict[str, Any]]:
    """The per-linear table as results.json and the sparsity manifest hold it."""
    return {name: entry.to_json() for name, entry in table.items()}


def linears_from_json(data: Any) -> dict[str, LinearEntry]:
    """A per-linear table read back (entries that are not objects are dropped)."""
    return {str(k): LinearEntry.from_json(str(k), v) for k, v in _dict(data).items() if isinstance(v, dict)}


@dataclass
class RunRecord:
    """One run's results.json: status, what was run, and what it measured (scores, sparsity, time)."""

    status: str = RUNNING
    error: str | None = None
    run_dir: str | None = None
    experiment: Any = None
    model: ModelId = field(default_factory=ModelId)
    method: MethodId = field(default_factory=MethodId)
    sparsity: Sparsity = field(default_factory=Sparsity)
    config: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    #: the calibration set as pruned: samples, tokens, how many were cut to which limit (tamp.data.fit)
    calibration: dict[str, Any] = field(default_factory=dict)
    #: where the run pruned and evaluated ({"prune": "cuda:0", "offload": true, "eval": "cuda:0"})
    devices: dict[str, Any] = field(default_factory=dict)
    #: work another cell of the sweep computed and this one read ({"allocation_scores": the cache entry's path})
    reused: dict[str, str] = field(default_factory=dict)
    sparsity_per_linear: dict[str, LinearEntry] = field(default_factory=dict)
    allocation_scores: dict[str, Any] = field(default_factory=dict)
    #: lmms-eval's per-task results as it returns them ({task: {"metric,filter": value}})
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: {task: the metric key (or list of keys) the tables use}
    primary_metric: dict[str, Any] = field(default_factory=dict)
    #: the table's columns ({name, task, metric[, aggregate, tasks]}, tamp.eval.columns); empty in older files
    columns: list[dict[str, Any]] = field(default_factory=list)
    #: lmms-eval's group -> sub-tasks of the scored tasks
    groups: dict[str, list[str]] = field(default_factory=dict)
    #: which variant of each component ran ({component: description}, tamp.method_variants)
    variants: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ life cycle
    def failed(self, error: BaseException | str) -> RunRecord:
        """"failed" with the error's first line; "interrupted" (resumable) for Ctrl-C, SIGTERM, a lost worker."""
        message = first_line(error)
        status = INTERRUPTED if isinstance(error, KeyboardInterrupt) else FAILED
        text = f"{type(error).__name__}: {message}" if isinstance(error, BaseException) else message
        return replace(self, status=status, error=text)

    def completed(self, **results: Any) -> RunRecord:
        """The record with the run's measurements (field names of this class) and status completed."""
        return replace(self, status=COMPLETED, **results)

    def missing(self) -> str | None:
        """The first identity field a table needs that the record lacks ('model.name', ...), else None."""
        for name, value in (("model.name", self.model.name), ("method.name", self.method.name),
                            ("sparsity.target", self.sparsity.target)):
            if value is None:
                return name
        return None

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """The results.json object (plain dicts, lists and numbers)."""
        out: dict[str, Any] = {
            "status": self.status,
            "error": self.error,
            "run_dir": self.run_dir,
            "experiment": self.experiment,
            "model": self.model.to_json(),
            "method": self.method.to_json(),
            "sparsity": self.sparsity.to_json(),
            "config": self.config,
            "versions": dict(self.versions),
            "timings": dict(self.timings),
            "sparsity_per_linear": linears_to_json(self.sparsity_per_linear),
            "allocation_scores": dict(self.allocation_scores),
            "scores": dict(self.scores),
            "primary_metric": dict(self.primary_metric),
            "columns": [dict(c) for c in self.columns],
            "groups": {k: list(v) for k, v in self.groups.items()},
            "variants": dict(self.variants),
        }
        if self.calibration:
            out["calibration"] = dict(self.calibration)
        if self.devices:  # written since runs record where they ran; an older file reads and writes back unchanged
            out["devices"] = dict(self.devices)
        if self.reused:
            out["reused"] = dict(self.reused)
        return out | self.extra

    @classmethod
    def from_json(cls, data: Any, where: str = RESULTS_FILE) -> RunRecord:
        """A record from a results.json object; missing parts read as empty, unknown keys are kept."""
        if not isinstance(data, dict):
            raise RunRecordError(f"{where}: expected a JSON object, got {type(data).__name__}")
        config = data.get("config")
        return cls(
            status=data.get("status", COMPLETED),
            error=data.get("error"),
            run_dir=data.get("run_dir"),
            experiment=data.get("experiment"),
            model=ModelId.from_json(data.get("model")),
            method=MethodId.from_json(data.get("method")),
            sparsity=Sparsity.from_json(data.get("sparsity")),
            config=config if isinstance(config, dict) else None,
            versions=_dict(data.get("versions")),
            timings=_dict(data.get("timings")),
            calibration=_dict(data.get("calibration")),
            devices=_dict(data.get("devices")),
            reused={str(k): str(v) for k, v in _dict(data.get("reused")).items()},
            sparsity_per_linear=linears_from_json(data.get("sparsity_per_linear")),
            allocation_scores=_dict(data.get("allocation_scores")),
            scores={k: v for k, v in _dict(data.get("scores")).items() if isinstance(v, dict)},
            primary_metric=_dict(data.get("primary_metric")),
            columns=[c for c in _list(data.get("columns")) if isinstance(c, dict) and "task" in c and "metric" in c],
            groups={str(k): [str(t) for t in v] for k, v in _dict(data.get("groups")).items() if isinstance(v, list)},
            variants={str(k): str(v) for k, v in _dict(data.get("variants")).items()},
            extra=_extra(data, FIELDS + OPTIONAL_FIELDS),
        )

    @classmethod
    def read(cls, path: str | Path) -> RunRecord:
        """A results.json file; its run_dir defaults to its folder. RunRecordError (one line) otherwise."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise RunRecordError(f"{path}: malformed JSON ({err})") from err
        except OSError as err:
            raise RunRecordError(f"{path}: cannot read ({err.strerror})") from err
        record = cls.from_json(data, str(path))
        record.run_dir = record.run_dir or str(path.parent)
        return record

    def write(self, path: str | Path) -> Path:
        """Write atomically: a reader never sees half a record."""
        return write_json_atomic(path, self.to_json())

