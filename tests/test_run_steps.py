"""A run reads top to bottom as named steps (issue 33): `tamp.cli.runner._run_cell` calls the methods of
`Cell` in the order load -> calibrate -> prune -> save -> evaluate -> record, and neither the driver nor any
step outgrows a screen (45 lines), so a reader follows one cell without scrolling through a long function.

Read from the source with `ast` (no model, no import of the runner's libraries): what a reader sees.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import tamp.cli

pytestmark = pytest.mark.fast  # the unit tier: make test-fast

RUNNER = Path(inspect.getfile(tamp.cli)).with_name("runner.py")
MAX_LINES = 45
#: the steps a cell takes, in order (the issue's load, calibrate, prune, save, evaluate, record)
STEPS = ["load", "calibrate", "prune", "save", "evaluate", "record"]


def _module() -> ast.Module:
    return ast.parse(RUNNER.read_text())


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert found, f"{RUNNER} has no function {name}"
    return found[0]


def _cell(tree: ast.Module) -> ast.ClassDef:
    found = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Cell"]
    assert found, f"{RUNNER} has no class Cell"
    return found[0]


def _lines(node: ast.AST) -> int:
    return node.end_lineno - node.lineno + 1  # type: ignore[attr-defined,operator]


def _calls_in_order(func: ast.FunctionDef, receiver: str) -> list[str]:
    """`receiver.method(...)` calls in the order they run: a call's arguments before the call itself, then the
    statements top to bottom (`cell.prune(loaded, *cell.calibrate(loaded))` is calibrate, then prune)."""
    order: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            visit(child)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == receiver):
            order.append(node.func.attr)

    for statement in func.body:
        visit(statement)
    return order


def test_the_driver_takes_the_steps_in_order() -> None:
    tree = _module()
    calls = _calls_in_order(_function(tree, "_run_cell"), "cell")
    steps = [c for c in calls if c in STEPS]
    assert steps == STEPS, f"_run_cell calls the steps as {steps}; expected {STEPS}"
    methods = {n.name for n in _cell(tree).body if isinstance(n, ast.FunctionDef)}
    assert set(calls) <= methods, f"_run_cell calls {sorted(set(calls) - methods)}, which Cell does not define"


def test_every_step_has_a_docstring() -> None:
    """Each step says what it does (and what only rank 0 does) where the reader meets it."""
    cell = _cell(_module())
    called = set(_calls_in_order(_function(_module(), "_run_cell"), "cell"))
    missing = [n.name for n in cell.body if isinstance(n, ast.FunctionDef) and n.name in called
               and not ast.get_docstring(n)]
    assert not missing, f"Cell steps without a docstring: {missing}"


def test_no_step_and_not_the_driver_is_longer_than_a_screen() -> None:
    tree = _module()
    lengths = {f"Cell.{n.name}": _lines(n) for n in _cell(tree).body if isinstance(n, ast.FunctionDef)}
    for name in ("run_cell", "_run_cell"):
        lengths[name] = _lines(_function(tree, name))
    too_long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert not too_long, f"over {MAX_LINES} lines (split into named helpers): {too_long}"
    assert set(STEPS) <= {name.removeprefix("Cell.") for name in lengths}


def test_the_order_check_sees_a_swapped_step() -> None:
    """The order test reads the calls as they run: a driver that evaluates before it saves is caught."""
    source = ("def _run_cell():\n    loaded = cell.load()\n    pruning = cell.prune(loaded, *cell.calibrate(loaded))\n"
              "    cache = cell.evaluate(loaded, pruning)\n    cell.save(loaded, pruning)\n    cell.record(cache)\n")
    func = ast.parse(source).body[0]
    assert isinstance(func, ast.FunctionDef)
    assert _calls_in_order(func, "cell") == ["load", "calibrate", "prune", "evaluate", "save", "record"]
