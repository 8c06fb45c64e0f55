"""The typed configuration of one pruning job: the frame every component's own settings plug into.

A method is a composition: pruner x allocation x tokens. This module holds only what every method
shares (names, the sparsity target and pattern, the job's switches); each pruner, allocation and token
selector declares its own settings as a subclass of `MethodConfig`, `AllocationConfig` or
`TokensConfig` beside its code, with its defaults and range checks, and registers it with the
component (tamp.core.registries). `tamp.methods.components` resolves a dict or a Hydra node into those types. It
also holds the one rule of which settings change no result (the mask fingerprint, a run folder's
identity and the report's rows read it) and the dotted-key view of a config those use. This module
imports nothing from tamp, so every layer can build on it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

#: where and how a job runs: the masks are the same whatever these say (PruneConfig's fields; `runner.*` in a run)
EXECUTION = ("device", "offload", "progress")
#: PruneConfig's settings that change no mask: the checkpoint fingerprint (tamp.api.functions) leaves them out
PRUNE_VOLATILE = (*EXECUTION, "keep_masks", "checkpoint_dir")
#: a run config's dotted settings that change neither masks nor scores: a run folder's identity leaves them
#: out (tamp.cli.rundir: a run resumes, or reruns in its folder, with them changed)
RUN_VOLATILE = ("resume", "logger", "paths",
                *(f"runner.{name}" for name in (*EXECUTION, "accelerator", "devices", "strategy", "save_model")))
#: besides RUN_VOLATILE, what the report does not tell rows apart by (tamp.reporting.keys): the seed (runs
#: that differ only in seeds are repeats), names and bookkeeping
REPORT_NOT_DEFINING = ("seed", "experiment", "hydra", "model.family", "model.trust_remote_code", "calib.name",
                       "calib.progress")
PATTERNS_HELP = "'unstructured' or 'N:M' with N < M (e.g. 2:4, 4:8)"
_NM_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """``"unstructured"`` -> None, ``"2:4"`` -> (2, 4); anything else is a ValueError."""
    if not isinstance(pattern, str):
        raise ValueError(
            f"sparsity pattern must be a string, got {pattern!r}; valid: 'unstructured' or 'N:M'"
        )
    if pattern.strip().lower() == "unstructured":
        return None
    match = _NM_RE.match(pattern)
    if match is None:
        raise ValueError(
            f"bad sparsity pattern {pattern!r}; valid: 'unstructured' or 'N:M' with integers "
            "0 < N < M (e.g. '2:4')"
        )
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise ValueError(f"bad sparsity pattern {pattern!r}: N:M needs 0 < N < M (e.g. '2:4', '4:8')")
    return n, m


@dataclass
class AllocationConfig:
    """How the target sparsity is spread over the linears; subclasses add an allocation's own knobs."""

    name: str = "uniform"

    def check(self) -> None:
        """Raise ValueError, one line naming the key, for a value out of range (subclasses extend)."""

    def variant_notes(self) -> dict[str, str]:
        """{component: which variant of it these settings run}, where it has more than one (report footnotes)."""
        return {}


@dataclass
class TokensConfig:
    """Which input tokens of a sample feed a linear's statistics; subclasses add a selector's knobs."""

    name: str = "all"

    def check(self) -> None:
        """Raise ValueError, one line naming the key, for a value out of range (subclasses extend)."""

    def variant_notes(self) -> dict[str, str]:
        """{component: which variant of it these settings run}, where it has more than one (report footnotes)."""
        return {}


@dataclass
class MethodConfig:
    """A pruning method: pruner x allocation x tokens. A pruner with settings subclasses this."""

    name: str = ""  # display name of the preset; defaults to the pruner's name
    pruner: str = "wanda"
    allocation: AllocationConfig = field(default_factory=AllocationConfig)
    tokens: TokensConfig = field(default_factory=TokensConfig)

    def check(self) -> None:
        """The pruner's own range checks (subclasses extend)."""

    def variant_notes(self) -> dict[str, str]:
        """{component: which variant of it these settings run}, where it has more than one (report footnotes)."""
        return {}

    def variants(self) -> dict[str, str]:
        """Which variant of each of the method's components runs: pruner, allocation (and allocator), tokens."""
        return {**self.variant_notes(), **self.allocation.variant_notes(), **self.tokens.variant_notes()}


@dataclass
class SparsityConfig:
    target: float = 0.5
    pattern: str = "unstructured"

    def check(self, pruner: str) -> None:
        """Target in range, pattern parsable, and an N:M pattern's fixed ratio equal to the target."""
        target = self.target
        if not 0.0 <= target < 1.0:
            raise ValueError(f"sparsity.target={target} is out of range; valid: 0 <= target < 1")
        try:
            nm = parse_pattern(self.pattern)
        except ValueError as err:
            raise ValueError(f"sparsity.pattern: {err}") from None
        if nm is not None and pruner != "none" and abs(target - nm[0] / nm[1]) > 1e-9:
            exact = f"{nm[0] / nm[1]:g}"
            raise ValueError(
                f"sparsity.target={target} contradicts sparsity.pattern={self.pattern}, which prunes "
                f"exactly {nm[0]}/{nm[1]} = {exact}; set sparsity.target={exact} or sparsity.pattern=unstructured"
            )


@dataclass
class PruneConfig:
    """Everything `tamp.prune` needs besides the model and the samples (see tamp.methods.components.as_prune_config)."""

    method: MethodConfig = field(default_factory=MethodConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    targets: list[str] = field(default_factory=lambda: [".*"])
    ignore: list[str] = field(default_factory=list)
    device: str = "auto"
    offload: bool = False
    keep_masks: bool = False
    progress: bool = True
    seed: int = 42
    #: per-block checkpoints for resuming an interrupted run (None: no checkpoints)
    checkpoint_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def from_dict(cls: type, data: dict[str, Any] | None, path: str = "") -> Any:
    """Build a (nested) config dataclass from a plain dict, rejecting unknown keys by full name."""
    data = dict(data or {})
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = f"{path}." if path else ""
        raise ValueError(f"unknown config key '{where}{unknown[0]}'; valid: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in data.items():
        default = cls.__dataclass_fields__[name].default_factory  # type: ignore[attr-defined]
        sub = default() if callable(default) else None
        if is_dataclass(sub) and isinstance(value, dict):
            kwargs[name] = from_dict(type(sub), value, f"{path}.{name}" if path else name)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def flatten(tree: Any, prefix: str = "", keep_empty: bool = False) -> dict[str, Any]:
    """Nested mappings -> {dotted.key: leaf}; lists stay leaves (their order is part of the setting).

    An empty mapping below the top has no leaf: it is dropped, or kept as a `{}` leaf with `keep_empty`
    (the report: a component's empty settings node is still a recorded item).
    """
    if not isinstance(tree, Mapping) or (keep_empty and prefix and not tree):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out |= flatten(value, f"{prefix}{key}.", keep_empty)
    return out


def is_under(key: str, prefixes: Iterable[str]) -> bool:
    """Whether the dotted `key` is one of `prefixes` or a setting inside one (`logger.wandb.mode` is under `logger`)."""
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def config_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened config less the volatile settings (RUN_VOLATILE: what may differ between a run and its
    resumption): what defines the experiment. A run folder, a resumption and a save are tied to it."""
    return {k: v for k, v in flatten(config).items() if not is_under(k, RUN_VOLATILE)}


def config_digest(config: dict[str, Any]) -> str:
    """A digest of the experiment a config defines (`config_identity`): what a saved model is tied to."""
    text = json.dumps(config_identity(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
