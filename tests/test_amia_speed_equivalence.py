"""AMIA's CPU fast paths pick exactly the tokens, in the same order, that the selection they replaced picks.

The plain form below is `tamp.tokens.amia.select_tokens` as it was before them (the T x T preparation
with torch.topk for the kNN graph, and the chunked tensor-op greedy steps, the stop read every 8 steps),
written out here. The inputs hit ties (duplicated rows), zero rows, one modality only, NaN rows, T = 1
and 2, both variants, and a zero threshold (every step of the MMD recurrence). `row_smallest`, the
kNN search that replaced torch.topk, is also checked against torch.topk itself on awkward matrices.

Run as a script for the speed comparison (one process, one thread, best of N):
    .venv/bin/python tests/test_amia_speed_equivalence.py
"""

from __future__ import annotations

import time

import pytest
import torch

from tamp.sparsity.das import score_tensor, similarity_terms, unit_rows
from tamp.tokens import amia
from tamp.tokens.amia import select_tokens

pytestmark = pytest.mark.fast  # the unit tier: make test-fast


# --- the plain form: AMIA's selection before the host-side greedy loop --------------------------------
def _plain_gram(units: torch.Tensor, block: int = 128) -> torch.Tensor:
    # rows per product: tamp's CPU block (128 since the Gram's tighter triangle; the products' bits are
    # BLAS's own, so the plain form uses the same shapes and this file tests the fast paths after it)
    num_tokens = units.shape[0]
    if num_tokens <= block:
        gram = units @ units.T
        return torch.triu(gram) + torch.triu(gram, 1).T
    gram = torch.empty(num_tokens, num_tokens, dtype=units.dtype, device=units.device)
    for start in range(0, num_tokens, block):
        stop = min(num_tokens, start + block)
        gram[start:stop, start:] = units[start:stop] @ units[start:].T
        diag = gram[start:stop, start:stop]
        diag.copy_(torch.triu(diag) + torch.triu(diag, 1).T)
        gram[stop:, start:stop] = gram[start:stop, stop:].T
    return gram


def _plain_nearest_others(distance: torch.Tensor, k: int) -> torch.Tensor:
    num_tokens = distance.shape[0]
    if k <= 0:
        return torch.empty(num_tokens, 0, dtype=torch.long, device=distance.device)
    diagonal = distance.diagonal().clone()
    distance.fill_diagonal_(float("inf"))
    try:
        extra = min(k + 1, num_tokens - 1)
        values, index = torch.topk(distance, extra, dim=1, largest=False)
        index = index[:, :k].clone()
        if extra > k:
            tied = torch.nonzero(values[:, k - 1] == values[:, k]).flatten()
            if tied.numel():
                index[tied] = torch.sort(distance[tied], dim=1, stable=True).indices[:, :k]
    finally:
        distance.diagonal().copy_(diagonal)
    return index


def _plain_prepare(outputs, attention, modality_ids, variant, knn, graph_gamma, penalty_gamma, mmd_scale):
    units = unit_rows(outputs)
    similarity = _plain_gram(units)
    sims, defined = similarity_terms(outputs, modality_ids, variant, similarity=similarity, units=units)
    div = score_tensor(sims, defined).nan_to_num(0.0)
    threshold = mmd_scale * div.clamp_min(0.0).sqrt()
    distance = similarity.neg_().add_(1.0)
    k = min(knn, outputs.shape[0] - 1)
    attn = attention.detach().to(device=units.device, dtype=torch.float32)
    if variant == "paper":
        neighbours = _plain_nearest_others(distance, k)
    else:
        neighbours = torch.topk(distance, k + 1, dim=1, largest=False).indices[:, 1:]
    near = distance.gather(1, neighbours)
    gain = attn + (torch.exp(-graph_gamma * near) * attn[neighbours]).sum(1)
    penalty = torch.exp(-penalty_gamma * near)
    kernel = distance.neg_().exp_()
    return gain, neighbours, penalty, kernel, kernel.sum(0, dtype=torch.float64), threshold


