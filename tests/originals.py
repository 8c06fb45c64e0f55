"""Transcriptions of what the paper's rows came from, written here step by step as test oracles.

Each function re-implements, independently of tamp's library code, one original procedure the paper's
numbers depend on:

- `fastprune`: the TAMP repository's SparseGPT (llava/pruners/sparsegpt_pruner.py, `SparseGPT.fastprune`,
  github.com/G-JWLee/TAMP): the Cholesky factor of the *undamped* Hessian, with percdamp x mean(diag H)
  added to the diagonal only after a failed factorisation (and again after each further failure); the
  same for H^-1's upper factor with percdamp x mean(|diag H^-1|); +-inf entries replaced by the
  0.999 / 0.001 quantiles; then the blocked OBS pass with the `<=` block threshold.
- `official_draw`: the TAMP repository's calibration subset (llava/evaluate.py seeds numpy with
  `np.random.seed(args.seed)`; llava/pruners/data_loader.py then draws
  `np.random.choice(np.arange(task_start_id, task_end_id), size=nsamples, replace=False)`).
- `amia_paper`: AMIA as the paper's Eqs. 3-5 state it (a token's neighbours N_i are the 3 nearest
  *other* tokens), in float64 with plain loops: the graph score, the greedy pick with the neighbour
  penalty, the MMD stop against 0.1 x sqrt(div) with div the DAS diversity of the sample.

`python tests/originals.py` writes the fixtures tests/data/reference/*.safetensors and manifest.json
(fixed seeds; every AMIA case is kept only if no near-tie of float rounding could change its answer).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "data" / "reference"


# ------------------------------------------------------------------------------------------------ SparseGPT
def _quantile_replace_inf(m: torch.Tensor) -> None:
    if (torch.isinf(m) & (m > 0)).any():
        m[torch.isinf(m) & (m > 0)] = torch.quantile(m, 0.999)
    if (torch.isinf(m) & (m < 0)).any():
        m[torch.isinf(m) & (m < 0)] = torch.quantile(m, 0.001)


def _cholesky_adding(m: torch.Tensor, damp: torch.Tensor, upper: bool) -> tuple[torch.Tensor, int]:
    """torch.linalg.cholesky until it succeeds without NaN, adding `damp` to the diagonal after each failure."""
    added = 0
    idx = torch.arange(m.shape[0])
    while True:
        try:
            factor = torch.linalg.cholesky(m, upper=upper)
            if not torch.isnan(factor).any():
                return factor, added
        except RuntimeError:  # torch.linalg.LinAlgError: not positive definite
            pass
        m[idx, idx] += damp
        added += 1
        if added > 10_000:
            raise RuntimeError("no positive definite factor")


def fastprune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    prune_n: int = 0,
    prune_m: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[torch.Tensor, int, int]:
    """(pruned weight, damping additions to H, damping additions to H^-1) as the TAMP repository prunes."""
    w = weight.clone().float()
    h = hessian.clone().float()
    columns = w.shape[1]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    _quantile_replace_inf(h)
    lower, first = _cholesky_adding(h, percdamp * torch.mean(torch.diag(h)), upper=False)
    hinv = torch.cholesky_inverse(lower)
    _quantile_replace_inf(hinv)
    hinv, second = _cholesky_adding(hinv, percdamp * torch.mean(torch.diag(hinv).abs()), upper=True)

    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        if prune_n == 0:
            score = w1**2 / torch.diag(hinv1).reshape(1, -1) ** 2
            threshold = torch.sort(score.flatten())[0][int(score.numel() * sparsity)]
            mask1 = score <= threshold
        else:
            mask1 = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(count):
            col = w1[:, i]
            d = hinv1[i, i]
            if prune_n != 0 and i % prune_m == 0:
                score = w1[:, i : i + prune_m] ** 2 / torch.diag(hinv1)[i : i + prune_m].reshape(1, -1) ** 2
                mask1.scatter_(1, i + torch.topk(score, prune_n, dim=1, largest=False)[1], True)
            q = col.clone()
            q[mask1[:, i]] = 0
            q1[:, i] = q
            err = (col - q) / d
            w1[:, i:] -= err.unsqueeze(1).matmul(hinv1[i, i:].unsqueeze(0))
            err1[:, i] = err
        w[:, i1:i2] = q1
        w[:, i2:] -= err1.matmul(hinv[i1:i2, i2:])
    return w, first, second


def hessian_of(inputs: torch.Tensor) -> torch.Tensor:
    """H as SparseGPT accumulates it, one sample at a time: a running (2 / n) sum X^T X."""
    columns = inputs.shape[-1]
    h = torch.zeros(columns, columns)
    n = 0
    for sample in inputs:
        h *= n / (n + 1)
        n += 1
        x = math.sqrt(2 / n) * sample.float().t()
        h += x.matmul(x.t())
    return h


# ------------------------------------------------------------------------------------------------ calibration
def official_draw(task_start: int, task_end: int, nsamples: int, seed: int) -> list[int]:
    """The record indices (into the whole JSON) the TAMP repository calibrates on."""
    np.random.seed(seed)
    return [int(i) for i in np.random.choice(np.arange(task_start, task_end), size=nsamples, replace=False)]


# ------------------------------------------------------------------------------------------------ AMIA
def _diversity(units: np.ndarray, modality: np.ndarray) -> float:
    """The paper's DAS score of one sample: the mean of its intra- and inter-modality mean cosine distances."""
    codes = sorted(set(modality.tolist()))
    terms = []
    for code in codes:
        idx = np.flatnonzero(modality == code)
        if idx.size >= 2:
            pairs = [1.0 - units[i] @ units[j] for i in idx for j in idx if i != j]
            terms.append(sum(pairs) / len(pairs))
    for a, code_a in enumerate(codes):
        for code_b in codes[a + 1 :]:
            ia, ib = np.flatnonzero(modality == code_a), np.flatnonzero(modality == code_b)
            pairs = [1.0 - units[i] @ units[j] for i in ia for j in ib]
            terms.append(sum(pairs) / len(pairs))
    return sum(terms) / len(terms) if terms else 0.0


