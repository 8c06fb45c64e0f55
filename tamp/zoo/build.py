"""Write the toy zoo's data to disk in the LLaVA conversation format, skipping work when it is built.

Layout of OUT_DIR (the zoo owns these names; nothing else there is touched):
  train.json, calib.json, test.json  LLaVA records, a JSON list with one record per line
  test_<task>.json                   the test split of one task (what an lmms-eval task points at)
  images/<id>.png                    the images of every split (PNG, compression level 1)
  vocab.json, tasks.json             words for a word-level tokenizer; the task table
  manifest.json                      recipe version, world, code hash, sizes, seed, file hashes, content hash
                                     and the data's fingerprint (what the recipe hash covers, see `fingerprint`)
Train images are PNG files like the others (about 0.1 ms each to write, so 50k take seconds), so the
one LLaVA loader reads every split; a trainer that wants an array decodes them once.

    python -m tamp.zoo.build OUT_DIR [--world v1|panels] [--train N] [--calib N] [--test N] [--seed S] [--workers W]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from tamp.core.io import write_text_atomic
from tamp.zoo.worlds import WORLDS, World, get_world

RECIPE_VERSION = "zoo-3"  # bump whenever generation changes what an item is
DEFAULT_WORLD = "v1"  # the default zoo model's world (tamp.zoo.worlds)
SPLITS: tuple[str, ...] = ("train", "calib", "test")
DEFAULT_SIZES: dict[str, int] = {"train": 40_000, "calib": 256, "test": 1_600}
MANIFEST = "manifest.json"
IMAGES = "images"
CHUNK = 2_000  # items per unit of work (and per worker task)
_OWNED_IMAGE = re.compile(r"^(train|calib|test)-\d+\.png$")


def source_hash(names: Sequence[str]) -> str:
    """Hash of the sources of files of this package (a cache key or memo key: an edit rebuilds or re-measures)."""
    h = hashlib.sha256()
    for name in names:
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:16]


def code_hash(world: str = DEFAULT_WORLD) -> str:
    """Hash of a world's generator source and this file (which writes its records): keys the data folder's
    manifest (an edit regenerates a build's data) and the data lock (an edit re-measures the fingerprint)."""
    return source_hash((*get_world(world).files, "build.py"))


def _recipe(sizes: dict[str, int] | None, seed: int, world: str = DEFAULT_WORLD) -> dict:
    return {"recipe": RECIPE_VERSION, "world": world, "code": code_hash(world), "seed": int(seed),
            "sizes": _check_sizes(sizes)}


def split_paths(out_dir: str | os.PathLike, world: str = DEFAULT_WORLD) -> dict[str, Path]:
    """The data files of a built zoo: one per split plus `test_<task>` for every task."""
    out = Path(out_dir)
    paths = {split: out / f"{split}.json" for split in SPLITS}
    paths.update({f"test_{name}": out / f"test_{name}.json" for name in get_world(world).task_names})
    return paths


def expected_images(split: str, n: int, world: World | str = DEFAULT_WORLD) -> list[str]:
    """Image file names of a split: known without reading it, since the task is index % len(tasks)."""
    w = get_world(world) if isinstance(world, str) else world
    return [f"{split}-{i:06d}.png" for i in range(n) if w.has_image(i)]


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def pixel_digest(image) -> bytes:
    """An image as the model sees it (mode, size, pixels): unlike its PNG bytes, independent of zlib."""
    return hashlib.sha256(f"{image.mode} {image.size}".encode() + image.tobytes()).digest()


def _chunk(job: tuple[str, int, int, int, str | None, str]) -> tuple[list[dict], list[bytes], list[bytes]]:
    """Generate items start..stop of a split; write their images unless `images_dir` is None (a fingerprint
    only); return the records and the images' PNG and pixel digests."""
    split, start, stop, seed, images_dir, world = job
    make_item = WORLDS[world].make_item
    records, pngs, pixels = [], [], []
    for i in range(start, stop):
        item = make_item(split, i, seed)
        if item.image is not None:
            if images_dir is not None:
                data = png_bytes(item.image)
                with open(os.path.join(images_dir, f"{item.id}.png"), "wb") as f:
                    f.write(data)
                pngs.append(hashlib.sha256(data).digest())
            pixels.append(pixel_digest(item.image))
        records.append(item.record())
    return records, pngs, pixels


def _generate(split: str, n: int, seed: int, images: Path | None, workers: int,
              progress: bool | None, world: str = DEFAULT_WORLD) -> tuple[list[dict], str, str]:
    """A split's records and the hashes of its images' PNG files and of their pixels (`images` None: none written)."""
    jobs = [(split, s, min(s + CHUNK, n), seed, None if images is None else str(images), world)
            for s in range(0, n, CHUNK)]
    bar = tqdm(total=n, desc=f"zoo {split}", unit="item", disable=None if progress is None else not progress)
    records: list[dict] = []
    pngs: list[bytes] = []
    pixels: list[bytes] = []
    if workers > 1 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.imap(_chunk, jobs)
            for (recs, png, pix), job in zip(results, jobs, strict=True):
                records += recs
                pngs += png
                pixels += pix
                bar.update(job[2] - job[1])
    else:
        for job in jobs:
            recs, png, pix = _chunk(job)
            records += recs
            pngs += png
            pixels += pix
            bar.update(job[2] - job[1])
    bar.close()
    return records, hashlib.sha256(b"".join(pngs)).hexdigest(), hashlib.sha256(b"".join(pixels)).hexdigest()


def _json_text(data: object, lines: bool = False) -> str:
    """`lines` puts one list element per line (readable, diff-friendly)."""
    if lines:
        return "[\n" + ",\n".join(json.dumps(r) for r in data) + "\n]\n"  # type: ignore[attr-defined]
    return json.dumps(data, indent=1) + "\n"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write_json(path: Path, data: object, lines: bool = False) -> str:
    """Write atomically; return the text's sha256."""
    text = _json_text(data, lines)
    write_text_atomic(path, text)
    return _sha(text)


def _fingerprint(records: dict[str, str], pixels: dict[str, str], vocab: str, tasks: str) -> dict[str, str]:
    """Per split the sha256 of its JSON text and of its images' pixels; the vocabulary's and task table's;
    and `content`, the hash of them all (what tamp.zoo.recipe.recipe_hash covers)."""
    parts = {split: _sha(f"{records[split]} {pixels[split]}") for split in SPLITS}
    parts.update(vocab=vocab, tasks=tasks)
    return {**parts, "content": _sha(json.dumps(parts, sort_keys=True))}


def fingerprint(sizes: dict[str, int] | None, seed: int = 0, world: str = DEFAULT_WORLD, *,
                workers: int = 1, progress: bool | None = False) -> dict[str, str]:
    """The fingerprint of the data `build_zoo` writes for these arguments, generated in memory, nothing written."""
    w, sizes = get_world(world), _check_sizes(sizes)
    records, pixels = {}, {}
    for split in SPLITS:
        recs, _, pixels[split] = _generate(split, sizes[split], seed, None, workers, progress, world)
        records[split] = _sha(_json_text(recs, lines=True))
    return _fingerprint(records, pixels, _sha(_json_text(w.vocabulary())), _sha(_json_text(w.task_table())))


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _read_manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _up_to_date(out: Path, recipe: dict) -> bool:
    """Same recipe, sizes and seed, every data file unchanged and every image present."""
    m = _read_manifest(out)
    if m is None or any(m.get(k) != v for k, v in recipe.items()):
        return False
    if any(_sha256(out / name) != digest for name, digest in m.get("files", {}).items()):
        return False
    present = set(os.listdir(out / IMAGES)) if (out / IMAGES).is_dir() else set()
    return all(name in present for split in SPLITS
               for name in expected_images(split, recipe["sizes"][split], recipe["world"]))


def _check_sizes(sizes: dict[str, int] | None) -> dict[str, int]:
    merged = {**DEFAULT_SIZES, **(sizes or {})}
    unknown = set(merged) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown zoo split(s) {sorted(unknown)}; expected {list(SPLITS)}")
    if any(not isinstance(v, int) or v < 0 for v in merged.values()):
        raise ValueError(f"zoo split sizes must be non-negative integers, got {merged}")
    return {split: merged[split] for split in SPLITS}


def build_zoo(out_dir: str | os.PathLike, sizes: dict[str, int] | None = None, seed: int = 0, *,
              workers: int = 1, force: bool = False, progress: bool | None = None,
              world: str = DEFAULT_WORLD) -> dict[str, Path]:
    """Build (or find already built) the splits of `world` under `out_dir`; returns {split: json path}.

    `sizes` overrides DEFAULT_SIZES per split (test is the total over tasks, balanced). A manifest,
    written last, records the recipe (version, world and a hash of its generator's code), sizes, seed
    and hashes: a matching, intact build is skipped, any other is rebuilt (an interrupted build has no
    manifest, so it is rebuilt too). `workers` > 1 generates train in parallel, with the same bytes.
    """
    w = get_world(world)
    out = Path(out_dir)
    recipe = _recipe(sizes, seed, world)
    paths = split_paths(out, world)
    if not force and _up_to_date(out, recipe):
        return paths
    out.mkdir(parents=True, exist_ok=True)
    old = _read_manifest(out) or {}
    (out / MANIFEST).unlink(missing_ok=True)
    images = out / IMAGES
    images.mkdir(exist_ok=True)

    files: dict[str, str] = {}
    image_hashes: dict[str, str] = {}
    pixel_hashes: dict[str, str] = {}
    for split in SPLITS:
        n = recipe["sizes"][split]
        records, image_hashes[split], pixel_hashes[split] = _generate(split, n, seed, images, workers, progress, world)
        files[paths[split].name] = _write_json(paths[split], records, lines=True)
        if split == "test":
            for name in w.task_names:
                files[paths[f"test_{name}"].name] = _write_json(
                    paths[f"test_{name}"], [r for r in records if r["task"] == name], lines=True)
    files["vocab.json"] = _write_json(out / "vocab.json", w.vocabulary())
    files["tasks.json"] = _write_json(out / "tasks.json", w.task_table())

    _remove_stale(out, old, files, recipe["sizes"], w)
    content = hashlib.sha256(json.dumps({"files": files, "images": image_hashes}, sort_keys=True).encode())
    texts = {split: files[paths[split].name] for split in SPLITS}
    manifest = {**recipe, "content_hash": content.hexdigest(), "files": files, "images": image_hashes,
                "fingerprint": _fingerprint(texts, pixel_hashes, files["vocab.json"], files["tasks.json"])}
    _write_json(out / MANIFEST, manifest)
    return paths


def _remove_stale(out: Path, old: dict, files: dict[str, str], sizes: dict[str, int], world: World) -> None:
    """Delete what an earlier build wrote and this one did not (only names the zoo owns)."""
    for name in old.get("files", {}):
        if name not in files and "/" not in name:
            (out / name).unlink(missing_ok=True)
    keep = {name for split in SPLITS for name in expected_images(split, sizes[split], world)}
    for name in os.listdir(out / IMAGES):
        if _OWNED_IMAGE.match(name) and name not in keep:
            (out / IMAGES / name).unlink()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tamp.zoo.build", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--world", default=DEFAULT_WORLD, choices=sorted(WORLDS))
    for split in SPLITS:
        parser.add_argument(f"--{split}", type=int, default=DEFAULT_SIZES[split], help=f"{split} items")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes generating in parallel")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    sizes = {split: getattr(args, split) for split in SPLITS}
    fresh = args.force or not _up_to_date(Path(args.out_dir), _recipe(sizes, args.seed, args.world))
    paths = build_zoo(args.out_dir, sizes, args.seed, workers=args.workers, force=args.force, world=args.world)
    state = "built" if fresh else "up to date"
    print(f"zoo {state} in {time.perf_counter() - start:.1f}s: {args.world} world, {sizes} seed {args.seed}")
    for split in SPLITS:
        print(f"  {split}: {paths[split]}")


if __name__ == "__main__":
    main()