class _PlainGreedy:
    def __init__(self, gain, neighbours, penalty, kernel, col_sums) -> None:
        num_tokens = gain.shape[0]
        self.neighbours, self.penalty, self.kernel, self.col_sums = neighbours, penalty, kernel, col_sums
        self.num_tokens = num_tokens
        self.gain = gain.clone()
        self.order = torch.empty(num_tokens, dtype=torch.long)
        self.trace = torch.empty(num_tokens, dtype=torch.float64)
        self.row_acc = torch.zeros(num_tokens, dtype=torch.float64)
        self.diag = kernel.diagonal().double()
        self.pair_sum = torch.zeros(1, dtype=torch.float64)
        self.cross_sum = torch.zeros(1, dtype=torch.float64)
        self.full_mean = col_sums.sum() / float(num_tokens) ** 2

    def step(self, t: int) -> None:
        gain = self.gain
        s = torch.argmax(gain, dim=0, keepdim=True)
        picked = gain.index_select(0, s).clamp_min(0.0)
        nbrs = self.neighbours.index_select(0, s).view(-1)
        gain.index_add_(0, nbrs, self.penalty.index_select(0, s).view(-1) * picked, alpha=-1.0)
        gain.index_fill_(0, s, float("-inf"))
        self.order[t : t + 1] = s
        self.pair_sum += 2.0 * self.row_acc.index_select(0, s) + self.diag.index_select(0, s)
        self.row_acc += self.kernel.index_select(0, s).view(-1)
        self.cross_sum += self.col_sums.index_select(0, s)
        count = float(t + 1)
        mmd = self.full_mean + self.pair_sum / count**2 - 2.0 * self.cross_sum / (self.num_tokens * count)
        self.trace[t : t + 1] = mmd.clamp_min(0.0)


def _plain_greedy(outputs, attention, modality_ids, variant="paper", knn=3, graph_gamma=1.0,
                  penalty_gamma=0.2, mmd_scale=0.1) -> tuple[_PlainGreedy, torch.Tensor]:
    *problem, threshold = _plain_prepare(
        outputs, attention, modality_ids, variant, knn, graph_gamma, penalty_gamma, mmd_scale
    )
    return _PlainGreedy(*problem), threshold


def plain_select_tokens(outputs, attention, modality_ids, variant="paper", knn=3, graph_gamma=1.0,
                        penalty_gamma=0.2, mmd_scale=0.1) -> torch.Tensor:
    """The selection as it was: tensor-op greedy steps, the stop read after every 8 of them."""
    num_tokens = outputs.shape[0]
    if num_tokens == 0:
        return torch.empty(0, dtype=torch.long)
    greedy, threshold = _plain_greedy(
        outputs, attention, modality_ids, variant, knn, graph_gamma, penalty_gamma, mmd_scale
    )
    for start in range(0, num_tokens, 8):
        stop = min(num_tokens, start + 8)
        for t in range(start, stop):
            greedy.step(t)
        hits = torch.nonzero(greedy.trace[start:stop] < threshold)
        if hits.numel():
            return greedy.order[: start + int(hits[0, 0]) + 1]
    return greedy.order


# --- inputs --------------------------------------------------------------------------------------------
KINDS = ("random", "clustered", "duplicated", "zero_rows", "one_modality", "nan_row")


