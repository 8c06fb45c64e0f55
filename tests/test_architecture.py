"""The shape the code keeps: layers that only look down, and a new component is one file plus one preset.

The first test reads every module's imports (module level and inside functions; `if TYPE_CHECKING:`
blocks excepted) and fails on any cycle between tamp's subpackages and top-level modules; the second
checks that the pruners, allocations and token selectors do not import the pipeline; the registries'
package walks are read from their declarations and must load only packages that register with them.
`import tamp` and `import tamp.core.config` load neither torch nor the rest of the library. The others
register a throwaway allocation and token selector from this module, exactly as a new file in
tamp/sparsity or tamp/tokens would, write one preset for them, and run them through Hydra's
composition, the schema's checks and `tamp.prune`.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra.core.config_store import ConfigStore
from tiny_models import fresh_tiny

import tamp
from tamp.cli.preflight import PreflightError, check_command
from tamp.cli.schema import validate
from tamp.core.config import AllocationConfig, TokensConfig
from tamp.sparsity.registry import ALLOCATIONS, register_allocation
from tamp.tokens.registry import SELECTORS, register_selector

pytestmark = pytest.mark.fast  # the unit tier: make test-fast

PACKAGE = Path(tamp.__file__).resolve().parent


def _unit(module: str) -> str:
    """tamp.models.base -> models; tamp.api.functions -> api; tamp -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_imports() -> dict[str, set[str]]:
    """tamp module -> the tamp names it imports (module level and inside functions; not `if TYPE_CHECKING:`)."""
    imports: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                     and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        found = imports.setdefault(module, set())
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("tamp."))
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("tamp."):
                found.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
    return imports


def _import_graph() -> dict[str, dict[str, set[str]]]:
    """unit -> imported unit -> the 'module -> import' lines that make the edge."""
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    graph: dict[str, dict[str, set[str]]] = {}
    for module, names in _module_imports().items():
        for name in names:
            if _unit(name) in units and _unit(name) != _unit(module):
                graph.setdefault(_unit(module), {}).setdefault(_unit(name), set()).add(f"{module} -> {name}")
    return graph


def _registry_walks() -> list[tuple[str, str, str]]:
    """(module, variable, walked package) of every `Registry(...)` declared in tamp, read from the source.

    A registry imports every module of the packages it names on its first lookup (tamp.core.registries):
    import edges no import statement shows, so this test reads them from the declarations.
    """
    walks = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if not (isinstance(value, ast.Call) and ast.unparse(value.func) == "Registry"):
                continue
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            given = {k.arg: k.value for k in value.keywords}
            packages = value.args[2] if len(value.args) > 2 else given.get("packages")
            try:
                names = ast.literal_eval(packages)
            except ValueError:
                pytest.fail(f"{module}: {ast.unparse(target)}'s packages are not literal ({ast.unparse(packages)}); "
                            "name them in the Registry(...) call, where this test reads them")
            walks += [(module, ast.unparse(target), package) for package in names]
    return walks