def amia_paper(
    outputs: np.ndarray, attention: np.ndarray, modality: np.ndarray, knn: int = 3, trace: dict | None = None
) -> list[int]:
    """Token indices in the order AMIA (the paper's Eqs. 3-5) picks them, float64 throughout.

    `trace`, if given, receives the margins the fixture generator checks: the smallest gap between the
    k-th and (k+1)-th nearest other token, the smallest gap between the best and second-best gain
    among tokens that are not exact twins, and the MMD^2 values around the stop.
    """
    x = np.asarray(outputs, dtype=np.float64)
    units = x / np.linalg.norm(x, axis=1, keepdims=True)
    a = np.asarray(attention, dtype=np.float64)
    t_count = len(a)
    distance = np.array([[1.0 - units[i] @ units[j] for j in range(t_count)] for i in range(t_count)])
    k = min(knn, t_count - 1)
    neighbours = []
    knn_gap = math.inf
    for i in range(t_count):
        others = sorted((distance[i, j], j) for j in range(t_count) if j != i)  # ties: the lower index
        neighbours.append([j for _, j in others[:k]])
        if len(others) > k:
            knn_gap = min(knn_gap, others[k][0] - others[k - 1][0])
    # Eq. 3: a token's contribution plus its neighbours', weighted by exp(-1.0 * d_ij)
    gain = np.array([a[i] + sum(math.exp(-1.0 * distance[i, j]) * a[j] for j in neighbours[i]) for i in range(t_count)])
    threshold = 0.1 * math.sqrt(max(_diversity(units, np.asarray(modality)), 0.0))
    kernel = np.exp(-distance)
    selected: list[int] = []
    mmds, gain_gap = [], math.inf
    twins = [{j for j in range(t_count) if np.array_equal(x[i], x[j])} for i in range(t_count)]
    while True:
        s = int(np.argmax(gain))  # the first on ties
        rivals = [gain[j] for j in range(t_count) if j not in selected and j not in twins[s]]
        if rivals:
            gain_gap = min(gain_gap, gain[s] - max(rivals))
        picked = max(gain[s], 0.0)
        for j in neighbours[s]:  # Eq. 4: penalise the neighbours of the pick
            gain[j] -= math.exp(-0.2 * distance[s, j]) * picked
        selected.append(s)
        gain[selected] = gain.min() - 1
        # Eq. 5: stop once the picked set represents the sample
        mmd = kernel.mean() + kernel[np.ix_(selected, selected)].mean() - 2 * kernel[:, selected].mean()
        mmds.append(max(mmd, 0.0))
        if mmds[-1] < threshold or len(selected) == t_count:
            break
    if trace is not None:
        trace.update(knn_gap=knn_gap, gain_gap=gain_gap, threshold=threshold, mmd=mmds)
    return selected


