"""DAS diversity terms: official-code fixtures, the O(T*C) identities against brute force, the accumulator."""

from __future__ import annotations

import math

import pytest
import torch
from official_data import load_official, official_cases

from tamp.sparsity.das import DiversityAccumulator, all_token, diversity, term_keys

pytestmark = pytest.mark.fast  # the unit tier: make test-fast


def _das_cases() -> list[dict]:
    return official_cases("das")


def _load(name: str) -> dict[str, torch.Tensor]:
    return load_official(name)


def _brute_force(outputs: torch.Tensor, ids: torch.Tensor, variant: str) -> dict:
    """Pairwise means from the full float64 cosine matrix, the definitions written out."""
    u = torch.nn.functional.normalize(outputs.double(), dim=-1)
    sim = u @ u.T
    out: dict = {}
    codes = sorted(set(ids.tolist()))
    for m in codes:
        idx = (ids == m).nonzero().flatten()
        if idx.numel() < 2:
            continue
        block = sim[idx][:, idx]
        if variant == "reference":
            upper = block[torch.triu(torch.ones_like(block, dtype=torch.bool), diagonal=1)]
            out[m] = upper[upper > 0].mean().item()
        else:
            off = ~torch.eye(idx.numel(), dtype=torch.bool)
            out[m] = block[off].mean().item()
    for i, a in enumerate(codes):
        for b in codes[i + 1 :]:
            out[(a, b)] = sim[ids == a][:, ids == b].mean().item()
    return out


@pytest.mark.parametrize("case", _das_cases(), ids=lambda c: c["file"])
def test_das_fixture_reference_and_paper(case: dict) -> None:
    data = _load(case["file"])
    ids = data["image_mask"].long()  # 1 image, 0 text
    ref = diversity(data["output"], ids, variant="reference")
    expected = case["reference_similarity"]
    assert ref.similarity[1] == pytest.approx(expected["v"], abs=1e-5)
    assert ref.similarity[0] == pytest.approx(expected["l"], abs=1e-5)
    assert ref.similarity[(0, 1)] == pytest.approx(expected["vl"], abs=1e-5)

    paper = diversity(data["output"], ids, variant="paper")
    expected = case["paper_distance"]
    assert paper.intra[1] == pytest.approx(expected["d_v"], abs=1e-5)
    assert paper.intra[0] == pytest.approx(expected["d_l"], abs=1e-5)
    assert paper.inter[(0, 1)] == pytest.approx(expected["d_vl"], abs=1e-5)
    assert paper.score == pytest.approx(sum(expected.values()) / 3, abs=1e-5)


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_modalities_match_brute_force(variant: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor([0] * 17 + [2] * 9 + [3] * 13)[torch.randperm(39, generator=gen)]
    outputs = torch.randn(39, 24, generator=gen) + 0.7 * torch.randn(24, generator=gen)
    terms = diversity(outputs, ids, variant=variant)
    expected = _brute_force(outputs, ids, variant)
    assert set(terms.similarity) == set(expected) == {0, 2, 3, (0, 2), (0, 3), (2, 3)}
    for key, sim in expected.items():
        assert terms.similarity[key] == pytest.approx(sim, abs=1e-6)
        distance = terms.intra[key] if isinstance(key, int) else terms.inter[key]
        assert distance == pytest.approx(1.0 - sim, abs=1e-6)
    assert terms.score == pytest.approx(sum(1 - s for s in expected.values()) / 6, abs=1e-6)


def test_terms_exist_only_where_defined() -> None:
    outputs = torch.randn(6, 8, generator=torch.Generator().manual_seed(3))
    one_image = diversity(outputs, torch.tensor([1, 0, 0, 0, 0, 0]))
    assert set(one_image.intra) == {0} and set(one_image.inter) == {(0, 1)}
    text_only = diversity(outputs, torch.zeros(6, dtype=torch.long))
    assert set(text_only.intra) == {0} and not text_only.inter
    assert text_only.score == pytest.approx(text_only.intra[0])
    single = diversity(outputs[:1], torch.zeros(1, dtype=torch.long))
    assert not single.intra and not single.inter and math.isnan(single.score)


def test_zero_rows_and_bad_variant() -> None:
    outputs = torch.randn(5, 4, generator=torch.Generator().manual_seed(4))
    outputs[2] = 0.0
    ids = torch.zeros(5, dtype=torch.long)
    expected = _brute_force(outputs, ids, "paper")[0]  # a zero row has cosine 0 with everything
    assert diversity(outputs, ids).similarity[0] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="variant"):
        diversity(outputs, ids, variant="exact")


