"""Group runs by their experiment items, and label groups that would otherwise read alike.

Runs group only on equal items. A group whose items are a strict subset of exactly one other
group's (it recorded less, e.g. a cell that failed before its config was resolved) may join that
group when the caller allows it; with two or more candidates it stays apart, never a guess.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import TypeVar

from tamp.reporting.keys import Items, describe, differing

T = TypeVar("T")
UNKNOWN = "?"
#: shown in the table's own Sparsity column, never in a label
SPARSITY = ("sparsity.target", "sparsity.pattern")


def group_by(
    items: list[T], key_of: Callable[[T], Items], may_join: Callable[[list[T]], bool]
) -> list[tuple[Items, list[T]]]:
    """Groups of equal keys in first-seen order; partial groups that `may_join` go to their one superset."""
    groups: dict[frozenset[tuple[str, str]], list[T]] = {}
    for item in items:
        groups.setdefault(frozenset(key_of(item).items()), []).append(item)
    for key in sorted(groups, key=len, reverse=True):  # the most specific first, so chains resolve
        supersets = [other for other in groups if key < other]
        if len(supersets) == 1 and may_join(groups[key]):
            groups[supersets[0]].extend(groups.pop(key))
    return [(dict(key), members) for key, members in groups.items()]


def label_suffix(key: Items, names: list[str]) -> str:
    """` (k=v, k=?)` for the given names (`?` where the key did not record it); nothing without names."""
    if not names:
        return ""
    return f" ({describe({n: key.get(n, UNKNOWN) for n in names}, names)})"


def row_labels(names: list[str], keys: list[Items], presets: list[Items] | None = None) -> list[str]:
    """The label of each pruned row of a table: its method name plus the items that tell it apart.

    Settings outside the method (calibration set, pruned linears) are named wherever they differ in
    the table, so no two methods are compared on different data unseen; method settings are named
    where rows of the same method name differ (`tamp (method.tokens.name=attention)`). An item a row
    did not record never adds a name to the others' labels; rows that still read alike (one recorded
    an item the other did not) also name the items only some of them hold. `presets[i]`: what row i's
    preset runs (tamp.tracking.run_names.preset_items); an item equal to it is not named, so the plain preset
    keeps its plain label next to its ablations (`tamp`, `tamp (method.tokens.name=random)`).
    """
    own_of = presets if presets is not None else [{} for _ in keys]

    def unlike_preset(i: int, names_: list[str]) -> list[str]:
        return [n for n in names_ if own_of[i].get(n) != keys[i].get(n)]

    common = [n for n in differing(keys, SPARSITY) if not n.startswith("method.")]
    shown = [unlike_preset(i, common) for i in range(len(keys))]
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        by_name[name].append(i)
    for members in by_name.values():
        own = [n for n in differing([keys[i] for i in members], SPARSITY) if n.startswith("method.")]
        for i in members:
            shown[i] = sorted(unlike_preset(i, common + own))
    alike: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        alike[(names[i], label_suffix(key, shown[i]), *(key.get(s, "") for s in SPARSITY))].append(i)
    for members in alike.values():
        if len(members) > 1:
            partial = {k for i in members for k in keys[i] if k not in SPARSITY} - set.intersection(
                *(set(keys[i]) for i in members)
            )
            for i in members:
                shown[i] = sorted(set(shown[i]) | partial)
    return [name + label_suffix(key, shown[i]) for i, (name, key) in enumerate(zip(names, keys, strict=True))]


def table_titles(models: list[str], keys: list[Items]) -> list[str]:
    """`model` or `model (eval.limit=4)`: tables of one model named by the settings that differ among them."""
    titles = []
    for model, key in zip(models, keys, strict=True):
        same = [k for m, k in zip(models, keys, strict=True) if m == model]
        names = [n for n in differing(same) if n != "model.name"]
        titles.append(model + label_suffix(key, names))
    return titles
