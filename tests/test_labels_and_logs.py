"""Issue 32.8: what runs, rows, tags, footnotes and progress lines say is what ran.

A 2:4 wanda cell with `seed=1 calib.seed=7` on a tiny LLaVA, saved and evaluated again, then its dense
reference: the console line, the W&B tags (read back from the offline run), the saved manifest and the
report's pairing of the checkpoint with its source model. The rest on hand-made results and progress lines.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tamp.cli.run_command import run
from tamp.core.progress import LogProgress, resume, weighted_steps
from tamp.models.saving import MANIFEST
from tamp.reporting import build_report, load_results
from tamp.reporting.load import check_results
from tamp.reporting.render import report_markdown
from tamp.reporting.wandb_offline import find_offline_runs, read_offline_run
from tamp.tracking.run_names import NO_DATA_PRUNERS, name_of_config, preset_items, variant_items

pytestmark = pytest.mark.fast  # the unit tier: make test-fast

QUIET = ["model=tiny_llava", "runner.progress=false", "calib.num_samples=2", "eval=none"]


def _tags(run_dir: Path) -> list[str]:
    (folder,) = find_offline_runs([run_dir])
    return read_offline_run(folder).tags


@pytest.fixture(scope="module")
def cells(compose_cfg, tmp_path_factory) -> dict[str, object]:
    """A 2:4 wanda cell saved to a folder, that folder evaluated again, and the dense reference: their
    results folders and printed lines."""
    import contextlib
    import io
    import shutil

    root = tmp_path_factory.mktemp("labels")
    out: dict[str, object] = {"root": root, "ckpt": root / "ckpt"}
    runs = {
        "pruned": ["method=wanda", "sparsity.pattern=2:4", "seed=1", "calib.seed=7", f"runner.save_dir={root / 'ckpt'}"],
        "saved": [f"model.name={root / 'ckpt'}", "method=dense"],
        "dense": ["method=dense", "seed=1"],
        "bare": [f"model.name={root / 'bare_ckpt'}", "method=dense"],
    }
    for name, overrides in runs.items():
        if name == "bare":  # the checkpoint copied without its manifest: known as sparse once measured
            shutil.copytree(root / "ckpt", root / "bare_ckpt")
            (root / "bare_ckpt" / MANIFEST).unlink()
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            run(compose_cfg([*QUIET, "logger=wandb", *overrides]), root / name)
        out[f"{name}_line"] = printed.getvalue()
    return out


@pytest.mark.integration(reason="reads a sweep that `python -m tamp.run` prunes")
def test_the_console_line_names_the_pattern_and_reads_the_seeds(cells) -> None:
    assert cells["pruned_line"].startswith("wanda, seed 1, calib.seed 7: sparsity 0.5000 (target 0.5, 2:4)")
    assert cells["dense_line"].startswith("dense: sparsity 0.0000 (target 0.0)")


@pytest.mark.integration(reason="reads a sweep that `python -m tamp.run` prunes")
def test_wandb_tags_say_what_ran(cells) -> None:
    root: Path = cells["root"]
    pruned = _tags(root / "pruned")
    assert {"wanda", "pruner=wanda", "allocation=uniform", "tokens=all", "sparsity=0.5", "pattern=2:4", "seed=1",
            "calib.seed=7", "tiny:llava"} <= set(pruned)
    dense = _tags(root / "dense")
    assert "sparsity=0.0" in dense and not any(t.startswith(("sparsity=0.5", "pattern=")) for t in dense)
    saved = _tags(root / "saved")
    assert {"wanda", "saved-checkpoint", "sparsity=0.5", "pattern=2:4"} <= set(saved)
    assert "dense" not in saved
    bare = _tags(root / "bare")  # tagged again once its weights are measured
    assert {"unknown", "saved-checkpoint", "sparsity=0.5"} <= set(bare) and "dense" not in bare


@pytest.mark.integration(reason="reads a sweep that `python -m tamp.run` prunes")
def test_a_saved_checkpoint_names_its_source_model_and_sits_with_its_dense_run(cells) -> None:
    root: Path = cells["root"]
    manifest = json.loads((cells["ckpt"] / MANIFEST).read_text())
    assert manifest["source_model"] == {"name": "tiny:llava"}
    results = load_results([root / "saved", root / "dense"])
    (table,) = build_report(results).tables  # one table: the checkpoint sits with the model it came from
    assert table.model == "tiny:llava"
    assert sorted((row.method, row.dense) for row in table.rows) == [("dense", True), ("wanda (saved checkpoint)", False)]


def test_a_saved_checkpoints_rel_is_against_its_source_models_dense_scores() -> None:
    base = {"status": "completed", "primary_metric": {"t": "acc"}, "config": {"seed": 1}}
    dense = {**base, "model": {"name": "org/base"}, "method": {"name": "dense", "pruner": "none"},
             "sparsity": {"target": 0.0, "achieved": 0.0}, "scores": {"t": {"acc": 0.8}}}
    saved = {**base, "model": {"name": "/ckpt"}, "method": {"name": "dense", "pruner": "none"},
             "sparsity": {"target": 0.0, "achieved": 0.5, "manifest": {"method": "wanda", "target": 0.5,
                                                                      "source_model": {"name": "org/base"}}},
             "scores": {"t": {"acc": 0.6}}}
    (table,) = build_report([check_results(r, "hand-made") for r in (dense, saved)]).tables
    row = next(row for row in table.rows if not row.dense)
    assert row.method == "wanda (saved checkpoint)" and row.avg_rel == pytest.approx(75.0)


def test_a_resaved_checkpoint_keeps_the_first_source(tmp_path: Path) -> None:
    from tamp.models.saving import source_model

    (tmp_path / MANIFEST).write_text(json.dumps({"overall_sparsity": 0.5, "source_model": {"name": "org/base"}}))
    assert source_model(str(tmp_path)) == {"name": "org/base"}
    assert source_model("org/other") == {"name": "org/other"}


# --- names: runs that differ only in a variant setting are told apart ---

@pytest.mark.parametrize(
    ("overrides", "folder"),
    [
        (["method=tamp"], "tamp_0.5_seed42"),
        (["method=tamp", "method.tokens.variant=reference"], "tamp+tokens.variant=reference_0.5_seed42"),
        (["method=wanda", "calib.draw=official"], "wanda+calib.draw=official_0.5_seed42"),
        (["method=tamp_reference"], "tamp_reference_0.5_seed42"),  # its own variants: nothing to add
        (["method=tamp_reference", "method.allocation.variant=paper"], "tamp_reference+allocation.variant=paper_0.5_seed42"),
        (["method=magnitude", "calib.draw=official"], "magnitude_0.5_seed42"),  # reads no calibration data
    ],
)
def test_variant_settings_name_the_run(compose_cfg, overrides: list[str], folder: str) -> None:
    assert name_of_config(compose_cfg([*overrides, "logger=none"])).folder() == folder


def test_every_preset_runs_the_variants_the_names_assume() -> None:
    """The variants read from each preset file are those it composes to: no preset is named by a variant it runs."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from tamp.cli.schema import register_schema
    from tamp.core.paths import CONF_DIR

    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):  # once for every preset: fast
        configs = {path.stem: OmegaConf.to_container(compose("run", [f"method={path.stem}", "logger=none"]),
                                                     resolve=True)
                   for path in sorted((CONF_DIR / "method").glob("*.yaml"))}
    for preset, config in configs.items():
        method = config["method"]
        found = variant_items(config, method["pruner"], method["allocation"]["name"])
        own = preset_items(preset)
        assert {k: v for k, v in found.items() if own.get(k if k.startswith("calib.") else f"method.{k}") != v} == {}, preset
    assert preset_items("tamp_reference")["method.tokens.variant"] == "reference"  # read from its file


