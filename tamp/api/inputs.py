"""What `tamp.prune` takes as its model and its calibration set, turned into a module and CalibSamples.

The model: a torch module, or a name the run config's `model.name` would take (a Hub id, a local
folder saved with save_pretrained, `tiny:<family>`, `zoo`), loaded through tamp's own loader with
its one-line checks. The calibration set: CalibSamples (`tamp.build_samples`), a list of
conversations (LLaVA records as the JSON calibration files hold them, or chat entries), or a
`datasets.Dataset` of LLaVA rows (as llm-compressor's `oneshot` takes a dataset). Everything is
checked before the model loads, so a wrong kind of input costs no loading time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from torch import nn

from tamp.data.sample import CalibSample
from tamp.models.base import FamilyAdapter
from tamp.models.named import ModelSettings

CALIBRATION_KINDS = ("a list of CalibSample (tamp.build_samples)",
                     "a list of conversations (LLaVA records {'conversations': [...], 'image': ...} "
                     "or chat entries {'messages': [...]})",
                     "a datasets.Dataset of LLaVA rows")
MODEL_KINDS = "a torch module, a Hub id (org/name), a local model folder, tiny:<family> or zoo"
#: ModelSettings fields a caller may set when tamp loads the model (the name is the model argument)
LOAD_KEYS = tuple(f.name for f in fields(ModelSettings) if f.name != "name")


def _valid_calibration() -> str:
    return "valid: " + "; ".join(CALIBRATION_KINDS)


def _is_dataset(value: Any) -> bool:
    return hasattr(value, "column_names") and hasattr(value, "select") and hasattr(value, "with_format")


@dataclass
class Calibration:
    """The calibration input, classified: ready samples, or conversations still to encode."""

    samples: list[CalibSample] | None = None
    conversations: Any = None

    def resolve(self, encoder: Callable[[], FamilyAdapter], progress: bool) -> list[CalibSample]:
        """The samples, encoding the conversations with the adapter `encoder()` returns (all, in order)."""
        if self.samples is not None:
            return self.samples
        from tamp.data.records import build_samples

        return build_samples(encoder(), self.conversations, progress=progress)


def classify_calibration(samples: Any) -> Calibration:
    """Which kind of calibration input `samples` is; one line naming the valid kinds when it is none."""
    if _is_dataset(samples):
        if len(samples) == 0:
            raise ValueError(f"the calibration dataset is empty; {_valid_calibration()}")
        return Calibration(conversations=samples)
    if isinstance(samples, CalibSample):
        raise TypeError(f"calibration is one CalibSample; {_valid_calibration()} (wrap it in a list)")
    if samples is None or isinstance(samples, (str, bytes, os.PathLike, Mapping)) or not isinstance(samples, Iterable):
        shown = "a path" if isinstance(samples, (str, os.PathLike)) else f"a {type(samples).__name__}"
        hint = " (load a JSON calibration file with json.load first)" if shown == "a path" else ""
        raise TypeError(f"calibration is {shown}{hint}; {_valid_calibration()}")
    items = list(samples)
    if not items:
        raise ValueError(f"no calibration samples given; {_valid_calibration()}")
    ready = [isinstance(item, CalibSample) for item in items]
    if all(ready):
        return Calibration(samples=items)
    talk = [isinstance(item, Mapping) for item in items]
    if all(talk):
        return Calibration(conversations=items)
    if all(r or t for r, t in zip(ready, talk, strict=True)):
        raise TypeError("calibration mixes CalibSample and conversations; valid: one kind per call "
                        "(tamp.build_samples turns conversations into CalibSample)")
    index = next(i for i, (r, t) in enumerate(zip(ready, talk, strict=True)) if not (r or t))
    raise TypeError(f"calibration item #{index} is a {type(items[index]).__name__}; {_valid_calibration()}")


@dataclass
class ResolvedModel:
    """The module to prune, its processor, and whether tamp loaded it (then the summary hands it back)."""

    model: nn.Module
    processor: Any
    adapter: FamilyAdapter | None
    loaded: bool


def resolve_model(
    model: Any, adapter: FamilyAdapter | None, processor: Any, load: Mapping[str, Any] | None, progress: bool
) -> ResolvedModel:
    """A module as given, or the model a name names loaded by tamp.models.named (one-line errors)."""
    if isinstance(model, nn.Module):
        if load:
            raise ValueError(f"model_settings ({', '.join(sorted(load))}) apply to a model tamp loads; "
                             f"valid: a model id or folder as the model, or no model_settings with a module")
        return ResolvedModel(model, processor if processor is not None else getattr(adapter, "processor", None),
                             adapter, loaded=False)
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model is a {type(model).__name__}; valid: {MODEL_KINDS}")
    if adapter is not None or processor is not None:
        raise ValueError("adapter=/processor= belong to a module passed in; with a model id or folder tamp loads "
                         "the model, its processor and its adapter: valid: leave them out")
    unknown = sorted(set(load or {}) - set(LOAD_KEYS))
    if unknown:
        raise ValueError(f"model_settings has unknown key '{unknown[0]}'; valid: {', '.join(LOAD_KEYS)}")
    from tamp.models.named import check_named_model, load_named_model

    name = str(model)
    check_named_model(name)
    settings = ModelSettings(name=name, **{"progress": progress, **dict(load or {})})
    loaded = load_named_model(settings)
    return ResolvedModel(loaded.model, loaded.processor, loaded.adapter, loaded=True)


def processor_for(model: nn.Module) -> Any:
    """The processor saved beside a module's weights (its config's name_or_path, a folder or a cached id).

    What lets `tamp.prune(module, conversations, ...)` encode without processor=; None when the
    module does not say where it came from or its files are not on this machine.
    """
    from tamp.models.loading import model_folder

    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    folder = model_folder(name) if isinstance(name, str) and name else None
    if folder is None:
        return None
    from tamp.models.loading import _load_processor

    try:
        return _load_processor(str(folder), False)
    except (OSError, ValueError, TypeError):  # no tokenizer or processor files there
        return None