def awkward_sample(num_tokens: int, width: int, kind: str, seed: int):
    """(outputs, attention, modality ids) of one sample; `kind` picks what makes it awkward."""
    gen = torch.Generator().manual_seed(seed)
    common = torch.randn(width, generator=gen)
    factors = torch.randn(4, width, generator=gen)
    weights = torch.randn(num_tokens, 4, generator=gen)
    outputs = 1.5 * common + weights @ factors + torch.randn(num_tokens, width, generator=gen)
    attention = torch.softmax(torch.randn(num_tokens, generator=gen), dim=0)
    ids = (torch.rand(num_tokens, generator=gen) < 0.8).long()  # image 1, text 0
    if kind == "random":
        outputs = torch.randn(num_tokens, width, generator=gen)
    elif kind == "clustered":  # few distinct directions: near ties everywhere
        outputs = factors[torch.randint(0, 4, (num_tokens,), generator=gen)] + 0.05 * outputs
    elif kind == "duplicated":  # exact twins (LLaVA-NeXT's repeated image-newline token), tied attention
        source = torch.randint(0, max(1, num_tokens // 3), (num_tokens,), generator=gen)
        outputs, attention = outputs[source], attention[source]
    elif kind == "zero_rows":
        outputs[torch.rand(num_tokens, generator=gen) < 0.2] = 0.0
    elif kind == "one_modality":
        ids = torch.zeros(num_tokens, dtype=torch.long)
    elif kind == "nan_row":
        outputs[num_tokens // 2] = float("nan")
    return outputs, attention, ids


CASES = [(t, w, kind) for t in (1, 2, 3, 5, 40, 257) for w, kind in zip((3, 16, 48, 8, 64, 24), KINDS, strict=True)]
CASES += [(700, 8, "duplicated"), (700, 12, "clustered"), (600, 32, "random")]


@pytest.mark.parametrize("variant", amia.VARIANTS)
@pytest.mark.parametrize(("num_tokens", "width", "kind"), CASES)
def test_selection_is_the_plain_loops(variant: str, num_tokens: int, width: int, kind: str) -> None:
    for seed in range(2):
        sample = awkward_sample(num_tokens, width, kind, seed)
        for mmd_scale in (0.1, 0.0, 0.3):  # 0.0: every token, every step of the MMD recurrence
            got = select_tokens(*sample, variant=variant, mmd_scale=mmd_scale)
            expected = plain_select_tokens(*sample, variant=variant, mmd_scale=mmd_scale)
            assert got.dtype == torch.long
            assert torch.equal(got, expected), (kind, seed, mmd_scale)


@pytest.mark.parametrize("variant", amia.VARIANTS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_mmd_value_is_bitwise_the_plain_recurrences(variant: str, kind: str) -> None:
    """The stop compares these values with the threshold: equal bits, not just equal picks so far."""
    sample = awkward_sample(300, 32, kind, seed=7)
    plain, _ = _plain_greedy(*sample, variant=variant)
    for t in range(300):
        plain.step(t)
    problem = amia._prepare(*sample, variant, 3, 1.0, 0.2, 0.1)
    steps = list(amia._host_steps(problem))
    assert [s for s, _ in steps] == plain.order.tolist()
    trace = torch.tensor([mmd for _, mmd in steps], dtype=torch.float64)
    torch.testing.assert_close(trace, plain.trace, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("variant", amia.VARIANTS)
@pytest.mark.parametrize(("num_tokens", "width", "kind"), CASES)
def test_ordered_path_agrees_with_the_host_loop(variant: str, num_tokens: int, width: int, kind: str) -> None:
    """The CUDA path (picks on the host, each chunk's prefix MMD^2 at once), run here on CPU tensors: the
    same picks and the same stop as the one-pick-at-a-time recurrence, for every chunk boundary."""
    for seed in range(2):
        sample = awkward_sample(num_tokens, width, kind, seed)
        for mmd_scale in (0.1, 0.0, 0.3):
            problem = amia._prepare(*sample, variant, 3, 1.0, 0.2, mmd_scale)
            host = amia._select_on_host(problem)
            ordered = amia._select_by_order(problem)
            assert ordered.dtype == torch.long
            assert torch.equal(ordered, host), (kind, seed, mmd_scale)


@pytest.mark.parametrize("schedule", ["cpu", "cuda"])
def test_ordered_path_stops_inside_every_chunk(schedule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stops that fall on each chunk's first, middle and last pick (the prefix sums carry over chunks),
    with the CPU's chunks and with CUDA's (16, 32, 64, 128, ...: only the device's type is read)."""
    chunks = amia._chunks
    monkeypatch.setattr(amia, "_chunks", lambda num_tokens, device: chunks(num_tokens, torch.device(schedule)))
    sample = awkward_sample(600, 32, "random", seed=5)
    problem = amia._prepare(*sample, "paper", 3, 1.0, 0.2, 0.0)
    steps = list(amia._host_steps(problem))
    tested = 0
    for stop in (0, 1, 15, 16, 17, 47, 48, 49, 111, 112, 240, 599):
        if stop + 1 >= len(steps):
            continue
        # a threshold just above this step's MMD^2 and below every earlier one stops exactly here
        earlier = min((m for _, m in steps[:stop]), default=float("inf"))
        mmd = steps[stop][1]
        if not mmd < earlier:
            continue
        problem.threshold = torch.tensor(min(earlier, mmd * (1 + 1e-9) + 1e-300), dtype=torch.float64)
        got = amia._select_by_order(problem)
        assert got.numel() == stop + 1 and torch.equal(got, amia._select_on_host(problem)), stop
        tested += 1
    assert tested >= 6  # the MMD^2 trace of this sample falls to a new low at most of these steps


def _awkward_matrix(rows: int, width: int, kind: int, gen: torch.Generator) -> torch.Tensor:
    values = torch.rand(rows, width, generator=gen)
    if kind == 1:  # a few distinct values: ties everywhere
        values = (values * 6).floor()
    elif kind == 2:
        values[torch.rand(rows, width, generator=gen) < 0.01] = float("nan")
    elif kind == 3:
        values[torch.rand(rows, width, generator=gen) < 0.3] = float("inf")
        values[torch.rand(rows, width, generator=gen) < 0.002] = float("-inf")
    elif kind == 4:  # sorted rows: the heap's worst case
        values = values.sort(dim=1, descending=bool(rows % 2)).values
    elif kind == 5:  # duplicated columns, zeros of both signs
        values[:, torch.randint(0, width, (width // 3,), generator=gen)] = values[:, : width // 3].clone()
        values[torch.rand(rows, width, generator=gen) < 0.01] = 0.0
        values[torch.rand(rows, width, generator=gen) < 0.01] = -0.0
    return values


@pytest.mark.parametrize("kind", range(6))
def test_row_smallest_is_topk(kind: int) -> None:
    gen = torch.Generator().manual_seed(kind)
    for width in (200, 256, 257, 300, 450, 600, 1031, 2900):
        rows = int(torch.randint(1, 40, (1,), generator=gen))
        matrix = _awkward_matrix(rows, width, kind, gen)
        for view in (matrix, torch.cat([matrix, matrix[:, :5]], 1)[:, :width]):  # contiguous and strided rows
            for count in range(1, 7):
                values, index = amia.row_smallest(view, count)
                expected = torch.topk(view, count, dim=1, largest=False)
                assert torch.equal(index, expected.indices), (kind, width, count)
                same = values.view(torch.int32) == expected.values.view(torch.int32)
                assert bool((same | (values.isnan() & expected.values.isnan())).all())


def test_similarity_is_exactly_symmetric_and_the_plain_products() -> None:
    for num_tokens in (1, 7, 128, 129, 256, 300, 600):
        units = unit_rows(awkward_sample(num_tokens, 40, "duplicated", seed=num_tokens)[0])
        gram = amia._cosine_gram(units)
        assert torch.equal(gram, gram.T)
        assert torch.equal(gram, _plain_gram(units))
        # one full product agrees to float32 rounding (its bits are BLAS's choice for that shape)
        torch.testing.assert_close(gram, units @ units.T, rtol=0, atol=1e-5)


# --- speed: python tests/test_amia_speed_equivalence.py -------------------------------------------------
def _best_ms(fn, repeats: int) -> float:
    """Best CPU time of the calling thread (all the work with one torch thread): steadier than wall time
    on a machine shared with other jobs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best * 1e3


def benchmark_sample(num_tokens: int, width: int, seed: int = 0):
    """A decoder-like output: a shared direction, a part that drifts along the positions (a random walk in
    32 dimensions) and noise. Cosines spread over ~0.3-0.85, as on the pipeline benchmark's Llama outputs,
    so the greedy loop runs some tens of steps, not the handful that i.i.d. rows need."""
    gen = torch.Generator().manual_seed(seed)
    common = torch.randn(width, generator=gen)
    path = torch.randn(num_tokens, 32, generator=gen).cumsum(0) / num_tokens**0.5
    drift = 2.0 * path @ torch.randn(32, width, generator=gen) / 32**0.5
    outputs = common + drift + torch.randn(num_tokens, width, generator=gen)
    attention = torch.softmax(0.1 * torch.randn(num_tokens, generator=gen), dim=0)
    ids = torch.zeros(num_tokens, dtype=torch.long)
    ids[: int(0.92 * num_tokens)] = 1
    return outputs, attention, ids


def main(seeds: int = 4) -> None:
    """Old (the plain form) vs new select_tokens, per call, averaged over `seeds` samples of each shape."""
    torch.set_num_threads(1)
    for num_tokens, width, repeats in ((600, 256, 20), (600, 1024, 10), (600, 2816, 5), (2900, 1024, 3),
                                       (2900, 2816, 2)):
        samples = [benchmark_sample(num_tokens, width, seed) for seed in range(seeds)]
        picks = [select_tokens(*sample).numel() for sample in samples]
        assert all(torch.equal(select_tokens(*x), plain_select_tokens(*x)) for x in samples)
        old = new = 0.0
        for sample in samples:
            best_old = best_new = float("inf")
            for _ in range(2):  # interleaved rounds, best of all
                best_old = min(best_old, _best_ms(lambda: plain_select_tokens(*sample), repeats))  # noqa: B023
                best_new = min(best_new, _best_ms(lambda: select_tokens(*sample), repeats))  # noqa: B023
            old, new = old + best_old / seeds, new + best_new / seeds
        print(f"T={num_tokens:5d} C={width:5d} picks={picks}  old {old:8.2f} ms  new {new:8.2f} ms (CPU)"
              f"  new/old {new / old:.3f}")


if __name__ == "__main__":
    main()
