"""Typed configuration of one pruning job, shared by the Python API and the Hydra configs.

A method is a composition: pruner x allocation x tokens. Every knob of every axis lives here with
its default, so an unknown key is an error and a value out of range is caught by `validate()`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

PRUNERS = ("magnitude", "wanda", "sparsegpt", "none")  # none: the dense reference
PATTERNS_HELP = "'unstructured' or 'N:M' with N < M (e.g. 2:4, 4:8)"


@dataclass
class AllocationConfig:
    """How the target sparsity is spread over the linears (uniform, das, owl, ecoflap, ...)."""

    name: str = "uniform"
    variant: str = "paper"  # das: paper | reference
    max_sparsity_delta: float = 0.1  # the allocator's cap is target + delta
    aggregation: str = "sum"  # sum | avg
    official_overshoot: bool = False  # reproduce the official allocator's over-shoot branch
    owl_m: float = 5.0
    owl_lambda: float = 0.08
    owl_compat: str = "owl"  # owl | tamp_repository
    eps: float = 1e-3  # ecoflap perturbation size
    num_samples: int | None = None  # ecoflap: calibration samples used for the estimate (None: all)
    granularity: str = "layer"  # ecoflap: layer | block


@dataclass
class TokensConfig:
    """Which input tokens of a sample feed a linear's statistics (all, amia, attention, ...)."""

    name: str = "all"
    variant: str = "paper"  # amia: paper | reference
    knn: int = 3
    graph_gamma: float = 1.0
    penalty_gamma: float = 0.2
    mmd_scale: float = 0.1
    num_random: int = 100
    modalities: list[str] = field(default_factory=lambda: ["text", "image", "video", "audio"])
    # modality ablation (Table 1): blocks < multimodal_blocks use `modalities`, the rest text only
    multimodal_blocks: int | None = None
    seed: int = 0


@dataclass
class MethodConfig:
    """A pruning method as a composition of its three axes plus the pruner's own knobs."""

    name: str = ""  # display name of the preset; defaults to the pruner's name
    pruner: str = "wanda"
    allocation: AllocationConfig = field(default_factory=AllocationConfig)
    tokens: TokensConfig = field(default_factory=TokensConfig)
    blocksize: int = 128  # sparsegpt
    percdamp: float = 0.01  # sparsegpt
    compat_magnitude: bool = False  # official code's signed-weight magnitude that prunes 1 - p


@dataclass
class SparsityConfig:
    target: float = 0.5
    pattern: str = "unstructured"


@dataclass
class PruneConfig:
    """Everything `tamp.prune` needs besides the model and the samples."""

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

    def validate(self) -> PruneConfig:
        from tamp.pruning.masks import parse_pattern

        target = self.sparsity.target
        if not 0.0 <= target < 1.0:
            raise ValueError(f"sparsity.target={target} is out of range; valid: 0 <= target < 1")
        try:
            nm = parse_pattern(self.sparsity.pattern)
        except ValueError as err:
            raise ValueError(f"sparsity.pattern: {err}") from None
        if nm is not None and self.method.pruner != "none" and abs(target - nm[0] / nm[1]) > 1e-9:
            exact = f"{nm[0] / nm[1]:g}"
            raise ValueError(
                f"sparsity.target={target} contradicts sparsity.pattern={self.sparsity.pattern}, which prunes "
                f"exactly {nm[0]}/{nm[1]} = {exact}; set sparsity.target={exact} or sparsity.pattern=unstructured"
            )
        if self.method.pruner not in PRUNERS:
            raise ValueError(f"method.pruner='{self.method.pruner}' is unknown; valid: {', '.join(PRUNERS)}")
        if not self.method.name:
            self.method.name = self.method.pruner
        return self

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


def as_prune_config(config: PruneConfig | dict[str, Any] | None) -> PruneConfig:
    if config is None:
        return PruneConfig().validate()
    if isinstance(config, PruneConfig):
        return config.validate()
    if hasattr(config, "items") and not isinstance(config, dict):  # an OmegaConf DictConfig
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(config, resolve=True)  # type: ignore[assignment]
    return from_dict(PruneConfig, config).validate()