# ------------------------------------------------------------------------------------------------ fixtures
def _sparsegpt_cases() -> list[dict]:
    """Inputs with fewer tokens than columns (undamped H singular: the damping path) and with more."""
    cases = []
    for i, (rows, cols, samples, tokens, sparsity, nm) in enumerate(
        [(48, 64, 2, 16, 0.5, (0, 0)), (48, 64, 4, 64, 0.5, (0, 0)), (32, 96, 4, 40, 0.6, (0, 0)),
         (32, 64, 2, 12, 0.5, (2, 4))]
    ):
        gen = torch.Generator().manual_seed(100 + i)
        weight = torch.randn(rows, cols, generator=gen)
        scale = torch.rand(cols, generator=gen) * 2 + 0.1
        inputs = torch.randn(samples, tokens, cols, generator=gen) * scale
        inputs[..., 3] = 0.0  # a dead input column
        hessian = hessian_of(inputs)
        pruned, first, second = fastprune(weight, hessian, sparsity, *nm)
        cases.append(dict(file=f"sparsegpt_official_{i}.safetensors", sparsity=sparsity, prune_n=nm[0],
                          prune_m=nm[1], blocksize=128, percdamp=0.01, tokens=samples * tokens,
                          damping_added_to_hessian=first, damping_added_to_inverse=second,
                          tensors={"weight": weight, "hessian": hessian, "expected.pruned_weight": pruned}))
    return cases


def _draw_cases() -> list[dict]:
    return [dict(task_start=s, task_end=e, nsamples=n, seed=seed, expected=official_draw(s, e, n, seed))
            for s, e, n, seed in [(0, 500, 128, 42), (1200, 1700, 128, 42), (37, 300, 16, 0), (5, 405, 200, 7)]]


def _amia_sample(seed: int, tokens: int, width: int, twins: list[tuple[int, ...]]) -> tuple[np.ndarray, ...]:
    gen = np.random.default_rng(seed)
    image = tokens // 2
    inputs = gen.normal(size=(tokens, width)).astype(np.float32)
    inputs[:image] += gen.normal(size=width).astype(np.float32)  # image tokens share a direction
    for group in twins:  # exact duplicates (LLaVA-NeXT repeats its image-newline token)
        for j in group[1:]:
            inputs[j] = inputs[group[0]]
    weight = (gen.normal(size=(width, width)) / math.sqrt(width)).astype(np.float32)
    outputs = inputs @ weight.T
    logits = gen.normal(size=tokens) * 2
    attention = (np.exp(logits) / np.exp(logits).sum()).astype(np.float32)
    modality = np.array([1] * image + [0] * (tokens - image))
    return inputs, weight, outputs, attention, modality


def _amia_cases(margin: float = 1e-4) -> list[dict]:
    """Cases with duplicated outputs whose answer no float32-vs-float64 rounding can change."""
    plans = [(24, 16, [(2, 9)]), (30, 16, [(1, 5), (16, 20)]), (36, 24, [(3, 4, 11)]), (28, 16, [(0, 7), (14, 27)]),
             (40, 24, [(5, 6), (8, 30, 31)]), (20, 12, [])]
    cases, seed = [], 0
    for tokens, width, twins in plans:
        while True:
            seed += 1
            inputs, weight, outputs, attention, modality = _amia_sample(seed, tokens, width, twins)
            trace: dict = {}
            selected = amia_paper(outputs, attention, modality, trace=trace)
            mmd, thr = trace["mmd"], trace["threshold"]
            clear_stop = mmd[-1] < thr - margin and all(m > thr + margin for m in mmd[:-1])
            if trace["knn_gap"] > margin and trace["gain_gap"] > margin and clear_stop:
                break
        cases.append(dict(file=f"amia_paper_{len(cases)}.safetensors", tokens=tokens, twins=[list(g) for g in twins],
                          seed=seed, selected_count=len(selected),
                          tensors={"input": torch.from_numpy(inputs), "weight": torch.from_numpy(weight),
                                   "output": torch.from_numpy(outputs), "attention": torch.from_numpy(attention),
                                   "modality_ids": torch.from_numpy(modality),
                                   "expected.selected": torch.tensor(selected, dtype=torch.long)}))
    return cases


def write_fixtures(out: Path = OUT) -> dict:
    """All fixtures and manifest.json under `out`; returns the manifest."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"_source": "written by tests/originals.py (python tests/originals.py); see its docstring"}
    for section, cases in (("sparsegpt_official", _sparsegpt_cases()), ("amia_paper", _amia_cases())):
        manifest[section] = []
        for case in cases:
            save_file({k: v.contiguous() for k, v in case.pop("tensors").items()}, str(out / case["file"]))
            manifest[section].append(case)
    manifest["official_draw"] = _draw_cases()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


if __name__ == "__main__":
    written = write_fixtures()
    for section in ("sparsegpt_official", "amia_paper", "official_draw"):
        print(section, len(written[section]), "cases")
    for case in written["sparsegpt_official"]:
        print(case["file"], "tokens", case["tokens"], "damping added to H", case["damping_added_to_hessian"],
              "to H^-1", case["damping_added_to_inverse"])