def test_the_pruners_named_as_reading_no_data_are_those_that_read_none() -> None:
    from tamp.pruning.registry import PRUNERS

    reads_none = {name for name in PRUNERS.names() if not getattr(PRUNERS.get(name).factory, "needs_stats", True)}
    assert reads_none == set(NO_DATA_PRUNERS)


# --- report labels and footnotes ---

def _result(method: dict, seed: int, target: float = 0.5, variants: dict | None = None, **config) -> dict:
    full = {"seed": seed, "method": {"name": method["name"], "pruner": method["pruner"],
                                     "allocation": {"name": method["allocation"]}, "tokens": {"name": method["tokens"]}},
            "calib": {"seed": seed, "draw": "python"}, **config}
    return check_results({
        "status": "completed", "model": {"name": "m"}, "method": dict(method),
        "sparsity": {"target": target, "pattern": "unstructured", "achieved": target},
        "scores": {"t": {"acc": 0.5}}, "primary_metric": {"t": "acc"}, "config": full,
        "variants": variants or {},
    }, "hand-made")


TAMP = {"name": "tamp", "pruner": "wanda", "allocation": "das", "tokens": "amia"}
WANDA = {"name": "wanda", "pruner": "wanda", "allocation": "uniform", "tokens": "all"}
DENSE = {"name": "dense", "pruner": "none", "allocation": "uniform", "tokens": "all"}


