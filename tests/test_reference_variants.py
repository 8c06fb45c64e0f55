"""The variants the paper's rows came from, against transcriptions of the originals on fixed inputs.

Fixtures: tests/data/reference (written by tests/originals.py, which re-implements each original's
steps): the TAMP repository's SparseGPT (`fastprune`), its calibration draw (numpy's seed + choice)
and AMIA as the paper's Eqs. 3-5 define it (no token is its own neighbour) on outputs with exact
duplicates.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from originals import amia_paper, fastprune

from tamp.pruning.sparsegpt import sparsegpt_prune
from tamp.tokens.amia import nearest_others, select_tokens

pytestmark = pytest.mark.fast  # the unit tier: make test-fast

FIXTURES = Path(__file__).resolve().parent / "data" / "reference"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())


def _load(case: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURES / case["file"]))


# ------------------------------------------------------------------------------------------------ SparseGPT
@pytest.mark.parametrize("case", MANIFEST["sparsegpt_official"], ids=lambda c: c["file"])
def test_sparsegpt_on_failure_damping_is_the_tamp_repositorys_fastprune(case: dict) -> None:
    data = _load(case)
    args = (data["weight"], data["hessian"], case["sparsity"], case["prune_n"], case["prune_m"], case["blocksize"],
            case["percdamp"])
    expected = data["expected.pruned_weight"]
    got = sparsegpt_prune(*args, damping="on_failure")
    assert torch.equal(got == 0, expected == 0), "the pruned positions are the original's"
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-4
    # the original SparseGPT always damps H once: the same answer where fastprune needed exactly one damping
    # (the undamped H failed), another one where the undamped H factored (more tokens than columns)
    always = (sparsegpt_prune(*args, damping="always") - expected).abs().max().item()
    assert always < 1e-4 if case["damping_added_to_hessian"] == 1 else always > 1e-3


def test_the_fixtures_exercise_both_branches_of_fastprune() -> None:
    """Fewer tokens than columns: the undamped H fails Cholesky and is damped; more: it is used as it is."""
    cases = MANIFEST["sparsegpt_official"]
    assert any(c["damping_added_to_hessian"] > 0 and c["tokens"] < 64 for c in cases)
    assert any(c["damping_added_to_hessian"] == 0 for c in cases)


def test_sparsegpt_on_failure_replaces_infinite_hessian_entries_as_the_original() -> None:
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(16, 32, generator=gen)
    x = torch.randn(96, 32, generator=gen)
    hessian = 2 * x.T @ x / 96
    hessian[4, 4] = float("inf")  # an overflowed accumulation (fp16 activations)
    expected, _, _ = fastprune(weight, hessian, 0.5)
    got = sparsegpt_prune(weight, hessian, 0.5, damping="on_failure")
    assert torch.equal(got == 0, expected == 0)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_an_unknown_damping_is_refused_in_one_line(compose_cfg) -> None:
    from tamp.cli.schema import validate

    with pytest.raises(ValueError) as err:
        validate(compose_cfg(["method=sparsegpt", "method.damping=sometimes", "logger=none"]))
    assert "method.damping='sometimes' is unknown; valid: always, on_failure" in str(err.value)
    assert validate(compose_cfg(["method=sparsegpt_official", "logger=none"])).method.damping == "on_failure"


# ------------------------------------------------------------------------------------------------ calibration
def _llava_json(tmp_path: Path, start: int, end: int, total: int) -> Path:
    """A LLaVA JSON whose records [start, end) are the task's (image paths under sharegpt4v/), as split."""
    records = [
        {"id": str(i), "image": f"{'sharegpt4v' if start <= i < end else 'coco'}/{i}.jpg",
         "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A."}]}
        for i in range(total)
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("case", MANIFEST["official_draw"], ids=lambda c: f"{c['task_start']}-{c['task_end']}")
def test_calib_draw_official_picks_the_records_the_tamp_repository_picks(tmp_path: Path, case: dict) -> None:
    from tamp.data.calib import CalibConfig, draw, open_source, select_indices

    path = _llava_json(tmp_path, case["task_start"], case["task_end"], case["task_end"] + 40)
    cfg = CalibConfig(path=str(path), prefix="sharegpt4v", num_samples=case["nsamples"], seed=case["seed"],
                      draw="official").validate()
    source = open_source(cfg)
    indices = select_indices(source, cfg)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    assert draw(indices, cfg, "x") == case["expected"]
    assert np.array_equal(np.random.get_state()[1], numpy_state[1]) and random.getstate() == python_state
    python = draw(indices, CalibConfig(path=str(path), num_samples=case["nsamples"], seed=case["seed"]), "x")
    assert sorted(python) != sorted(case["expected"]), "the default draw picks other records"


