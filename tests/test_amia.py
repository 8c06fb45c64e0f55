"""AMIA token selection: official-code fixtures, edge cases, the incremental MMD, the benchmark loop."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from official_data import load_official, official_cases

from tamp.tokens import amia
from tamp.tokens.amia import select_tokens, selected_mask

pytestmark = pytest.mark.fast  # the unit tier: make test-fast

REPO = Path(__file__).resolve().parents[1]


def _amia_cases() -> list[dict]:
    return official_cases("amia")


def _loop_module():
    spec = importlib.util.spec_from_file_location("amia_loop", REPO / "benchmarks" / "amia_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sample(num_tokens: int, width: int = 32, seed: int = 0, num_image: int | None = None):
    gen = torch.Generator().manual_seed(seed)
    num_image = num_tokens // 2 if num_image is None else num_image
    centre = torch.randn(width, generator=gen)
    image = centre + 0.8 * torch.randn(num_image, width, generator=gen)
    text = torch.randn(num_tokens - num_image, width, generator=gen)
    attention = torch.softmax(torch.randn(num_tokens, generator=gen) * 2, dim=0)
    ids = torch.cat(
        [torch.ones(num_image, dtype=torch.long), torch.zeros(num_tokens - num_image, dtype=torch.long)]
    )
    return torch.cat([image, text]), attention, ids


def _check_valid(indices: torch.Tensor, num_tokens: int) -> None:
    assert indices.dtype == torch.long and indices.dim() == 1
    assert 1 <= indices.numel() <= num_tokens
    assert indices.unique().numel() == indices.numel()
    assert int(indices.min()) >= 0 and int(indices.max()) < num_tokens


@pytest.mark.parametrize("case", _amia_cases(), ids=lambda c: c["file"])
def test_amia_fixture_reference_variant(case: dict) -> None:
    data = load_official(case["file"])
    sq_sum = torch.zeros(data["weight"].shape[1], dtype=torch.float64)
    count = 0
    for i in range(case["samples"]):
        indices = select_tokens(
            data[f"s{i}.output"],
            data[f"s{i}.attention"],
            data[f"s{i}.image_mask"].long(),
            variant="reference",
        )
        expected = data[f"s{i}.expected.selected"]
        assert torch.equal(selected_mask(indices, expected.numel()), expected)
        assert indices.numel() == int(data[f"s{i}.selected_count"])
        x = data[f"s{i}.input"][indices].double()
        sq_sum += (x * x).sum(0)
        count += indices.numel()
    # Wanda's running mean over selected tokens, weighted by token count == total sum / total count.
    scaler_row = sq_sum / count
    assert count == int(data["expected.token_count"]) == case["token_count"]
    torch.testing.assert_close(scaler_row, data["expected.scaler_row"].double(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_text_only_and_single_image_token(variant: str) -> None:
    outputs, attention, _ = _sample(30, seed=1)
    _check_valid(select_tokens(outputs, attention, torch.zeros(30, dtype=torch.long), variant), 30)
    ids = torch.zeros(30, dtype=torch.long)
    ids[4] = 1
    _check_valid(select_tokens(outputs, attention, ids, variant), 30)


@pytest.mark.parametrize("num_tokens", [1, 2, 3, 4])
def test_fewer_tokens_than_neighbours(num_tokens: int) -> None:
    outputs, attention, ids = _sample(num_tokens, seed=num_tokens)
    indices = select_tokens(outputs, attention, ids, knn=3)
    _check_valid(indices, num_tokens)
    if num_tokens == 1:
        assert indices.tolist() == [0]


def test_empty_sample() -> None:
    assert select_tokens(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)).numel() == 0


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_identical_tokens_terminate(variant: str) -> None:
    outputs = torch.ones(40, 16)
    attention = torch.full((40,), 1 / 40)
    ids = torch.tensor([1] * 20 + [0] * 20)
    _check_valid(select_tokens(outputs, attention, ids, variant), 40)


def test_zero_threshold_selects_every_token_once() -> None:
    outputs, attention, ids = _sample(25, seed=2)
    indices = select_tokens(outputs, attention, ids, mmd_scale=0.0)
    assert sorted(indices.tolist()) == list(range(25))
    assert int(indices[0]) == int(
        torch.argmax(amia._prepare(outputs, attention, ids, "paper", 3, 1.0, 0.2, 0.0).gain)
    )


@pytest.mark.parametrize("div", [0.0, -0.3, float("nan")])
def test_nonpositive_or_undefined_diversity_selects_all(div: float, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amia, "score_tensor", lambda sims, defined: torch.tensor(div, dtype=torch.float64))
    outputs, attention, ids = _sample(12, seed=5)
    indices = select_tokens(outputs, attention, ids)
    assert sorted(indices.tolist()) == list(range(12))


def test_incremental_mmd_matches_direct_evaluation() -> None:
    outputs, attention, ids = _sample(40, seed=3)
    problem = amia._prepare(outputs, attention, ids, "paper", 3, 1.0, 0.2, 0.1)
    steps = list(amia._host_steps(problem))
    order = torch.tensor([s for s, _ in steps])
    kernel = problem.kernel.double()
    for t in range(40):
        s = order[: t + 1]
        direct = kernel.mean() + kernel[s][:, s].mean() - 2 * kernel[:, s].mean()
        assert steps[t][1] == pytest.approx(max(float(direct), 0.0), abs=1e-9)


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_chunking_does_not_change_the_result(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunked path (CUDA's, run here on CPU tensors with the CPU schedule) against the host loop."""
    outputs, attention, ids = _sample(60, seed=4)
    expected = select_tokens(outputs, attention, ids)
    monkeypatch.setattr(amia, "_CPU_CHUNK", chunk)
    problem = amia._prepare(outputs, attention, ids, "paper", 3, 1.0, 0.2, 0.1)
    assert torch.equal(amia._select_by_order(problem), expected)


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("seed", [0, 1])
def test_benchmark_loop_agrees(variant: str, seed: int) -> None:
    loop = _loop_module()
    outputs, attention, ids = _sample(90, width=48, seed=10 + seed, num_image=55)
    expected = loop.loop_select_tokens(outputs, attention, ids, variant=variant)
    assert torch.equal(select_tokens(outputs, attention, ids, variant=variant), expected)


def test_bad_arguments() -> None:
    outputs, attention, ids = _sample(10)
    with pytest.raises(ValueError, match="variant"):
        select_tokens(outputs, attention, ids, variant="exact")
    with pytest.raises(ValueError, match=r"\[T=10\]"):
        select_tokens(outputs, attention[:5], ids)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_chunk_schedule_covers_every_step_once(device: str) -> None:
    ranges = list(amia._chunks(1000, torch.device(device)))
    assert ranges[0][0] == 0 and ranges[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert max(stop - start for start, stop in ranges) <= max(amia._CPU_CHUNK, *amia._CUDA_CHUNKS)
