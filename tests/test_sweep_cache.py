"""A sweep computes an allocation's dense scores once per key and every other cell reuses them (issue 34).

On the zoo each ECoFLaP cell spent 34 s on zeroth-order scores and each DAS cell 2.5 s that do not depend
on its sparsity. A cell after another of the same key now reads them from SWEEP_DIR/.cache (the masks
are those of the cell run alone), records where from in results.json, recomputes when any part of the
key differs, never reads an entry an interrupted cell left, and waits for a cell computing the same key.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tiny_models import fresh_tiny

import tamp
from tamp.cli.run_command import run
from tamp.cli.score_cache import ScoreCache
from tamp.pipeline.engine import LayerwiseEngine

REPO = Path(__file__).resolve().parents[1]
ALLOCATIONS = {
    "das": {"name": "das"},
    "das_all_token": {"name": "das_all_token"},
    "das_block": {"name": "das_block"},
    "owl": {"name": "owl"},
    "ecoflap": {"name": "ecoflap", "num_samples": 2},
}


class PassCounter:
    """How many dense scoring and perturbation passes ran (the work a reusing cell skips)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for name in ("scoring_pass", "perturbation_pass"):
            real = getattr(LayerwiseEngine, name)
            monkeypatch.setattr(LayerwiseEngine, name, self._counting(real))

    def _counting(self, real):
        def wrapper(engine, *args, **kwargs):
            self.count += 1
            return real(engine, *args, **kwargs)
        return wrapper


def _prune(allocation: dict, target: float, store: ScoreCache | None, *, dtype: torch.dtype | None = None,
           reverse: bool = False, seed: int = 42, pattern: str = "unstructured"):
    """A fresh tiny LLaVA-NeXT pruned by Wanda under `allocation` (the model is pruned in place)."""
    bundle = fresh_tiny("llava_next")
    if dtype is not None:
        bundle.model.to(dtype)
    sample = bundle.example_sample(0)
    flipped = replace(sample, inputs={**sample.inputs, "pixel_values": sample.inputs["pixel_values"].flip(-1)})
    samples = [flipped, sample] if reverse else [sample, flipped]  # the same two records in another draw order
    config = {"method": {"pruner": "wanda", "allocation": allocation}, "sparsity": {"target": target, "pattern": pattern},
              "device": "cpu", "progress": False, "keep_masks": True, "seed": seed}
    return tamp.prune(bundle.model, samples, config, adapter=bundle.adapter, score_store=store)


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("scores_*.json"))


