"""Document functions of the zoo tasks (lmms-eval loads this file by path, as `utils`).

The zoo's test split is not shipped with the package: it is built into the cache with its model
(`outputs/cache/zoo/<recipe-hash>/data`). So every task's YAML points `data_files` at a one-line
stub in this folder and `process_docs` swaps in the real documents, read from the zoo data folder
named by $TAMP_ZOO_DIR (tamp's runner sets it to the build it loaded), else from the default
recipe's build under ./outputs/cache, else under the checkout's outputs/cache (so lmms-eval's own
CLI finds it from any folder). Build it with `python -m tamp.zoo build`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from tamp.eval.tasks import prompted

#: the folder holding the tamp package (the repository in a checkout)
CHECKOUT = Path(__file__).resolve().parents[4]


def zoo_docs(task: str) -> Any:
    """The test documents of one zoo task: question, answer, choices, answer index, image path."""
    import datasets

    from tamp.zoo.cache import ZOO_DIR_ENV

    root = zoo_data_root()
    path = root / f"test_{task}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"zoo test split {path} is missing; build it with `python -m tamp.zoo build` "
            f"(or set ${ZOO_DIR_ENV} to a built zoo data folder)"
        )
    docs = []
    for rec in json.loads(path.read_text()):
        question = rec["conversations"][0]["value"].replace("<image>", "").strip()
        docs.append({
            "id": rec["id"],
            "task": rec["task"],
            "question": question,
            "answer": rec["answer"],
            "choices": list(rec["choices"]),
            "answer_index": rec["choices"].index(rec["answer"]),
            "image": str(root / rec["image"]) if rec.get("image") else "",
        })
    return datasets.Dataset.from_list(docs)


def zoo_data_root() -> Path:
    """$TAMP_ZOO_DIR; else the default build under ./outputs/cache when there, else the checkout's."""
    from tamp.zoo.cache import ZOO_DIR_ENV, data_dir, resolve_data_dir

    if os.environ.get(ZOO_DIR_ENV):
        return resolve_data_dir()
    here = data_dir(None, None)
    if here.is_dir():
        return here
    checkout = data_dir(None, CHECKOUT / "outputs" / "cache")
    return checkout if checkout.is_dir() else here


def doc_to_visual(doc: dict[str, Any]) -> list[Image.Image]:
    if not doc["image"]:
        return []
    with Image.open(Path(doc["image"])) as img:
        return [img.convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, str] | None = None) -> str:
    return prompted(doc["question"], lmms_eval_specific_kwargs)


def doc_to_choice(doc: dict[str, Any]) -> list[str]:
    return list(doc["choices"])


def _loader(task: str) -> Callable[[Any], Any]:
    """process_docs of one task: lmms-eval passes it only the (stub) dataset, so the task is bound here."""

    def docs(_: Any) -> Any:
        return zoo_docs(task)

    docs.__name__ = f"{task}_docs"
    return docs


# one loader per task, by the names the task YAMLs use (`process_docs: !function utils.<task>_docs`)
color_docs = _loader("color")
shape_docs = _loader("shape")
count_docs = _loader("count")
position_docs = _loader("position")
compose_docs = _loader("compose")
chart_docs = _loader("chart")
arith_docs = _loader("arith")
facts_docs = _loader("facts")
