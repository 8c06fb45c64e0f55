"""The structured schema of a run's Hydra config: unknown keys fail at composition, bad values at start.

`conf/run.yaml` lists `run_schema` first in its defaults, so every group file and every command-line
override is merged onto these dataclasses: a key that does not exist stops composition with
Hydra's message naming it, and `validate(cfg)` (OmegaConf.to_object, which runs the
`__post_init__` checks) turns an out-of-range value into a one-line error before any model work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import MISSING, DictConfig, OmegaConf

from tamp.core.config import MethodConfig, PruneConfig, SparsityConfig
from tamp.data.calib_config import DRAWS
from tamp.data.calib_config import CalibConfig as DataCalibConfig
from tamp.eval.columns import ColumnSpec

if TYPE_CHECKING:  # loading a model is the runner's business: composing and checking stay without torch
    from tamp.models.named import ModelSettings

WANDB_MODES = ("offline", "online", "disabled")
#: the per-block checkpoints of a run, inside its run folder
CHECKPOINT_DIR = "checkpoint"


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass
class ModelConfig:
    name: str = MISSING  # a Hub id, a local directory, tiny:<family>, or zoo[:<recipe>] (tamp/zoo)
    family: str | None = None  # None: from the checkpoint's model_type
    dtype: str = "bfloat16"
    trust_remote_code: bool = False
    #: Qwen2.5-Omni: a video's sound track goes in with it, interleaved in 2 s chunks (the model's
    #: audio-visual mode), in calibration (records whose audio is their video) and evaluation
    use_audio_in_video: bool = False

    def __post_init__(self) -> None:
        valid = ("float32", "bfloat16", "float16", "auto")
        _check(self.dtype in valid, f"model.dtype='{self.dtype}' is not valid; use one of {', '.join(valid)}")


@dataclass
class CalibConfig(DataCalibConfig):
    """tamp.data.calib_config's CalibConfig, plus the `tiny` source (a tiny model's own example conversations)."""

    source: str = "tiny"

    def __post_init__(self) -> None:
        # one line naming the registered sources; the default (the tiny models' own examples, registered in
        # tamp.models.tiny beside transformers) is valid by construction: the schema and `--help` never load it
        if self.source != CalibConfig.source:
            from tamp.data.sources import CALIB_SOURCES  # the registry, with its fitting code: checking only

            CALIB_SOURCES.get(self.source)
        _check(
            self.num_samples is None or self.num_samples >= 1, f"calib.num_samples={self.num_samples} must be >= 1"
        )
        _check(self.num_frames >= 1, f"calib.num_frames={self.num_frames} must be >= 1")
        _check(self.draw in DRAWS, f"calib.draw='{self.draw}' is unknown; valid: {', '.join(DRAWS)}")
        _check(self.fps is None or self.fps > 0, f"calib.fps={self.fps} must be > 0 or null")


SPARSE_KERNELS = ("none", "semi_structured")


@dataclass
class RunnerConfig:
    accelerator: str = "auto"  # Lightning Fabric: auto | cpu | cuda | gpu
    devices: Any = 1  # number of processes (data-parallel calibration) or a device list
    strategy: str = "auto"
    precision: str = "32-true"
    device: str = "auto"  # where the pruning math runs in each process: auto | cpu | cuda
    eval_device: str = "auto"  # where lmms-eval runs the (whole) model: auto (the Fabric device) | cpu | cuda[:N]
    offload: bool = False
    progress: bool = True
    targets: list[str] = field(default_factory=lambda: [".*"])
    ignore: list[str] = field(default_factory=list)
    save_model: bool = False
    save_dir: str | None = None  # where the saved model goes (implies save_model); null: RUN_DIR/model
    save_masks: bool = False  # also the masks, bit-packed, beside the saved model (implies save_model)
    #: in a sweep, the block-0 inputs stored once per key for the other cells: auto (when pruning on CPU) | true | false
    share_block_inputs: Any = "auto"
    #: evaluate a 2:4 model on the GPU's sparse kernels: none | semi_structured (tamp.models.semi_structured)
    sparse_kernels: str = "none"

    def __post_init__(self) -> None:
        _check(
            isinstance(self.devices, (int, list, str)),
            f"runner.devices={self.devices!r} must be an int, a list or 'auto'",
        )
        _check(
            self.share_block_inputs == "auto" or isinstance(self.share_block_inputs, bool),
            f"runner.share_block_inputs={self.share_block_inputs!r} is unknown; valid: auto, true, false",
        )
        if isinstance(self.devices, int):
            _check(self.devices >= 1, f"runner.devices={self.devices} must be >= 1")
        _check(self.sparse_kernels in SPARSE_KERNELS,
               f"runner.sparse_kernels='{self.sparse_kernels}' is unknown; valid: {', '.join(SPARSE_KERNELS)}")


@dataclass
class VideoEvalConfig:
    """Frames decoded per video of an eval document (tamp.eval.doc_media.VideoSampling)."""

    num_frames: int = 8  # at most this many, spread evenly over the whole video
    fps: float | None = None  # at most this many per second of video (short clips get fewer); null: no cap

    def __post_init__(self) -> None:
        _check(self.num_frames >= 1, f"eval.video.num_frames={self.num_frames} must be >= 1")
        _check(self.fps is None or self.fps > 0, f"eval.video.fps={self.fps} must be > 0 or null")


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=list)  # lmms-eval task names; empty: no evaluation
    include_paths: list[str] = field(default_factory=list)  # extra task folders
    limit: int | None = None
    batch_size: int = 32  # prompts per generate() call (tamp.eval.batching); 1: one at a time
    #: null: each task's own generation kwargs (lmms-eval's YAML); a number overrides every task's
    max_new_tokens: int | None = None
    video: VideoEvalConfig = field(default_factory=VideoEvalConfig)
    #: environment the tasks' own code reads (an lmms-eval utils.py gets no config), set before scoring
    env: dict[str, str] = field(default_factory=dict)
    #: a paper suite's columns (name, task or group, metric, aggregate; tamp.eval.columns); empty: one per task
    columns: list[ColumnSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(self.limit is None or self.limit >= 1, f"eval.limit={self.limit} must be >= 1 or null")
        for i, spec in enumerate(self.columns):
            spec.check(f"eval.columns[{i}]")
        names = [spec.name for spec in self.columns]
        twice = sorted({n for n in names if names.count(n) > 1})
        _check(not twice, f"eval.columns: column name {twice[0]!r} is declared twice; valid: one column per name" if twice else "")


@dataclass
class WandbConfig:
    enabled: bool = True
    mode: str = "offline"
    project: str = "tamp"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(self.mode in WANDB_MODES, f"logger.wandb.mode='{self.mode}'; valid: {', '.join(WANDB_MODES)}")


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class PathsConfig:
    root_dir: str = "."
    output_dir: str = "outputs"
    cache_dir: str = "outputs/cache"
    data_dir: str = "data"


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    calib: CalibConfig = field(default_factory=CalibConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    experiment: str | None = None
    resume: str | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        from tamp.methods.components import resolve_method  # checking a config, not composing or printing one

        self.method = resolve_method(self.method)  # once per run: each component's own settings type and checks
        self.sparsity.check(self.method.pruner)  # range and pattern against the pruner

    def model_settings(self) -> ModelSettings:
        """What loading `model.name` needs from this run (tamp.models.named)."""
        from tamp.models.named import ModelSettings

        m = self.model
        return ModelSettings(m.name, m.family, m.dtype, m.trust_remote_code, self.seed,
                             self.paths.cache_dir, self.runner.progress)

    def calib_settings(self) -> CalibConfig:
        """`calib.*`, with progress bars only where the runner shows them."""
        return dataclasses.replace(self.calib, progress=self.calib.progress and self.runner.progress)

    def prune_config(self, device: str | None = None, run_dir: str | Path | None = None) -> PruneConfig:
        """The whole pruning job of this run, complete: `tamp.prune` gets it as it is.

        `device` is where `runner.device=auto` prunes (the runner passes its Fabric device; None: tamp.prune
        picks); `run_dir` holds the per-block checkpoints (RUN_DIR/checkpoint; None: no checkpoints). The
        method is the one resolved when this config was built, not resolved again.
        """
        r = self.runner
        return PruneConfig(
            method=self.method,
            sparsity=self.sparsity,
            targets=list(r.targets),
            ignore=list(r.ignore),
            device=device if r.device == "auto" and device is not None else r.device,
            offload=r.offload,
            keep_masks=r.save_masks,
            progress=r.progress,
            seed=self.seed,
            checkpoint_dir=str(Path(run_dir) / CHECKPOINT_DIR) if run_dir is not None else None,
        )


def register_schema() -> None:
    """The run schema, and every registered component's settings as a Hydra group option
    (tamp.methods.presets.register_components: what the method presets' defaults lists pick)."""
    from tamp.methods.presets import register_components, store_settings

    store_settings("run_schema", RunConfig)  # converted when Hydra first composes (a completion of `method=` never)
    register_components()
    if not OmegaConf.has_resolver("zoo_data"):
        OmegaConf.register_new_resolver("zoo_data", _zoo_data)
    if not OmegaConf.has_resolver("zoo_tasks"):
        OmegaConf.register_new_resolver("zoo_tasks", _zoo_tasks)
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", _run_name)


def _run_name(*, _root_: DictConfig) -> str:
    """`${run_name:}`: the cell's folder name from its config (tamp.tracking.run_names): `das+tokens=random_0.6_seed1`."""
    from tamp.tracking.run_names import name_of_config

    return name_of_config(_root_).folder()


def _zoo_data(model_name: str, cache_dir: str) -> str:
    """`${zoo_data:MODEL,CACHE}`: the data folder of the zoo model's build (a path; builds nothing)."""
    from tamp.zoo.cache import data_dir

    return str(data_dir(model_name if model_name.startswith("zoo") else None, cache_dir))


def _zoo_tasks(model_name: str, kind: str = "") -> list[str]:
    """`${zoo_tasks:MODEL[,mc]}`: the lmms-eval tag of the zoo model's world (its test tasks; `mc`: multiple choice)."""
    from tamp.zoo.cache import recipe_of
    from tamp.zoo.worlds import get_world

    world = get_world(recipe_of(model_name if model_name.startswith("zoo") else None).data.world)
    return [f"{world.eval_tag}_{kind}" if kind else world.eval_tag]


def typed(cfg: DictConfig | dict[str, Any]) -> DictConfig:
    """A run config that lost its types, merged onto the schema with each component's own settings type.

    A plain dict, or a config a launcher rebuilt (Lightning's ddp_spawn hands its workers DictConfigs
    rebuilt as plain mappings), no longer knows that `method.tokens` is, say, the random selector's
    settings: merged onto the bare schema, `num_random` would be an unknown key. The method node is
    typed from the names it holds (pruner, allocation, tokens) before the rest is merged.
    """
    from tamp.methods.components import resolve_method

    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    schema = OmegaConf.structured(RunConfig)
    if isinstance(node.get("method"), DictConfig):
        method = OmegaConf.to_container(node.method, resolve=True)
        schema.method = OmegaConf.structured(resolve_method(method))
    return OmegaConf.merge(schema, node)


def validate(cfg: DictConfig | dict[str, Any]) -> RunConfig:
    """The typed run config; a value out of range raises ValueError with one line naming the key."""
    if not isinstance(cfg, DictConfig) or OmegaConf.get_type(cfg) is not RunConfig:
        cfg = typed(cfg)  # e.g. a plain dict, or a config rebuilt in a spawned worker
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, RunConfig)
    return obj
