"""The CLI answers without the model libraries: --help, --info, --cfg job, a completion, a config error,
`tamp.report --help`, and composing + validating every method preset import no torch, transformers,
lightning or lmms-eval (a login node, a typo and a TAB do not pay seconds for them); the answers also
leave out numpy, pandas and matplotlib (the calibration data, the report's tables and figures).
`--help`, `--info` and `--cfg` are Hydra's own, byte for byte, each piece of their work done once
(tamp.cli.help).

Each case runs in a fresh interpreter (what a user's shell starts) and reports which of those modules
ended up in sys.modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("hub_offline")

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "lightning", "lmms_eval")
#: what the answers do not need either: the calibration data's numpy, PIL and tqdm, the report's pandas and matplotlib
DATA = ("numpy", "PIL", "tqdm", "pandas", "matplotlib")
#: a run's own modules (its pre-run check, run folders, runner, records): `--help`, `--info`, `--cfg` and a TAB
#: only compose and print, and a login node's shell runs a TAB's completion on every key press
RUN = ("tamp.cli.preflight", "tamp.cli.rundir", "tamp.cli.runner", "tamp.tracking.run_record")

# runs `python -m MODULE ARGS` in-process, then prints the heavy modules it loaded as the last line
_ENTRY = textwrap.dedent("""
    import json, runpy, sys
    module, args = sys.argv[1], sys.argv[2:]
    sys.argv = [module, *args]
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    heavy = sorted(m for m in __HEAVY__ if m in sys.modules)
    data = sorted(m for m in __DATA__ if m in sys.modules)
    run = sorted(m for m in __RUN__ if m in sys.modules)
    print("\\n" + json.dumps({"heavy": heavy, "data": data, "run": run, "code": code}), flush=True)
""").replace("__HEAVY__", repr(HEAVY)).replace("__DATA__", repr(DATA)).replace("__RUN__", repr(RUN))

# composes `run` with each method preset and validates it (tamp.cli.schema.validate)
_PRESETS = textwrap.dedent("""
    import json, sys
    from hydra import compose, initialize_config_dir
    from tamp.cli import CONF_DIR
    from tamp.cli.schema import register_schema, validate
    from tamp.methods.presets import preset_names

    register_schema()
    done = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name in preset_names():
            settings = validate(compose(config_name="run", overrides=[f"method={name}"]))
            done.append([name, settings.method.pruner])
    heavy = sorted(m for m in __HEAVY__ if m in sys.modules)
    print(json.dumps({"heavy": heavy, "presets": done}))
""").replace("__HEAVY__", repr(HEAVY))


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> tuple[str, dict]:
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output; stderr: {proc.stderr[-2000:]}"
    return proc.stdout + proc.stderr, json.loads(lines[-1])


@pytest.mark.parametrize(("module", "args", "expect"), [
    ("tamp.run", ["--help"], "== Configuration groups =="),
    ("tamp.run", ["--info"], "Config search path"),
    ("tamp.run", ["--cfg", "job", "+experiment=toy_demo"], "method:"),
    ("tamp.report", ["--help"], "usage"),
], ids=["help", "info", "cfg-job", "report-help"])
def test_cli_answers_without_model_libraries(module: str, args: list[str], expect: str) -> None:
    output, result = _run(_ENTRY, module, *args)
    assert result["code"] == 0, output[-2000:]
    assert expect in output
    assert result["heavy"] == [], f"{module} {' '.join(args)} imported {result['heavy']}"
    assert result["data"] == [], f"{module} {' '.join(args)} imported {result['data']}"
    if module == "tamp.run":  # the report reads run records: its own business
        assert result["run"] == [], f"{module} {' '.join(args)} imported {result['run']}"


def test_a_config_error_is_one_line_without_model_libraries() -> None:
    output, result = _run(_ENTRY, "tamp.run", "sparsity.target=2")
    assert result["code"] == 2
    assert "tamp: error: sparsity.target=2.0 is out of range" in output
    assert result["heavy"] == [] and result["data"] == [], result


def test_tab_completion_without_model_libraries() -> None:
    output, result = _run(_ENTRY, "tamp.run", "-sc", "query=bash", env={"COMP_LINE": "tamp-run method=spars"})
    assert "method=sparsegpt" in output and "method=wanda" not in output
    assert result["heavy"] == [] and result["data"] == [] and result["run"] == [], result


def test_composing_and_validating_every_preset_imports_no_model_library() -> None:
    _, result = _run(_PRESETS)
    names = [name for name, _ in result["presets"]]
    assert len(names) == len(list((ROOT / "conf" / "method").glob("*.yaml"))) > 10
    assert dict(result["presets"])["tamp"] and dict(result["presets"])["sparsegpt"] == "sparsegpt"
    assert result["heavy"] == [], f"composing and validating the presets imported {result['heavy']}"


# Hydra's own --help and --info: the decorated main called directly, past tamp's cli() and tamp.cli.help
_HYDRA_HELP = textwrap.dedent("""
    import sys
    sys.argv = ["run", *sys.argv[1:]]
    from tamp.cli.run_command import main
    main()
