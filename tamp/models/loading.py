"""Load a model, its processor and its adapter from a Hub id or a local directory, offline-first."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
import transformers

from tamp.core.io import check_safetensors, first_line
from tamp.models.base import FamilyAdapter
from tamp.models.registry import adapter_class, family_for_model_type

#: what from_pretrained reads weights from (safetensors, PyTorch, TF, Flax checkpoints)
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.h5", "*.msgpack")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


class WeightsNotAvailableError(FileNotFoundError):
    """The model or processor files are not on disk and the network is not to be used (one line, exit 2)."""


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


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no", "off")


def check_cached(name: str) -> None:
    """Offline, a Hub id must be in the local cache: said now, not after the calibration set is built."""
    if Path(name).expanduser().is_dir() or not _offline():
        return
    if cached_folder(name) is None:
        raise WeightsNotAvailableError(_missing_message(name, False))


def cached_folder(name: str) -> Path | None:
    """The local snapshot folder of a Hub id whose config.json is in the HF cache, else None."""
    if "/" not in name or looks_like_path(name):
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def model_folder(name: str) -> Path | None:
    """Where `model.name`'s files are on this machine: the directory itself or its cached snapshot."""
    path = Path(name).expanduser()
    return path if name and path.is_dir() else cached_folder(name)


def read_model_config(folder: Path) -> dict[str, Any]:
    """config.json of a model folder as a dict; one line naming the file when it is missing or not JSON."""
    config = folder / "config.json"
    if not config.is_file():
        raise WeightsNotAvailableError(
            f"model folder {folder} has no config.json; valid: a folder saved with save_pretrained "
            "(config.json, *.safetensors and the processor files)"
        )
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"model config {config} is not valid JSON ({err}); restore it from the original model") from None
    if not isinstance(data, dict):
        raise ValueError(f"model config {config} is not a JSON object; restore it from the original model")
    return data


def check_model_files(folder: Path) -> None:
    """config.json parses, every shard the index names exists and every .safetensors file is whole.

    Headers only (milliseconds for an 8B model): a truncated or corrupt weight file is named here
    instead of failing inside from_pretrained with `incomplete metadata` and no path.
    """
    read_model_config(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"weight index {index} is not valid ({first_line(str(err))}); "
                             "restore it from the original model") from None
        for shard in shards:
            if not (folder / shard).is_file():
                raise WeightsNotAvailableError(f"weight file {folder / shard} named by {index.name} is missing; "
                                               "copy the whole model folder again")
    for weights in sorted(folder.glob("*.safetensors")):
        check_safetensors(weights, "weight file")
    if not any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise WeightsNotAvailableError(f"model folder {folder} holds no weight files ({', '.join(WEIGHT_PATTERNS)}); "
                                       "copy the whole model folder")


def check_family(name: str, family: str) -> None:
    """`model.family` against the model_type of the folder's config.json (when the folder is here).

    A family is refused only when the config's model_type belongs to another family: a model_type
    no family knows (a custom architecture) is what the family override is for.
    """
    folder = model_folder(name)
    if folder is None:
        return
    model_type = read_model_config(folder).get("model_type")
    cls = adapter_class(family)
    if not isinstance(model_type, str) or model_type in cls.model_types:
        return
    try:
        own = family_for_model_type(model_type)
    except ValueError:
        return
    raise ValueError(
        f"model.family={family} does not match {name}: its config.json has model_type '{model_type}' "
        f"(family {own}); valid: model.family={own} or null (read from the config)"
    )


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
    folder = model_folder(name_or_path)
    if folder is not None:
        check_model_files(folder)
        if family is not None:
            check_family(name_or_path, family)
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
    except pickle.UnpicklingError as err:  # torch.load(weights_only=True) refused a pickled object
        raise ValueError(_pickle_message(name_or_path, folder)) from err
    model.eval()
    return model, processor, cls(model, processor)


def _load_processor(name_or_path: str, trust_remote_code: bool) -> Any:
    try:
        return transformers.AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError):
        return transformers.AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)


def _pickle_message(name_or_path: str, folder: Path | None) -> str:
    """tamp's own line for a PyTorch weight file holding more than tensors (never "use weights_only=False")."""
    pickled = sorted(p.name for pattern in ("*.bin", "*.pt", "*.pth") for p in (folder or Path()).glob(pattern))
    files = f" ({', '.join(pickled[:3])}{', ...' if len(pickled) > 3 else ''})" if folder and pickled else ""
    return (f"model '{name_or_path}': a PyTorch weight file{files} holds pickled Python objects besides tensors, "
            "which tamp does not load (unpickling them can run code); valid: a model saved as .safetensors "
            "(save_pretrained's default), or convert this one where you trust its source")


def _missing_message(name_or_path: str, is_dir: bool) -> str:
    if is_dir:
        return f"model directory '{name_or_path}' lacks config/weights/processor files (config.json, *.safetensors)"
    offline = _offline()
    how = f"run `hf download {name_or_path}` on a machine with network access, or pass a local directory"
    return f"weights for '{name_or_path}' are not in the local Hugging Face cache{' (offline)' if offline else ''}; {how}"