def test_the_calibration_footnote_names_each_seed_a_row_ran() -> None:
    runs = [_result(DENSE, 1, 0.0)]
    runs += [_result(m, s, variants={"calibration": f"random.Random({s}).sample"}) for m in (TAMP, WANDA) for s in (1, 2)]
    markdown = report_markdown(build_report(runs))
    assert "calibration: random.Random(seed).sample for seed 1, 2" in markdown
    assert "Random(1).sample" not in markdown
    only_two = [_result(DENSE, 2, 0.0), _result(WANDA, 2, variants={"calibration": "random.Random(2).sample"})]
    assert "random.Random(2).sample" in report_markdown(build_report(only_two))


def test_a_variant_footnote_line_is_printed_once() -> None:
    reference = {**TAMP, "name": "tamp_reference"}
    runs = [_result(DENSE, 1, 0.0)]
    for target in (0.5, 0.6):
        runs.append(_result(TAMP, 1, target, variants={"tokens": "AMIA paper"}))
        runs.append(_result(reference, 1, target, variants={"tokens": "AMIA reference"}))
    markdown = report_markdown(build_report(runs))
    lines = markdown.splitlines()
    assert lines.count("- tamp: tokens: AMIA paper") == 1 and lines.count("- tamp_reference: tokens: AMIA reference") == 1


def test_the_plain_preset_keeps_its_label_next_to_its_ablations() -> None:
    runs = [_result(DENSE, 1, 0.0), _result(TAMP, 1), _result({**TAMP, "tokens": "random"}, 1),
            _result(TAMP, 1, calib={"seed": 1, "draw": "official"})]
    (table,) = build_report(runs).tables
    assert sorted(row.method for row in table.rows) == [
        "dense", "tamp", "tamp (calib.draw=official)", "tamp (method.tokens.name=random)"]


# --- progress lines of the ECoFLaP scoring pass ---

class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tamp.core.progress"]


def test_a_fresh_pass_of_many_steps_per_update_is_not_resumed_and_its_eta_weighs_early_blocks(caplog) -> None:
    """ECoFLaP's scoring updates 7 units a sample; a step of block b runs L - b blocks (here L = 4)."""
    caplog.set_level(logging.INFO, logger="tamp.core.progress")
    clock, units, samples, blocks = Clock(), 7, 2, 4
    work = weighted_steps([(units * samples, blocks - b) for b in range(blocks)])
    bar = LogProgress(units * samples * blocks, "ecoflap scoring", unit="step", clock=clock, work=work)
    for b in range(blocks):
        for _ in range(samples):
            clock.now += (blocks - b) * 1.0  # one second per block forward
            bar.update(units)
    lines = _lines(caplog)
    assert not any("resumed" in line for line in lines)
    # after 3 updates (2 of block 0, 1 of block 1: 11 s) the rate is 7 s for the 49 units of work after the first
    # update; 63 units are left: 9 s, what is really left (3 + 2 + 2 + 1 + 1); steps alone said 17.5 s, 2x high
    assert lines[2] == "ecoflap scoring: step 21/56, elapsed 11s, ETA 9s"


def test_resume_says_so_once_and_keeps_the_skipped_steps_out_of_the_rate(caplog) -> None:
    caplog.set_level(logging.INFO, logger="tamp.core.progress")
    clock = Clock()
    bar = LogProgress(10, "pruning", unit="block", clock=clock)
    resume(bar, 4)
    for _ in range(3):
        clock.now += 5.0
        bar.update(1)
    assert _lines(caplog) == [
        "pruning: block 4/10, elapsed 0s (resumed after 4)",
        "pruning: block 5/10, elapsed 5s",
        "pruning: block 6/10, elapsed 10s",
        "pruning: block 7/10, elapsed 15s, ETA 15s",
    ]


@pytest.mark.integration(reason="prunes a tiny model")
def test_a_real_ecoflap_pass_logs_no_resume(monkeypatch, caplog) -> None:
    from tiny_models import fresh_tiny

    import tamp

    monkeypatch.setenv("TAMP_PROGRESS", "log")
    caplog.set_level(logging.INFO, logger="tamp.core.progress")
    bundle = fresh_tiny("llava_next")
    samples = [bundle.example_sample(0)]
    config = {"method": {"pruner": "wanda", "allocation": {"name": "ecoflap"}}, "sparsity": {"target": 0.5},
              "device": "cpu", "progress": True}
    tamp.prune(bundle.model, samples, config, adapter=bundle.adapter)
    scoring = [line for line in _lines(caplog) if line.startswith("ecoflap scoring")]
    assert scoring and not any("resumed" in line for line in _lines(caplog))