def _find_cycle(graph: dict[str, dict[str, set[str]]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_subpackages() -> None:
    graph = _import_graph()
    assert graph["models"].get("data"), "the graph should see models -> data (sanity of the parser)"
    cycle = _find_cycle(graph)
    if cycle:
        edges = [sorted(graph[a][b])[0] for a, b in zip(cycle, cycle[1:], strict=False)]
        pytest.fail(f"import cycle {' -> '.join(cycle)}: {'; '.join(edges)}")


def _file_graph() -> dict[str, dict[str, set[str]]]:
    """tamp module -> the tamp modules it imports (`from tamp.a import b` counts tamp.a.b when b is a module)."""
    modules = set(_module_imports())
    graph: dict[str, dict[str, set[str]]] = {}
    for module, names in _module_imports().items():
        for name in names:
            target = name if name in modules else name.rpartition(".")[0]
            if target in modules and target != module:
                graph.setdefault(module, {}).setdefault(target, set()).add(f"{module} -> {name}")
    return graph


def test_no_import_cycle_between_files() -> None:
    """Not even inside a subpackage, and not through an import hidden in a function."""
    graph = _file_graph()
    assert "tamp.pruning.base" in graph.get("tamp.pruning.wanda", {}), "sanity of the parser"
    cycle = _find_cycle(graph)
    if cycle:
        pytest.fail(f"import cycle between files: {' -> '.join(cycle)}")


def test_allocations_and_token_selectors_do_not_import_the_pipeline() -> None:
    """They get what they need as arguments (a ScoringModel, a sample context), not the engine's modules."""
    graph = _import_graph()
    assert graph["methods"].get("pipeline"), "the graph should see methods -> pipeline (sanity of the parser)"
    for unit in ("sparsity", "tokens", "pruning"):
        edges = sorted(graph.get(unit, {}).get("pipeline", set()))
        assert not edges, f"tamp.{unit} imports tamp.pipeline: {edges}"


@pytest.mark.integration(reason="builds a tiny model and runs the engine on it")
def test_the_engine_offers_everything_an_allocation_may_ask() -> None:
    """An allocation sees the model as a ScoringModel; the layer-wise engine must have every member of it."""
    from tamp.pipeline.engine import LayerwiseEngine
    from tamp.sparsity.registry import ScoringModel

    bundle = fresh_tiny("llava_next")
    engine = LayerwiseEngine(bundle.model, bundle.adapter, [bundle.example_sample()], progress=False)
    wanted = {n for n in vars(ScoringModel) if not n.startswith("_")} | set(ScoringModel.__annotations__)
    assert {"linears", "block_name", "scoring_pass", "perturbation_pass"} <= wanted
    missing = sorted(n for n in wanted if not hasattr(engine, n))
    assert not missing, f"LayerwiseEngine lacks {missing} of tamp.sparsity.registry.ScoringModel"
    assert engine.block_name(1) == f"{bundle.adapter.blocks_path}.1"


def test_every_registry_walk_is_a_package_that_registers_with_it() -> None:
    """A package walk loads a package at run time; it must be one that imports the registry (to register its
    components), so the walk is the inverse of an edge the graph above has and adds no dependency of its own."""
    walks = _registry_walks()
    seen = {(module, package) for module, _, package in walks}
    assert {("tamp.pruning.registry", "tamp.pruning"), ("tamp.sparsity.registry", "tamp.sparsity"),
            ("tamp.tokens.registry", "tamp.tokens"), ("tamp.data.sources", "tamp.models.tiny"),
            ("tamp.models.named", "tamp.zoo")} <= seen, "the reader should see the registries (sanity)"
    imports = _module_imports()
    for module, name, package in walks:
        inside = [m for m in imports if m == package or m.startswith(f"{package}.")]
        assert inside, f"{module}.{name} walks {package}, which is not a tamp package"
        registering = [m for m in inside if any(i == module or i.startswith(f"{module}.") for i in imports[m])]
        assert registering, (f"{module}.{name} walks {package}, where no module imports {module} to register: an "
                             f"import edge {_unit(module)} -> {_unit(package)} no import statement shows")
        live = getattr(importlib.import_module(module), name)
        assert package in live.packages


def _loaded_by(statement: str) -> list[str]:
    """The tamp modules (and torch) a fresh interpreter has loaded after `statement`."""
    code = f"import sys; {statement}; print(*sorted(m for m in sys.modules if m == 'torch' or m.split('.')[0] == 'tamp'))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


@pytest.mark.integration(reason="starts fresh Python processes to see what an import loads")
def test_importing_tamp_or_its_config_loads_neither_torch_nor_the_library() -> None:
    assert _loaded_by("import tamp.core.config") == ["tamp", "tamp.core", "tamp.core.config"]
    assert _loaded_by("import tamp") == ["tamp"]
    assert "torch" in _loaded_by("import tamp; tamp.prune")  # the public API loads on first use


def test_the_public_api_is_every_name_of_all() -> None:
    for name in tamp.__all__:
        assert getattr(tamp, name) is getattr(importlib.import_module(tamp._PUBLIC[name]), name)
    assert set(tamp.__all__) <= set(dir(tamp))
    with pytest.raises(AttributeError, match="no attribute 'prunee'"):
        tamp.prunee  # noqa: B018


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _find_cycle({"a": {"b": {"x"}}, "b": {"c": {"y"}}, "c": {"a": {"z"}}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b": {"x"}}, "b": {}}) is None


# --- a throwaway allocation and token selector, registered here as a new file would register them ---

@dataclass
class TiltConfig(AllocationConfig):
    """Earlier blocks pruned more by `tilt`, later ones less (equal block sizes: the mean stays the target)."""

    name: str = "throwaway_tilt"
    tilt: float = 0.1

    def check(self) -> None:
        if not 0 <= self.tilt < 0.5:
            raise ValueError(f"method.allocation.tilt={self.tilt} is out of range; valid: 0 <= tilt < 0.5")


class TiltAllocation:
    def __init__(self, cfg: TiltConfig) -> None:
        self.cfg = cfg

    def plan(self, engine, target: float) -> dict[str, float]:
        last = max(len(engine.linears) - 1, 1)
        return {name: target + self.cfg.tilt * (1 - 2 * i / last)
                for i, linears in enumerate(engine.linears) for name in linears}


@dataclass
class FirstTokensConfig(TokensConfig):
    """Only the first `count` tokens of every sample feed the statistics."""

    name: str = "throwaway_first"
    count: int = 4

    def check(self) -> None:
        if self.count < 1:
            raise ValueError(f"method.tokens.count={self.count} is invalid; valid: an integer >= 1")


class FirstTokens:
    seen: list[int] = []

    def __init__(self, cfg: FirstTokensConfig) -> None:
        self.count = cfg.count

    def select(self, name, x, z, ctx) -> torch.Tensor:
        FirstTokens.seen.append(min(self.count, x.shape[0]))
        return torch.arange(min(self.count, x.shape[0]), device=x.device)


PRESET = """\
# A throwaway method: Wanda with the tilt allocation and the first-tokens selector.
defaults:
  - allocation: throwaway_tilt
  - tokens: throwaway_first
  - _self_

name: throwaway
pruner: wanda
tokens:
  count: 6
"""


@pytest.fixture
def throwaway(tmp_path: Path):
    """Register both components and write their preset to a folder on Hydra's search path; undo after."""
    register_allocation("throwaway_tilt", config=TiltConfig)(TiltAllocation)
    register_selector("throwaway_first", config=FirstTokensConfig)(FirstTokens)
    (tmp_path / "method").mkdir()
    (tmp_path / "method" / "throwaway.yaml").write_text(PRESET)
    yield [f"hydra.searchpath=[file://{tmp_path}]", "method=throwaway"]
    ALLOCATIONS.entries.pop("throwaway_tilt")
    SELECTORS.entries.pop("throwaway_first")
    repo = ConfigStore.instance().repo["method"]
    repo["allocation"].pop("throwaway_tilt.yaml")
    repo["tokens"].pop("throwaway_first.yaml")


@pytest.mark.integration(reason="prunes a tiny model with the new components")
def test_a_new_allocation_and_selector_are_one_file_plus_one_preset(compose_cfg, throwaway) -> None:
    settings = validate(compose_cfg([*throwaway, "method.allocation.tilt=0.2", "runner.device=cpu"]))
    method = settings.method
    assert isinstance(method.allocation, TiltConfig) and method.allocation.tilt == 0.2
    assert isinstance(method.tokens, FirstTokensConfig) and method.tokens.count == 6

    bundle = fresh_tiny("llava_next")
    FirstTokens.seen.clear()
    report = tamp.prune(bundle.model, [bundle.example_sample()], settings.prune_config(), adapter=bundle.adapter)
    planned = {x.name: x.planned for x in report.linears}
    blocks = sorted({int(name.split(".layers.")[1].split(".")[0]) for name in planned})
    first = [p for n, p in planned.items() if f".layers.{blocks[0]}." in n]
    last = [p for n, p in planned.items() if f".layers.{blocks[-1]}." in n]
    assert all(abs(p - 0.7) < 0.02 for p in first) and all(abs(p - 0.3) < 0.02 for p in last)
    assert all(x.pruned == x.planned_pruned for x in report.linears)
    assert FirstTokens.seen and set(FirstTokens.seen) == {6}


def test_a_new_components_settings_are_checked_like_the_others(compose_cfg, throwaway) -> None:
    with pytest.raises(ValueError, match=r"method\.allocation\.tilt=0\.7 is out of range") as err:
        validate(compose_cfg([*throwaway, "method.allocation.tilt=0.7"]))
    assert "\n" not in str(err.value)
    with pytest.raises(PreflightError, match=r"method\.tokens\.count=0"):
        check_command([*throwaway, "method.tokens.count=0"])
    with pytest.raises(PreflightError, match=r"method\.allocation\.slope"):
        check_command([*throwaway, "+method.allocation.slope=1"])


def test_an_allocations_defaults_are_its_own_whatever_the_preset(compose_cfg) -> None:
    """`method.allocation.name=ecoflap` on the wanda preset gives ECoFLaP's own defaults (module granularity)."""
    method = validate(compose_cfg(["method.allocation.name=ecoflap"])).method
    assert method.allocation.name == "ecoflap" and method.allocation.granularity == "module"
    changed = validate(compose_cfg(["method=tamp", "method/allocation=ecoflap"])).method
    assert changed.allocation.eps == 1e-3 and changed.tokens.name == "amia"
    for preset in ("wanda", "sparsegpt", "das_block", "tamp_sparsegpt"):  # every preset picks both
        swapped = validate(compose_cfg([f"method={preset}", "method/tokens=attention", "method/allocation=owl"])).method
        assert (swapped.tokens.name, swapped.allocation.name, swapped.allocation.owl_lambda) == ("attention", "owl", 0.08)
    # magnitude reads no activations, so a selector is refused there (tests/test_method_validation.py); an allocation
    # still comes with its own defaults
    swapped = validate(compose_cfg(["method=magnitude", "method/tokens=all", "method/allocation=owl"])).method
    assert (swapped.tokens.name, swapped.allocation.name, swapped.allocation.owl_lambda) == ("all", "owl", 0.08)