@pytest.mark.parametrize("name", list(ALLOCATIONS))
def test_a_cell_after_another_sparsity_reuses_the_scores_and_prunes_as_alone(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes = PassCounter(monkeypatch)
    first_store = ScoreCache(tmp_path)
    _prune(ALLOCATIONS[name], 0.5, first_store)
    assert first_store.reused == {} and passes.count == 1 and len(_entries(tmp_path)) == 1
    store = ScoreCache(tmp_path)
    reusing = _prune(ALLOCATIONS[name], 0.6, store)
    assert passes.count == 1, "the reusing cell ran the dense scoring again"
    assert store.reused == {"allocation_scores": str(_entries(tmp_path)[0])}
    alone = _prune(ALLOCATIONS[name], 0.6, None)
    assert reusing.allocation_scores == alone.allocation_scores
    assert reusing.masks.keys() == alone.masks.keys() and len(alone.masks) == 14
    for linear, mask in alone.masks.items():
        assert torch.equal(reusing.masks[linear], mask), linear
    assert abs(reusing.achieved - alone.achieved) == 0


def test_an_nm_cell_reuses_the_scores_of_an_unstructured_cell(tmp_path: Path) -> None:
    """The pattern is no part of the key: a mixed 2:4 plan comes from the same dense scores."""
    _prune({"name": "das"}, 0.6, ScoreCache(tmp_path))
    store = ScoreCache(tmp_path)
    reusing = _prune({"name": "das"}, 0.5, store, pattern="2:4")
    alone = _prune({"name": "das"}, 0.5, None, pattern="2:4")
    assert store.reused and reusing.nm == alone.nm
    assert all(torch.equal(reusing.masks[k], m) for k, m in alone.masks.items())


@pytest.mark.parametrize("change", ["dtype", "calibration draw", "allocation setting", "seed"])
def test_every_part_of_the_key_recomputes(change: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _prune({"name": "das"}, 0.5, ScoreCache(tmp_path))
    passes = PassCounter(monkeypatch)
    store = ScoreCache(tmp_path)
    kwargs = {"dtype": {"dtype": torch.bfloat16}, "calibration draw": {"reverse": True},
              "seed": {"seed": 7}}.get(change, {})
    allocation = {"name": "das", "variant": "reference"} if change == "allocation setting" else {"name": "das"}
    _prune(allocation, 0.6, store, **kwargs)
    assert store.reused == {} and passes.count == 1, f"{change} reused the scores of another key"
    assert len(_entries(tmp_path)) == 2


def test_the_runner_records_the_reuse_and_a_dtype_recomputes(compose_cfg, tmp_path: Path) -> None:
    """Three ECoFLaP cells of one sweep folder and the 0.6 cell alone: the masks and scores of the reusing
    cell are the lone cell's; a bfloat16 cell of the same sweep (the tiny model is float32) has a key of its own."""
    cache = tmp_path / "sweep" / ".cache"
    base = ["method=ecoflap", "calib.num_samples=2", "runner.progress=false", "logger=none",
            "runner.save_masks=false"]

    def cell(folder: str, target: float, cache_dir: Path | None, *extra: str) -> dict:
        run(compose_cfg([*base, f"sparsity.target={target}", *extra]), tmp_path / folder, cache_dir)
        return json.loads((tmp_path / folder / "results.json").read_text())

    first = cell("sweep/0", 0.5, cache)
    second = cell("sweep/1", 0.6, cache)
    alone = cell("alone", 0.6, None)
    other = cell("sweep/2", 0.6, cache, "model.dtype=bfloat16")
    assert "reused" not in first and "reused" not in alone and "reused" not in other
    entries = _entries(cache)
    assert len(entries) == 2
    # (the encoded samples and block-0 inputs are reused too: tests/test_sweep_shared_inputs.py)
    assert second["reused"]["allocation_scores"] in (str(entries[0]), str(entries[1]))
    assert second["allocation_scores"] == alone["allocation_scores"]
    assert second["sparsity_per_linear"] == alone["sparsity_per_linear"]
    assert second["timings"]["plan_s"] < alone["timings"]["plan_s"]


# --- the store itself: interrupted writers, foreign files, two processes at once ---

KEY = {"model": "m", "samples": "s"}
STATE = {"layer": {"a": 0.25, "b": float("nan")}}


def _never(message: str):
    def compute():
        raise AssertionError(message)
    return compute


@pytest.mark.fast
def test_an_entry_of_an_interrupted_cell_is_never_read(tmp_path: Path) -> None:
    store = ScoreCache(tmp_path)
    path, items = store.entry(KEY)

    def interrupted():
        raise KeyboardInterrupt("killed while scoring")

    with pytest.raises(KeyboardInterrupt):
        store.fetch(KEY, interrupted)
    assert not path.exists() and list(tmp_path.glob(".*.tmp")) == []
    # what a writer killed mid-write leaves: its temporary file, complete content under another name
    tmp = path.with_name(f".{path.name}.123456789.tmp")
    tmp.write_text(json.dumps({"format": 1, "kind": "allocation_scores", "key": items, "scores": STATE,
                               "complete": True}))
    assert store.fetch(KEY, lambda: {"layer": {"a": 1.0}}) == {"layer": {"a": 1.0}} and store.reused == {}
    # an entry without its completion mark, or cut short, is recomputed and replaced by a complete one
    for text in (json.dumps({"format": 1, "kind": "allocation_scores", "key": items, "scores": STATE}),
                 json.dumps({"format": 1, "kind": "allocation_scores", "key": items, "scores": STATE,
                             "complete": True})[:40]):
        path.write_text(text)
        assert store.fetch(KEY, lambda: {"layer": {"a": 2.0}}) == {"layer": {"a": 2.0}} and store.reused == {}
        assert json.loads(path.read_text())["complete"] is True
    reader = ScoreCache(tmp_path)
    assert reader.fetch(KEY, _never("a complete entry was computed again")) == {"layer": {"a": 2.0}}
    assert reader.reused == {"allocation_scores": str(path)}


@pytest.mark.fast
def test_an_entry_of_other_settings_at_the_same_path_is_not_read(tmp_path: Path) -> None:
    store = ScoreCache(tmp_path)
    path, items = store.entry(KEY)
    path.write_text(json.dumps({"format": 1, "kind": "allocation_scores", "key": {**items, "model": "other"},
                                "scores": STATE, "complete": True}))
    assert store.fetch(KEY, lambda: {"layer": {"a": 3.0}}) == {"layer": {"a": 3.0}} and store.reused == {}
    again = ScoreCache(tmp_path).fetch(KEY, _never("stored scores computed again"))
    assert again == {"layer": {"a": 3.0}}
    nan = ScoreCache(tmp_path / "nan")
    nan.fetch(KEY, lambda: STATE)
    state = ScoreCache(tmp_path / "nan").fetch(KEY, _never("NaN scores computed again"))
    assert state["layer"]["a"] == 0.25 and state["layer"]["b"] != state["layer"]["b"]  # NaN survives the file


@pytest.mark.fast
def test_a_link_at_the_lock_is_refused(tmp_path: Path) -> None:
    store = ScoreCache(tmp_path)
    path, _ = store.entry(KEY)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    path.with_name(f".{path.stem}.lock").symlink_to(victim)
    with pytest.raises(ValueError, match="symbolic link"):
        store.fetch(KEY, lambda: STATE)
    assert victim.read_text() == "keep" and not path.exists()


@pytest.mark.fast
def test_the_lock_serialises_two_cells_started_together(tmp_path: Path) -> None:
    """Two processes with one key: one computes (slowly), the other waits for it and reads its scores."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    script = textwrap.dedent(f"""
        import json, os, pathlib, time
        from tamp.cli.score_cache import ScoreCache
        barrier = pathlib.Path({str(barrier)!r})
        (barrier / str(os.getpid())).touch()
        while len(list(barrier.iterdir())) < 2:  # both imported: start together
            time.sleep(0.01)
        store = ScoreCache({str(tmp_path / "cache")!r}, poll_s=0.05)
        computed = []
        def compute():
            computed.append(True)
            time.sleep(1.5)
            return {{"layer": {{"a": 0.5}}}}
        began = time.time()
        state = store.fetch({KEY!r}, compute)
        print(json.dumps({{"computed": bool(computed), "reused": store.reused, "state": state,
                          "began": began, "ended": time.time()}}))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(o["computed"] for o in outs) == [False, True]
    assert all(o["state"] == {"layer": {"a": 0.5}} for o in outs)
    reader = next(o for o in outs if not o["computed"])
    writer = next(o for o in outs if o["computed"])
    assert reader["reused"] == {"allocation_scores": str(ScoreCache(tmp_path / "cache").entry(KEY)[0])}
    assert reader["began"] < writer["ended"] <= reader["ended"], "the reader did not wait for the writer"


def _two_process_cells(fabric, out: str) -> str:
    """In a 2-process world: 0.5 then 0.6 with one cache folder (rank 0 reads and writes, the others are
    handed its decision and scores), then 0.6 alone; rank 0 saves what it saw."""
    from tamp.pipeline.distributed import fabric_broadcast, fabric_reducer, shard

    def cell(target: float, cache: bool):
        bundle = fresh_tiny("llava_next")
        sample = bundle.example_sample(0)
        flipped = replace(sample, inputs={**sample.inputs, "pixel_values": sample.inputs["pixel_values"].flip(-1)})
        local = shard([sample, flipped, sample, flipped], fabric.global_rank, fabric.world_size)
        store = ScoreCache(Path(out) / "cache", {}, fabric.global_rank, fabric.world_size,
                           fabric_broadcast(fabric), poll_s=0.05) if cache else None
        config = {"method": {"pruner": "wanda", "allocation": {"name": "ecoflap", "num_samples": 2}},
                  "sparsity": {"target": target}, "device": "cpu", "progress": False, "keep_masks": True}
        report = tamp.prune(bundle.model, local, config, adapter=bundle.adapter, reducer=fabric_reducer(fabric),
                            score_store=store)
        return report.masks, dict(store.reused) if store else {}

    _, first = cell(0.5, True)
    masks, reused = cell(0.6, True)
    alone, _ = cell(0.6, False)
    path = Path(out) / f"rank{fabric.global_rank}.pt"
    torch.save({"first": first, "reused": reused, "equal": all(torch.equal(masks[k], m) for k, m in alone.items()),
                "files": sorted(p.name for p in (Path(out) / "cache").glob("scores_*.json"))}, path)
    return str(path)


@pytest.mark.slow  # spawns a 2-process Fabric world and prunes three times in it: 40 s on a loaded 2-core box
def test_a_two_process_cell_shares_rank_zeros_scores(tmp_path: Path) -> None:
    from lightning.fabric import Fabric

    Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn").launch(_two_process_cells, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for seen in ranks:
        assert seen["first"] == {} and seen["equal"], seen
        assert seen["reused"] == {"allocation_scores": str(tmp_path / "cache" / seen["files"][0])}
    assert len(ranks[0]["files"]) == 1