def test_all_token_is_one_term_over_all_pairs() -> None:
    gen = torch.Generator().manual_seed(5)
    outputs = torch.randn(20, 12, generator=gen)
    ids = torch.randint(0, 2, (20,), generator=gen)
    expected = 1.0 - _brute_force(outputs, torch.zeros(20, dtype=torch.long), "paper")[0]
    assert all_token(outputs) == pytest.approx(expected, abs=1e-6)
    acc = DiversityAccumulator(all_token=True)
    acc.update(outputs, ids)
    acc.update(outputs[:7])
    assert acc.score == pytest.approx((all_token(outputs) + all_token(outputs[:7])) / 2, abs=1e-12)


def test_accumulator_averages_each_term_where_defined() -> None:
    gen = torch.Generator().manual_seed(6)
    a = torch.randn(10, 16, generator=gen)
    b = torch.randn(7, 16, generator=gen)
    ids_a = torch.tensor([1] * 4 + [0] * 6)
    ids_b = torch.zeros(7, dtype=torch.long)  # text-only: no image term, no inter term
    acc = DiversityAccumulator()
    acc.update(a, ids_a)
    acc.update(b, ids_b)
    ta, tb = diversity(a, ids_a), diversity(b, ids_b)
    result = acc.result()
    assert result.intra[0] == pytest.approx((ta.intra[0] + tb.intra[0]) / 2, abs=1e-12)
    assert result.intra[1] == pytest.approx(ta.intra[1], abs=1e-12)
    assert result.inter[(0, 1)] == pytest.approx(ta.inter[(0, 1)], abs=1e-12)
    assert acc.score == pytest.approx(
        (result.intra[0] + result.intra[1] + result.inter[(0, 1)]) / 3, abs=1e-12
    )
    sums, counts = acc.tensors()
    assert sums.dtype == counts.dtype == torch.float64 and sums.shape == (len(term_keys()),)
    assert counts[:2].tolist() == [2.0, 1.0]


def test_accumulator_tensors_sum_like_all_reduce() -> None:
    gen = torch.Generator().manual_seed(7)
    samples = [
        (torch.randn(n, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen)) for n in (5, 9, 2, 6)
    ]
    whole = DiversityAccumulator(variant="reference")
    ranks = [DiversityAccumulator(variant="reference") for _ in range(2)]
    for i, (out, ids) in enumerate(samples):
        whole.update(out, ids)
        ranks[i % 2].update(out, ids)
    for mine, theirs in zip(ranks[0].tensors(), ranks[1].tensors(), strict=True):
        mine += theirs  # what an in-place all-reduce(sum) does on rank 0
    assert torch.allclose(ranks[0].tensors()[0], whole.tensors()[0], rtol=0, atol=1e-12)
    assert torch.equal(ranks[0].tensors()[1], whole.tensors()[1])
    assert ranks[0].score == pytest.approx(whole.score, abs=1e-12)
    merged = DiversityAccumulator(variant="reference")
    merged.merge(ranks[1])
    assert torch.equal(merged.tensors()[1], ranks[1].tensors()[1])


def test_accumulator_empty_score_is_nan() -> None:
    assert math.isnan(DiversityAccumulator().score)