def test_calib_draw_is_checked_in_one_line(compose_cfg) -> None:
    from tamp.cli.schema import validate

    with pytest.raises(ValueError, match=r"calib.draw='numpy' is unknown; valid: python, official"):
        validate(compose_cfg(["calib.draw=numpy", "logger=none"]))


# ------------------------------------------------------------------------------------------------ AMIA
def _classes(indices: list[int], inputs: torch.Tensor) -> list[int]:
    """Each index as the first index of its exact duplicate group (a twin's pick is the same statistics)."""
    return [int(next(j for j in range(len(inputs)) if torch.equal(inputs[j], inputs[i]))) for i in indices]


@pytest.mark.parametrize("case", MANIFEST["amia_paper"], ids=lambda c: c["file"])
def test_amia_paper_variant_is_the_papers_equations_on_duplicated_outputs(case: dict) -> None:
    data = _load(case)
    got = select_tokens(data["output"], data["attention"], data["modality_ids"], variant="paper").tolist()
    expected = data["expected.selected"].tolist()
    assert _classes(got, data["input"]) == _classes(expected, data["input"])
    # the Wanda statistic AMIA feeds: the sum of x^2 over the picked tokens' inputs
    x = data["input"]
    assert torch.allclose((x[got] ** 2).sum(0), (x[expected] ** 2).sum(0), rtol=1e-6)


def test_amia_fixture_cases_hold_duplicated_outputs() -> None:
    assert sum(bool(c["twins"]) for c in MANIFEST["amia_paper"]) >= 5


def test_a_token_is_never_its_own_neighbour_even_when_a_twin_is_nearer() -> None:
    """The official top-(k+1)-drop-first keeps the token itself when its twin's distance rounds below its own."""
    distance = torch.tensor(
        [
            [1e-7, 0.0, 0.5, 0.6, 0.7],  # token 0's twin (1) comes out nearer than token 0 itself
            [0.0, 0.0, 0.5, 0.6, 0.7],
            [0.5, 0.5, 0.0, 0.2, 0.3],
            [0.6, 0.6, 0.2, 0.0, 0.1],
            [0.7, 0.7, 0.3, 0.1, 0.0],
        ]
    )
    official = torch.topk(distance, 4, dim=1, largest=False).indices[:, 1:]
    assert 0 in official[0].tolist()  # the official rule: token 0 is its own neighbour
    ours = nearest_others(distance.clone(), 3)
    assert sorted(ours[0].tolist()) == [1, 2, 3] and all(i not in row for i, row in enumerate(ours.tolist()))


def test_nearest_others_breaks_ties_at_the_kth_place_by_index() -> None:
    # token 0 has four exact twins at distance 0: its 3 neighbours are the 3 lowest of them
    distance = torch.zeros(6, 6)
    distance[5, :] = distance[:, 5] = 0.4
    distance[5, 5] = 0.0
    assert nearest_others(distance.clone(), 3)[0].tolist() == [1, 2, 3]
    assert nearest_others(distance.clone(), 3)[4].tolist() == [0, 1, 2]


def test_the_transcription_itself_stops_on_mmd_and_penalises_neighbours() -> None:
    """The oracle is not trivially tamp's: a tiny hand-checkable case (2 tokens, far apart)."""
    outputs = np.array([[1.0, 0.0], [0.0, 1.0]])
    picked = amia_paper(outputs, np.array([0.3, 0.7]), np.array([1, 0]))
    assert picked[0] == 1  # the higher contribution (0.7 + e^-1 x 0.3 > 0.3 + e^-1 x 0.7) first
