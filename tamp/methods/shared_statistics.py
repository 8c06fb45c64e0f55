"""Shared statistics of a block: linears of a block that read the very same input tensor in a sample (q, k, v; gate,
up) get the same selected rows when the token selector declares `input_only` (its selection depends on
x and the sample alone); when the pruner declares `input_only_stats` too (its statistic depends on the
rows alone), they share ONE statistic object, accumulated once (`SharedStatistics`), and SparseGPT
factors its Hessian once for them. Who shares is found at run time, per block: the first linear
seen with an input leads, a linear first seen with the same input (same sample, address, shape, strides,
dtype, device and version counter) in the same sample follows. Exact in every case: from the second
sample on, the leader's rows are added only once every follower has shown the same input; a follower
that does not (or is not called, or is called twice) first gets its own copy of the sums as they were
before, then goes on alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tamp.pipeline.context import SampleContext


def input_key(x: torch.Tensor, ctx: SampleContext) -> tuple | None:
    """What makes two linears' inputs one tensor: the sample, the view (address, shape, strides, dtype,
    device) and its version counter, which every in-place write bumps. None (never shared) for an empty
    input or a tensor without a version counter (made under torch.inference_mode)."""
    if x.numel() == 0:
        return None
    try:
        version = x._version
    except RuntimeError:
        return None
    return ctx.index, x.data_ptr(), tuple(x.shape), x.stride(), x.dtype, x.device, version


def copy_stats(stats: Any) -> Any:
    """An independent statistic with the same sums: its `copy()`, else a deep copy."""
    own = getattr(stats, "copy", None)
    return own() if callable(own) else copy.deepcopy(stats)


def _interchangeable(a: Any, b: Any) -> bool:
    """Two fresh statistics that accumulate alike: the same kind, tensors of the same shapes, dtypes and
    devices (a statistic on another device would sum in another order)."""
    def layout(stats: Any) -> list[tuple]:
        return [(t.shape, t.dtype, t.device) for t in stats.tensors()]

    return type(a) is type(b) and layout(a) == layout(b)


@dataclass
class _Pending:
    """A leader's selected rows of this sample, added to the shared statistic once its followers agree."""

    rows: torch.Tensor
    source: torch.Tensor  # the leader's input x (rows may be x itself)
    version: int
    backup: torch.Tensor | None  # a copy of x when rows is x, read if x is written in place before the add

    def tensor(self) -> torch.Tensor:
        if self.backup is None or self.source._version == self.version:
            return self.rows
        return self.backup


@dataclass
class _Group:
    """Linears whose input has been one tensor in every sample so far, and the statistic they share."""

    stats: Any
    leader: str
    followers: list[str] = field(default_factory=list)
    # this sample: whether the leader was observed, its input (held: the address is not reused while
    # followers compare with it) and key, its rows not yet added, the followers that showed the same input
    led: bool = False
    source: torch.Tensor | None = None
    key: tuple | None = None
    pending: _Pending | None = None
    matched: set[str] = field(default_factory=set)