""")


def _ours_and_hydras(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess,
                                                                             subprocess.CompletedProcess]:
    env = {**os.environ, **(env or {})}
    ours = subprocess.run([sys.executable, "-m", "tamp.run", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)
    hydras = subprocess.run([sys.executable, "-c", _HYDRA_HELP, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=env)
    return ours, hydras


@pytest.mark.parametrize("args", [
    ["--help"], ["-h", "method=sparsegpt", "+experiment=toy_demo"],
    ["--info"], ["method=sparsegpt", "+experiment=toy_demo", "--info"], ["-i", "defaults-tree", "sparsity.target=0.6"],
    ["--cfg", "all", "method=sparsegpt"], ["-c", "job", "--resolve", "-p", "method"],
], ids=["help", "help-with-overrides", "info", "info-with-overrides", "info-defaults-tree", "cfg-all",
        "cfg-job-package"])
def test_help_info_and_cfg_are_hydras_own(args: list[str]) -> None:
    """The same text as Hydra's --help, --info and --cfg: every group (conf/, the studies, the components' store
    nodes), the search path, the defaults tree and list, the composed config, each computed once (tamp.cli.help)."""
    ours, hydras = _ours_and_hydras(*args)
    assert ours.returncode == hydras.returncode == 0, ours.stderr[-2000:] + hydras.stderr[-2000:]
    assert ours.stdout == hydras.stdout
    if args[0] in ("--help", "-h"):
        expected = ("experiment: ", "method/allocation: ", "pruner: ", "method: ")
    elif args[0] in ("--cfg", "-c"):
        expected = ("  pruner: sparsegpt", "hydra:", "  runtime:") if "all" in args else ("# @package method", "pruner: wanda")
    elif len(args) > 1 and args[1] == "defaults-tree":
        expected = ("Defaults Tree", "  run:", "    method: wanda:", "      method/allocation: uniform",
                    "    sparsity: unstructured")
    else:
        expected = ("Config search path", "Defaults Tree", "Defaults List", "Config", "sparsity:", "  target: 0.5")
        assert ("pruner: sparsegpt" in ours.stdout) == ("method=sparsegpt" in args)
    for line in expected:
        assert f"\n{line}" in "\n" + ours.stdout, line


def test_info_and_help_with_a_search_path_of_the_command_line(tmp_path: Path) -> None:
    """`hydra.searchpath=[...]` changes the config repository: the answers read from it as Hydra's do (a method
    file of that folder is composed and listed), and the other answers are left as they were."""
    (tmp_path / "method").mkdir()
    (tmp_path / "method" / "extra.yaml").write_text("defaults:\n  - wanda\n  - _self_\nname: extra\n")
    where = f"hydra.searchpath=[file://{tmp_path}]"
    info = None
    for args in ([where, "method=extra", "--info"], [where, "-h"]):
        ours, hydras = _ours_and_hydras(*args)
        assert ours.returncode == hydras.returncode == 0, ours.stderr[-2000:] + hydras.stderr[-2000:]
        assert ours.stdout == hydras.stdout
        info = info or ours.stdout
    assert f"file://{tmp_path}" in info and "method: extra:" in info and "\n  name: extra\n" in info


@pytest.mark.parametrize("line", [
    "tamp-run method=", "tamp-run ", "tamp-run sparsity.ta", "tamp-run method=das method.allocation.",
    "tamp-run +experiment=", "tamp-run method/",
])
def test_tab_completion_is_hydras_own(line: str) -> None:
    """A TAB's answer (`-sc query=bash` with the shell's COMP_LINE) is Hydra's own: groups, options, keys of the
    composed config, the components' store nodes among them."""
    ours, hydras = _ours_and_hydras("-sc", "query=bash", env={"COMP_LINE": line})
    assert ours.returncode == hydras.returncode == 0, ours.stderr[-2000:] + hydras.stderr[-2000:]
    assert ours.stdout == hydras.stdout and ours.stdout.strip()


