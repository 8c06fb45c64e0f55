"""Agreement of the paper's variants with their transcribed originals, on the toy zoo model (128 samples).

Runs tamp.prune on the zoo model with its calibration split and prints:

- SparseGPT: the share of mask entries (weight == 0) equal between tamp's `damping=on_failure` and
  the transcription of the TAMP repository's `fastprune` (tests/originals.py, swapped in for tamp's
  math inside the same pipeline), and between `on_failure` and the original SparseGPT (`always`);
  whole model and per linear of block 0 (whose inputs are the same in every run).
- The calibration draw: `calib.draw=official` against the transcription of the official draw over
  the zoo's calibration records, and how many records it shares with the default draw.
- AMIA: on block 0, every (sample, linear) selection of tamp's paper variant against the paper's
  Eqs. 3-5 transcribed (float64 loops; a pick of an exact duplicate counts as the same token), and
  against the former paper variant (the official top-4-drop-first neighbours).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/variant_agreement.py [amia] [calibration] [sparsegpt]

Measured 2026-12-02 on the 2-core box (about 6 minutes): SparseGPT on_failure vs the transcribed
fastprune: 0 of 737,280 mask entries differ; on_failure vs the original: 0.93747 equal (block 0:
0.90-0.95 per linear); calib.draw=official equals the transcribed draw (128 of the zoo's 256
calibration records; 64 shared with the default draw); AMIA's paper variant equals the transcribed
Eqs. 3-5 in 896 of 896 block-0 selections (384 of them on outputs with duplicates), the former
top-4-drop-first paper variant in 805 (the 91 others all have duplicated outputs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from tamp.core.paths import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import originals  # noqa: E402  (tests/originals.py: the transcriptions)


def _settings(method: str, *overrides: str):
    from hydra import compose, initialize_config_dir

    from tamp.cli.schema import register_schema, validate

    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("run", overrides=["model=zoo_llava", "calib=zoo", f"method={method}", "logger=none",
                                        "runner.progress=false", *overrides])
    return validate(cfg)


def _prune(method: str, *overrides: str) -> dict[str, torch.Tensor]:
    """{linear name: pruned mask} of the zoo model pruned with `method` at 50%."""
    import tamp
    from tamp.data.sources import calibration_samples
    from tamp.models.named import load_named_model

    settings = _settings(method, *overrides)
    loaded = load_named_model(settings.model_settings())
    samples = calibration_samples(settings.calib_settings(), loaded.adapter, loaded.examples)
    tamp.prune(loaded.model, samples, settings.prune_config(), adapter=loaded.adapter)
    return {
        name: (module.weight == 0).clone()
        for name, module in loaded.model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".layers." in name and "language_model" in name
    }


def _agreement(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[int, int, dict[str, float]]:
    """(equal mask entries, all entries, {block-0 linear: share equal})."""
    same = sum(int((a[k] == b[k]).sum()) for k in a)
    total = sum(a[k].numel() for k in a)
    block0 = {k.rsplit(".", 1)[-1]: float((a[k] == b[k]).float().mean()) for k in a if ".layers.0." in k}
    return same, total, block0


def sparsegpt() -> None:
    import tamp.pruning.sparsegpt as pruners

    on_failure = _prune("sparsegpt_official")
    always = _prune("sparsegpt")
    real = pruners.sparsegpt_prune

    def transcribed(weight, hessian, sparsity, n, m, blocksize, percdamp, name=None, damping="always"):
        return originals.fastprune(weight, hessian, sparsity, n, m, blocksize, percdamp)[0].to(weight.dtype)

    pruners.sparsegpt_prune = transcribed
    try:
        original = _prune("sparsegpt_official")
    finally:
        pruners.sparsegpt_prune = real
    for label, (a, b) in {"on_failure vs transcribed fastprune": (on_failure, original),
                          "on_failure vs always (the original SparseGPT)": (on_failure, always)}.items():
        same, total, block0 = _agreement(a, b)
        print(f"SparseGPT {label}: whole model {same / total:.5f} ({total - same} of {total} entries differ); block 0 per linear "
              + ", ".join(f"{k} {v:.4f}" for k, v in block0.items()))


def calibration() -> None:
    from tamp.data.calib import draw, open_source, select_indices

    official = _settings("wanda", "calib.draw=official").calib_settings()
    default = _settings("wanda").calib_settings()
    indices = select_indices(open_source(official), official)
    ours = draw(indices, official, "zoo")
    expected = originals.official_draw(0, len(indices), official.num_samples, official.seed)
    shared = len(set(ours) & set(draw(indices, default, "zoo")))
    print(f"calibration: calib.draw=official equals the transcribed draw: {ours == [indices[i] for i in expected]} "
          f"({len(ours)} of {len(indices)} records); records shared with the default draw: {shared}")


def _former_paper_variant(z: torch.Tensor, attention: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The paper variant as it was before: the official top-(k+1)-drop-first neighbours."""
    import tamp.tokens.amia as amia

    real = amia.nearest_others
    amia.nearest_others = lambda distance, k: torch.topk(distance, k + 1, dim=1, largest=False).indices[:, 1:]
    try:
        return amia.select_tokens(z, attention, ids, variant="paper")
    finally:
        amia.nearest_others = real


def amia() -> None:
    import numpy as np

    import tamp.tokens.amia as selector

    seen = []
    real = selector.select_tokens

    def recording(z, attention, ids, **kwargs):
        picked = real(z, attention, ids, **kwargs)
        seen.append((z.detach().clone(), attention.detach().clone(), ids.detach().clone(), picked.clone()))
        return picked

    selector.select_tokens = recording
    try:
        _prune("amia", "runner.targets=[.*layers\\.0\\..*]")
    finally:
        selector.select_tokens = real
    same_paper = same_old = duplicated = old_differs_duplicated = 0
    for z, attention, ids, picked in seen:
        x = z.double().numpy()
        first = {i: next(j for j in range(len(x)) if np.array_equal(x[i], x[j])) for i in range(len(x))}
        twins = len(set(first.values())) < len(x)
        duplicated += twins
        ours = [first[int(i)] for i in picked]
        same_paper += ours == [first[i] for i in originals.amia_paper(x, attention.double().numpy(), ids.numpy())]
        old_same = ours == [first[int(i)] for i in _former_paper_variant(z, attention, ids)]
        same_old += old_same
        old_differs_duplicated += twins and not old_same
    print(f"AMIA paper variant, block 0 ({len(seen)} selections, {duplicated} with duplicated outputs): equal to "
          f"the transcribed Eqs. 3-5 in {same_paper}; equal to the former top-4-drop-first paper variant in {same_old} "
          f"(of the {len(seen) - same_old} that differ, {old_differs_duplicated} have duplicated outputs)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    parts = sys.argv[1:] or ["amia", "calibration", "sparsegpt"]  # amia first: loading the zoo builds its data
    for part in parts:
        {"amia": amia, "calibration": calibration, "sparsegpt": sparsegpt}[part]()