class SharedStatistics:
    """One block's statistics when the selection depends on the input alone: linears reading one input
    share one statistic object in `stats` (name -> statistic), accumulated once (module docstring)."""

    def __init__(self, stats: dict[str, Any]) -> None:
        self.stats = stats
        self.groups: dict[str, _Group] = {}  # every linear observed in the block -> its group
        self.open: dict[tuple, _Group] = {}  # groups created in this sample: a linear seen first may join
        self.ctx: SampleContext | None = None

    def observe(self, name: str, x: torch.Tensor, ctx: SampleContext, rows: Callable[[], torch.Tensor]) -> None:
        """Account one linear's input; `rows()` selects its rows (called only when they are added)."""
        if ctx is not self.ctx:
            self.end_sample()
            self.ctx = ctx
        key = input_key(x, ctx)
        group = self.groups.get(name)
        if group is None:
            self._first(name, x, key, rows)
        elif name == group.leader:
            self._lead(group, x, key, rows)
        elif group.led and key is not None and key == group.key and name not in group.matched:
            group.matched.add(name)  # the leader's rows are this follower's too
            self._flush_if_agreed(group)
        else:  # another input than its leader's, no leader this sample, or a second call: alone from now
            self._split(group, name)
            self.stats[name].add(rows())

    def _first(self, name: str, x: torch.Tensor, key: tuple | None, rows: Callable[[], torch.Tensor]) -> None:
        """A linear's first call in the block: it joins a group made in this same sample from its input
        (whose statistic holds just that input's rows), else it leads a group of its own."""
        group = self.open.get(key) if key is not None else None
        if group is not None and _interchangeable(group.stats, self.stats[name]):
            self.stats[name] = group.stats
            group.followers.append(name)
            group.matched.add(name)
            self.groups[name] = group
            return
        group = self.groups[name] = _Group(self.stats[name], name, led=True)
        group.stats.add(rows())
        if key is not None:
            group.source, group.key = x, key
            self.open[key] = group

    def _lead(self, group: _Group, x: torch.Tensor, key: tuple | None, rows: Callable[[], torch.Tensor]) -> None:
        """The leader in a later sample: its rows wait for its followers (added at once without any)."""
        if group.led or key is None:  # a second call in one sample, or an input that cannot be compared
            self._dissolve(group)
        group.led = True
        if not group.followers:
            group.stats.add(rows())
            return
        selected = rows()
        backup = x.clone() if selected is x else None
        group.source, group.key = x, key
        group.pending = _Pending(selected, x, key[-1], backup)

    def _flush_if_agreed(self, group: _Group) -> None:
        """Every follower showed the leader's input: the leader's rows go in once, for all of them."""
        if group.pending is not None and len(group.matched) == len(group.followers):
            group.stats.add(group.pending.tensor())
            group.pending = None

    def _split(self, group: _Group, name: str) -> None:
        """`name` leaves `group` with a copy of the sums it has accumulated so far (the leader's rows of
        this sample included only if it had shown the same input)."""
        own = copy_stats(group.stats)
        if group.pending is not None and name in group.matched:
            own.add(group.pending.tensor())
        group.followers.remove(name)
        group.matched.discard(name)
        self._close(group)
        self.stats[name] = own
        self.groups[name] = _Group(own, name, led=True)
        self._flush_if_agreed(group)

    def _close(self, group: _Group) -> None:
        """No linear joins `group` any more in this sample: its statistic is no longer one call's rows."""
        if group.key is not None and self.open.get(group.key) is group:
            del self.open[group.key]

    def _dissolve(self, group: _Group) -> None:
        """Every follower leaves `group` (the last one leaving adds the leader's pending rows)."""
        self._close(group)
        for name in list(group.followers):
            self._split(group, name)

    def _distinct(self) -> list[_Group]:
        return list({id(g): g for g in self.groups.values()}.values())

    def end_sample(self) -> None:
        """The sample is over: followers that did not show the leader's input leave their group (the last
        one leaving adds the leader's rows); nothing is pending afterwards."""
        for group in self._distinct():
            if group.pending is not None:
                for name in [f for f in group.followers if f not in group.matched]:
                    self._split(group, name)
        for group in self._distinct():
            group.led, group.source, group.key, group.pending, group.matched = False, None, None, None, set()
        self.open.clear()
        self.ctx = None

    def finish(self, names: list[str], reduce_: Callable[[list[torch.Tensor]], None]) -> None:
        """End the block's last sample and make every process hold the same layout before the statistics are
        all-reduced: each must reduce the same tensors in the same order, but which linears share is found per
        process (one without samples shares nothing). One small collective compares the layouts (per linear of
        `names`, the position of the first linear holding its statistic): from the sums of the layouts and of
        their squares every process reaches the same verdict (all equal iff no variance). Where they differ,
        each linear gets its own copy and the statistics are reduced one per linear, as unshared."""
        self.end_sample()
        holder: dict[int, int] = {}
        layout = torch.tensor([holder.setdefault(id(self.stats[n]), i) for i, n in enumerate(names)], dtype=torch.int64)
        sums = torch.cat([torch.ones(1, dtype=layout.dtype), layout, layout * layout])
        reduce_([sums])
        processes, first, second = sums[0], sums[1:len(names) + 1], sums[len(names) + 1:]
        if torch.equal(processes * second, first * first):
            return
        for i, name in enumerate(names):
            if layout[i] != i:
                self.stats[name] = copy_stats(self.stats[name])