# every preset composed and validated with tamp's store entries (tamp.methods.presets.store_settings: each node made
# when Hydra first loads it), then again with each entry stored by Hydra's own ConfigStore.store
_STORED_AS_HYDRA_STORES = textwrap.dedent("""
    import json
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf
    from tamp.cli import CONF_DIR
    from tamp.cli.schema import register_schema, validate
    from tamp.methods.presets import preset_names

    def composed():
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfgs = [compose("run", overrides=[f"method={name}"]) for name in preset_names()]
            cfgs.append(compose("run", overrides=["method=das", "method/tokens=random", "method/allocation=owl"]))
        return [[OmegaConf.to_yaml(cfg), repr(validate(cfg))] for cfg in cfgs]

    def store_eagerly(folder, group):
        for key, entry in list(folder.items()):
            if isinstance(entry, dict):
                store_eagerly(entry, f"{group}/{key}" if group else key)
            elif hasattr(entry, "settings"):
                ConfigStore.instance().store(name=key, node=entry.settings, group=group or None)
                assert type(folder[key]).__name__ == "ConfigNode"

    register_schema()
    ours = composed()
    store_eagerly(ConfigStore.instance().repo, "")
    print(json.dumps({"count": len(ours), "same": composed() == ours}))
""")


def test_stored_settings_compose_as_hydras_own_store() -> None:
    """The run schema and every component's settings, stored to be converted on first load, compose and validate
    exactly as the nodes Hydra's `ConfigStore.store` makes."""
    _, result = _run(_STORED_AS_HYDRA_STORES)
    assert result["count"] > 10 and result["same"], result


def test_a_stored_entry_is_made_once_and_loads_as_hydras_own() -> None:
    """Hydra's `ConfigStore.load` hands out its own kind of entry with a private copy of the node, and the node is
    made from the dataclass once, however many compositions (each one copies the whole store first) load it."""
    import copy
    from dataclasses import dataclass, field

    from hydra.core.config_store import ConfigNode, ConfigStore
    from omegaconf import OmegaConf

    from tamp.methods.presets import store_settings

    made: list[int] = []

    @dataclass
    class Probe:
        name: str = "probe"
        sizes: list[int] = field(default_factory=lambda: made.append(1) or [1, 2])  # once per conversion

    store = ConfigStore.instance()
    try:
        store_settings("lazy", Probe, "tamp_test_probe")
        store.store(name="eager", node=Probe, group="tamp_test_probe")
        eager = store.load("tamp_test_probe/eager.yaml")
        made.clear()
        repositories = [copy.deepcopy(store) for _ in range(3)]  # as Hydra's caching repository, before composing
        for loaded in [repository.load("tamp_test_probe/lazy.yaml") for repository in repositories]:
            assert type(loaded) is ConfigNode
            assert (loaded.name, loaded.group, loaded.package, loaded.provider) == ("lazy.yaml", "tamp_test_probe",
                                                                                     None, None)
            assert loaded.node == eager.node and OmegaConf.get_type(loaded.node) is Probe
        assert len(made) == 1
        lazy = store.load("tamp_test_probe/lazy.yaml")
        lazy.node.sizes.append(3)  # a composition changes its copy, never the stored node
        assert store.load("tamp_test_probe/lazy.yaml").node.sizes == [1, 2]
        store_settings("lazy", Probe, "tamp_test_probe")  # the same dataclass again: the entry is kept
        assert len(made) == 1 and store.load("tamp_test_probe/lazy.yaml").node == eager.node
    finally:
        store.repo.pop("tamp_test_probe", None)


def test_logging_off_runs_without_wandb_installed(monkeypatch, tmp_path) -> None:
    """`logger=none` must not need the wandb package (a GPU node's image may lack it): nothing imports it."""
    import sys

    from tamp.cli.schema import WandbConfig
    from tamp.tracking.wandb_logger import WandbRun

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now fails, as where it is not installed
    run = WandbRun(WandbConfig(enabled=False), "cell", {}, tmp_path, [])
    run.rename("other")
    run.retag(["a"])
    run.finish(failed=False)
    assert run.run is None
