"""A sweep's shared inputs: encoded calibration samples and block-0 inputs, computed by the first cell of a key.

Every cell of a sweep decodes and encodes its calibration records and forwards them to the first
decoder block (tamp.pipeline.shared_inputs); the cells that differ only in sparsity, pattern or method
do it identically. The first cell of a key stores what it computed in SWEEP_DIR/.cache and every later
cell of the same key loads it: `<kind>_<key>.rank<r>.safetensors` (the tensors) and `.json` beside it
(the key's items, the tree's skeleton, the data file's size and SHA-256, `"complete": true`).

The manifest is written last, atomically, after the data file is whole, so a cell killed while writing
leaves nothing that reads as complete; a reader checks the key's items, the size and the digest of the
data file before it loads a byte of it, so a changed file (a copy cut short, bytes flipped on disk) is
refused with a warning and computed again. A key holds one lock, `.<kind>_<key>.lock`, taken by rank 0
(as tamp.cli.score_cache), so two cells started together compute it once; in a Fabric world each rank
stores and loads its own share, and the ranks reuse only when every one of them has its entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tamp.cli.score_cache import ScoreLock, SweepStore, wait_for_lock
from tamp.core.io import write_atomic, write_json_atomic

log = logging.getLogger("tamp")
FORMAT = 1
BLOCK_INPUTS = "block_inputs"  # tamp.pipeline.shared_inputs.BLOCK_INPUTS (that module imports torch)
KINDS = {"calibration_samples": "calibration samples", BLOCK_INPUTS: "block-0 inputs"}
_NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 24


@dataclass(frozen=True)
class Entry:
    """One rank's files of one key, the key's lock and the items the manifest is compared by."""

    lock: Path
    data: Path
    manifest: Path
    items: dict[str, str]


class InputCache(SweepStore):
    """A tamp.pipeline.shared_inputs.InputStore in a folder; `reused` says which kinds came from which file.

    `block_inputs=False` keeps the block-0 inputs out (each cell captures its own): at full scale they
    are gigabytes per entry and a GPU captures them about as fast as a shared file system reads them.
    """

    def __init__(
        self,
        directory: str | Path,
        context: dict[str, str] | None = None,
        rank: int = 0,
        world_size: int = 1,
        broadcast: Callable[[Any], Any] | None = None,
        reducer: Callable[[list[Any]], None] | None = None,
        poll_s: float = 1.0,
        block_inputs: bool = True,
    ) -> None:
        if world_size > 1 and (broadcast is None or reducer is None):
            raise ValueError("InputCache: several processes need a broadcast from rank 0 and a reducer")
        super().__init__(directory, context, rank, world_size, broadcast, poll_s)
        self.reducer = reducer
        self.block_inputs = block_inputs
        #: {kind: seconds spent loading it, or computing and storing it}
        self.seconds: dict[str, float] = {}

    def shares(self, kind: str) -> bool:
        return kind != BLOCK_INPUTS or self.block_inputs

    def entry(self, kind: str, key: dict[str, str]) -> Entry:
        """This rank's entry of `key`; the lock and the file stem are the same on every rank."""
        world = {**self.context, **{k: str(v) for k, v in key.items()}, "processes": str(self.world_size)}
        digest = hashlib.sha256(json.dumps({"kind": kind, **world}, sort_keys=True).encode()).hexdigest()[:16]
        stem = f"{kind}_{digest}"
        base = self.dir / f"{stem}.rank{self.rank}"
        return Entry(self.dir / f".{stem}.lock", base.with_name(base.name + ".safetensors"),
                     base.with_name(base.name + ".json"), {**world, "rank": str(self.rank)})

    def _everyone(self, flag: bool) -> bool:
        """True when `flag` is true on every process (every process calls it)."""
        if self.world_size <= 1 or self.reducer is None:
            return flag
        import torch

        missing = torch.tensor([0 if flag else 1], dtype=torch.int64)
        self.reducer([missing])
        return int(missing.item()) == 0

    def fetch(
        self, kind: str, key: dict[str, str], compute: Callable[[], Any],
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        what = KINDS.get(kind, kind)
        entry = self.entry(kind, key)
        lock = ScoreLock(entry.lock) if self.rank == 0 else None
        began = time.perf_counter()
        try:
            wait_for_lock(lock, self._share, self.poll_s, what)
            tree = read_entry(entry, kind, check)
            if self._everyone(tree is not None):
                self.reused[kind] = str(entry.manifest)
                self.seconds[kind] = time.perf_counter() - began
                log.info("%s reused from %s (same model, calibration draw and settings; loaded and checked in %.2f s)",
                         what, entry.manifest, self.seconds[kind])
                return tree
            tree = compute()
            write_entry(entry, kind, tree)
            self._everyone(True)  # every rank has written before the lock goes
            self.seconds[kind] = time.perf_counter() - began
            return tree
        finally:
            if lock is not None:
                lock.release()


def _read_plain(path: Path) -> bytearray:
    """The bytes of the regular file at `path`, never through a link (FileNotFoundError when absent)."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    with os.fdopen(fd, "rb", buffering=0) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        data = bytearray(info.st_size)
        view, done = memoryview(data), 0
        while done < len(data) and (n := f.readinto(view[done:done + _CHUNK])):
            done += n
        return data if done == len(data) else data[:done]


def read_entry(entry: Entry, kind: str, check: Callable[[Any], str | None] | None = None) -> Any | None:
    """The tree of a complete, unchanged entry written for exactly `entry.items`, else None (a warning says why)."""
    what = KINDS.get(kind, kind)
    try:
        manifest = json.loads(_read_plain(entry.manifest))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("%s cache %s is unreadable (%s): computing them again", what, entry.manifest, err)
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("kind") != kind:
        log.warning("%s cache %s is not an entry of this tamp: computing them again", what, entry.manifest)
        return None
    if manifest.get("complete") is not True:
        log.warning("%s cache %s was not completed (its cell stopped): computing them again", what, entry.manifest)
        return None
    if manifest.get("key") != entry.items:
        log.warning("%s cache %s was written for other settings: computing them again", what, entry.manifest)
        return None
    try:
        data = _read_plain(entry.data)
    except OSError as err:
        log.warning("%s cache %s lacks its data file %s (%s): computing them again", what, entry.manifest,
                    entry.data.name, err.strerror or err)
        return None
    if len(data) != manifest.get("bytes") or hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
        log.warning("%s cache %s has changed since it was written (size or SHA-256 differs from %s): "
                    "computing them again", what, entry.data, entry.manifest.name)
        return None
    from tamp.pipeline.tensor_tree import tensors_from_buffer, unflatten

    try:
        tree = unflatten(manifest.get("skeleton"), tensors_from_buffer(data))
    except (KeyError, TypeError, ValueError) as err:
        log.warning("%s cache %s does not load (%s): computing them again", what, entry.data, err)
        return None
    problem = check(tree) if check is not None else None
    if problem:
        log.warning("%s cache %s does not fit this run (%s): computing them again", what, entry.data, problem)
        return None
    return tree


def write_entry(entry: Entry, kind: str, tree: Any) -> bool:
    """Store `tree`: the data file first, the manifest (its digest, `complete`) last; False when not stored
    (a value safetensors cannot hold, a full disk: the run goes on, the next cell computes again)."""
    from safetensors.torch import save_file

    from tamp.pipeline.tensor_tree import Unstorable, flatten

    what = KINDS.get(kind, kind)
    try:
        skeleton, tensors = flatten(tree)
    except Unstorable as err:
        log.warning("%s cannot be stored for the sweep's other cells (%s): each cell computes its own", what, err)
        return False
    digest, size = hashlib.sha256(), [0]

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp))
        with open(tmp, "rb") as f:  # the file as it will be renamed: its digest is what readers check
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                size[0] += len(chunk)

    try:
        write_atomic(entry.data, write)
        write_json_atomic(entry.manifest, {
            "format": FORMAT, "kind": kind, "key": entry.items, "skeleton": skeleton,
            "data": entry.data.name, "bytes": size[0], "sha256": digest.hexdigest(),
            "complete": True,
        })
    except OSError as err:
        log.warning("%s could not be stored in %s (%s): the sweep's other cells compute their own", what,
                    entry.data.parent, err.strerror or err)
        return False
    log.info("%s stored in %s for the sweep's other cells", what, entry.manifest)
    return True


def files_identity(path: str | Path) -> str:
    """What a calibration path is on disk now: a file's or a folder's files' names, sizes and modification
    times (a file written again is another calibration set); a name that is no local path as it is."""
    where = Path(path).expanduser()
    if where.is_file():
        info = where.stat()
        return f"file:{where.resolve()}:{info.st_size}:{info.st_mtime_ns}"
    if where.is_dir():
        stats = sorted((str(f.relative_to(where)), f.stat().st_size, f.stat().st_mtime_ns)
                       for f in where.rglob("*") if f.is_file())
        return f"dir:{where.resolve()}:" + hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]
    # a Hub dataset id: the commit its local cache resolves
    from huggingface_hub.constants import HF_HUB_CACHE

    name = str(path)
    try:
        return "commit:" + (Path(HF_HUB_CACHE) / f"datasets--{name.replace('/', '--')}" / "refs" / "main").read_text().strip()
    except OSError:
        return f"name:{name}"


#: a media folder with more files than this is not walked: its cells encode their own samples
MEDIA_WALK_LIMIT = 200_000


def media_identity(folder: Path, limit: int = MEDIA_WALK_LIMIT) -> str | None:
    """The names, sizes and modification times of every file under a calibration set's media folder, as one
    digest: an image replaced under the same name is another calibration set. None past `limit` files (a
    folder too large to stat for every cell is not shared rather than shared unchecked)."""
    stats: list[tuple[str, int, int]] = []
    pending = [folder]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for item in entries:
                if item.is_dir(follow_symlinks=True):
                    pending.append(Path(item.path))
                elif item.is_file(follow_symlinks=True):
                    info = item.stat(follow_symlinks=True)
                    stats.append((os.path.relpath(item.path, folder), info.st_size, info.st_mtime_ns))
                    if len(stats) > limit:
                        return None
    digest = hashlib.sha256(json.dumps(sorted(stats)).encode()).hexdigest()[:16]
    return f"media:{folder.resolve()}:{len(stats)}:{digest}"


def processor_identity(processor: Any) -> str:
    """A digest of what encodes the samples: the processor's settings, its tokenizer's vocabulary and added
    tokens, and its chat template (so a folder whose tokenizer files changed is another key)."""
    h = hashlib.sha256()
    if processor is None:
        return "none"
    to_json = getattr(processor, "to_json_string", None)
    h.update((to_json() if callable(to_json) else repr(processor)).encode())
    tokenizer = getattr(processor, "tokenizer", processor)
    vocab = getattr(tokenizer, "get_vocab", None)
    if callable(vocab):
        h.update(json.dumps(sorted(vocab().items())).encode())
    h.update(repr(getattr(tokenizer, "added_tokens_decoder", "")).encode())
    for owner in (processor, tokenizer):
        h.update(str(getattr(owner, "chat_template", "")).encode())
    return h.hexdigest()[:16]
