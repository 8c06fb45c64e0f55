"""Load a model, its processor and its adapter from a Hub id or a local directory, offline-first."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import transformers

from tamp.models.base import FamilyAdapter
from tamp.models.registry import adapter_class, family_for_model_type

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


class WeightsNotAvailableError(RuntimeError):
    """The model or processor files are not on disk and the network is not to be used."""


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype '{dtype}' is not valid; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def looks_like_path(name: str) -> bool:
    """A Hub id is `org/name` (one slash, no leading dot or slash); anything else with a slash is a path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def check_model_name(name: str) -> None:
    """Before anything loads: a path-like name must be an existing directory (never sent to the Hub)."""
    path = Path(name).expanduser()
    if looks_like_path(name) and not path.is_dir():
        what = "is a file, not a model directory" if path.exists() else "does not exist"
        raise FileNotFoundError(f"model.name='{name}' {what}; valid: a local model directory or a Hub id (org/name)")


def check_cached(name: str) -> None:
    """Offline, a Hub id must be in the local cache: said now, not after the calibration set is built."""
    if Path(name).expanduser().is_dir() or os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false"):
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(name, "config.json"), str):
        raise WeightsNotAvailableError(_missing_message(name, False))


def load_model(
    name_or_path: str,
    family: str | None = None,
    dtype: str | torch.dtype = "bfloat16",
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
) -> tuple[torch.nn.Module, Any, FamilyAdapter]:
    """(model, processor, adapter) for a Hub id or a directory; a one-line error when files are missing.

    With HF_HUB_OFFLINE=1 (the default on these machines) only the local cache is consulted.
    """
    check_model_name(name_or_path)
    is_dir = Path(name_or_path).is_dir()
    if not is_dir and "/" not in name_or_path:
        raise WeightsNotAvailableError(f"model '{name_or_path}' is neither a local directory nor a Hub id")
    try:
        config = transformers.AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except BrokenPipeError:  # a closed stdout/stderr, not a missing file
        raise
    except OSError as err:
        raise WeightsNotAvailableError(_missing_message(name_or_path, is_dir)) from err
    fam = family or family_for_model_type(config.model_type)
    cls = adapter_class(fam)
    model_cls = getattr(transformers, cls.model_class)
    try:
        model = model_cls.from_pretrained(
            name_or_path, dtype=resolve_dtype(dtype), device_map=device_map, trust_remote_code=trust_remote_code
        )
        processor = _load_processor(name_or_path, trust_remote_code)
    except BrokenPipeError:
        raise
    except OSError as err:
        raise WeightsNotAvailableError(_missing_message(name_or_path, is_dir)) from err
    model.eval()
    return model, processor, cls(model, processor)


def _load_processor(name_or_path: str, trust_remote_code: bool) -> Any:
    try:
        return transformers.AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError):
        return transformers.AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)


def _missing_message(name_or_path: str, is_dir: bool) -> str:
    if is_dir:
        return f"model directory '{name_or_path}' lacks config/weights/processor files (config.json, *.safetensors)"
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    how = f"run `hf download {name_or_path}` on a machine with network access, or pass a local directory"
    return f"weights for '{name_or_path}' are not in the local Hugging Face cache{' (offline)' if offline else ''}; {how}"
