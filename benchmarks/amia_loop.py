"""SLOW BASELINE, not used by the library: a direct transcription of the AMIA loop as the paper states it.

Written in this project (from docs/DESIGN.md's AMIA steps and the paper's equations 3-5) only so that
`bench_amia.py` and the tests can compare `tamp.tokens.amia.select_tokens` against the obvious
implementation. It does what a straightforward port does:

- builds three T x T products per call (the cosine distances for the kNN graph, the similarity matrix for
  the diversity, and the MMD kernel), each from its own U U^T;
- at every greedy step, evaluates MMD^2(all, S) from scratch: the full-set kernel mean (T^2), K[S, S]
  (|S|^2) and K[:, S] (T |S|);
- reads the argmax, the neighbours and the MMD back to the host at every step (one sync per step on CUDA).

Selections are the same as the library's up to float rounding of the MMD near the threshold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _units(outputs: torch.Tensor) -> torch.Tensor:
    return F.normalize(outputs.float(), dim=-1)


def _diversity(outputs: torch.Tensor, modality_ids: torch.Tensor, variant: str) -> float:
    """Mean cosine distance of the sample's DAS terms, computed from a fresh T x T similarity matrix."""
    units = _units(outputs)
    sim = units @ units.T  # product 2
    terms = []
    codes = sorted(set(modality_ids.tolist()))
    for code in codes:
        idx = (modality_ids == code).nonzero().flatten()
        if idx.numel() < 2:
            continue
        block = sim[idx][:, idx]
        if variant == "reference":
            upper = block[torch.triu(torch.ones_like(block, dtype=torch.bool), diagonal=1)]
            positive = upper[upper > 0]
            terms.append(1.0 - (positive.mean().item() if positive.numel() else 0.0))
        else:
            n = idx.numel()
            terms.append(1.0 - (block.sum().item() - block.diagonal().sum().item()) / (n * (n - 1)))
    for i, a in enumerate(codes):
        for b in codes[i + 1 :]:
            ia = (modality_ids == a).nonzero().flatten()
            ib = (modality_ids == b).nonzero().flatten()
            terms.append(1.0 - sim[ia][:, ib].mean().item())
    return sum(terms) / len(terms) if terms else 0.0


def loop_select_tokens(
    outputs: torch.Tensor,
    attention: torch.Tensor,
    modality_ids: torch.Tensor,
    variant: str = "paper",
    knn: int = 3,
    graph_gamma: float = 1.0,
    penalty_gamma: float = 0.2,
    mmd_scale: float = 0.1,
) -> torch.Tensor:
    """The slow reference loop; same arguments and result as `tamp.tokens.amia.select_tokens`."""
    num_tokens = outputs.shape[0]
    attention = attention.float()
    units = _units(outputs)
    distance = 1.0 - units @ units.T  # product 1: kNN graph
    k = min(knn, num_tokens - 1)
    if variant == "paper":  # the paper's N_i: the k nearest other tokens, ties to the lower index
        others = distance + torch.diag(torch.full((num_tokens,), float("inf"), device=distance.device))
        neighbours = torch.sort(others, dim=1, stable=True).indices[:, :k]
    else:  # the official code: k + 1 nearest, the first dropped
        neighbours = torch.topk(distance, k + 1, dim=1, largest=False).indices[:, 1:]
    near = distance.gather(1, neighbours)
    gain = attention + (torch.exp(-graph_gamma * near) * attention[neighbours]).sum(1)

    div = _diversity(outputs, modality_ids, variant)
    threshold = mmd_scale * max(div, 0.0) ** 0.5
    kernel = torch.exp(-(1.0 - _units(outputs) @ _units(outputs).T))  # product 3: MMD kernel

    selected: list[int] = []
    while True:
        s = int(torch.argmax(gain))
        picked = gain[s].clamp_min(0.0)
        weights = torch.exp(-penalty_gamma * near[s])
        for col, j in enumerate(neighbours[s].tolist()):
            gain[j] -= weights[col] * picked
        selected.append(s)
        index = torch.tensor(selected, device=outputs.device)
        gain[index] = gain.min() - 1
        mmd = kernel.mean() + kernel[index][:, index].mean() - 2 * kernel[:, index].mean()
        if max(mmd.item(), 0.0) < threshold or len(selected) == num_tokens:
            break
    return torch.tensor(selected, dtype=torch.long, device=outputs.device)
