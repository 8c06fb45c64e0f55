"""`tamp-run --help`, `--info`, `--cfg` and tab completion exactly as Hydra answers them, without Hydra's repeated
work.

Hydra's help lists every config group with one lookup per group and option kind (about 125), and each
lookup deep-copies the config repository, the whole structured config store with it (the run schema,
every component's settings, Hydra's own nodes): about 10 ms a lookup, most of `--help`'s time. Hydra's
main branch stopped copying the store (its pull request 2928); the release tamp pins (1.3) still does.
`--info` composes the same config twice and builds its defaults list four times, each time from a new
copy of the repository that loads and parses every YAML file again; `--cfg` and a completion (`-sc query=bash`,
what a TAB runs) copy it once or more.

`show_answer` runs Hydra's own `app_help`, `show_info`, `show_cfg` or `shell_completion` (the same search path,
composition, templates, flags and overrides) with a config loader that does each piece of that work once per
command line: the repository is copied only if a `hydra.searchpath` changes it, each file is loaded once, the
config is composed once (each caller of `--info` gets its own copy), the printers' defaults list and each
group's options are computed once (the composition still builds its own defaults list, inside Hydra's
loader: about 14 ms of `--info`). The answers are Hydra's, byte for byte (tests/test_cli_light.py compares them).
None of them runs a job, so the run's pre-run check and its modules are not loaded for them either.
A command line that also names another config (`-cn`, `-cp`, `-cd`) or asks for something else as well
is left to Hydra as it is.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.config_repository import CachingConfigRepository, IConfigRepository
from hydra._internal.defaults_list import DefaultsList
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.types import RunMode
from omegaconf import DictConfig


class _SharedRepository(CachingConfigRepository):
    """Hydra's caching repository over the loader's own, copied only when its sources change.

    Hydra deep-copies the repository for every composition and listing so that a `hydra.searchpath`
    (the only thing that changes a repository: `initialize_sources`) stays in that one; loading and
    listing only read. Here the copy is made if and when the search path is changed.
    """

    def __init__(self, delegate: IConfigRepository) -> None:  # no copy yet: see the class
        self.delegate = delegate
        self.cache = {}
        self._copied = False

    def initialize_sources(self, config_search_path: ConfigSearchPath) -> None:
        if not self._copied:
            self.delegate, self._copied = copy.deepcopy(self.delegate), True
        super().initialize_sources(config_search_path)


class _ReadOnceLoader(ConfigLoaderImpl):
    """Hydra's config loader for a command that only prints: what Hydra recomputes for each question about the
    same command line (the repository with its loaded files, the composed config, the defaults list, a group's
    options) is computed once and reused."""

    def __init__(self, reuse_configs: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._reuse_configs = reuse_configs  # a composition asked for again is a copy of the first
        self._repos: dict[tuple, tuple[list[Override], CachingConfigRepository]] = {}
        self._configs: dict[tuple, DictConfig] = {}
        self._defaults: dict[tuple, DefaultsList] = {}
        self._options: dict[tuple, list[str]] = {}

    def _parse_overrides_and_create_caching_repo(
        self, config_name: str | None, overrides: list[str]
    ) -> tuple[list[Override], CachingConfigRepository]:
        key = (config_name, tuple(overrides))
        if key not in self._repos:  # Hydra's own: a new copy of the repository, every file loaded again
            parsed = OverridesParser.create().parse_overrides(overrides=overrides)
            repo = _SharedRepository(self.repository)
            self._process_config_searchpath(config_name, parsed, repo)
            self._repos[key] = parsed, repo
        return self._repos[key]

    def load_configuration(
        self,
        config_name: str | None,
        overrides: list[str],
        run_mode: RunMode,
        from_shell: bool = True,
        validate_sweep_overrides: bool = True,
    ) -> DictConfig:
        if not self._reuse_configs:  # asked for once: no copy to keep
            return super().load_configuration(config_name, overrides, run_mode, from_shell, validate_sweep_overrides)
        key = (config_name, tuple(overrides), run_mode, from_shell, validate_sweep_overrides)
        if key in self._configs:  # the copy kept by the first request, handed out once (a third one composes again)
            return self._configs.pop(key)
        cfg = super().load_configuration(config_name, overrides, run_mode, from_shell, validate_sweep_overrides)
        self._configs[key] = copy.deepcopy(cfg)  # each caller changes its own (`--info` deletes the hydra node)
        return cfg

    def compute_defaults_list(self, config_name: str | None, overrides: list[str], run_mode: RunMode) -> DefaultsList:
        key = (config_name, tuple(overrides), run_mode)
        if key not in self._defaults:  # only printed: one object serves every caller
            self._defaults[key] = super().compute_defaults_list(config_name, overrides, run_mode)
        return self._defaults[key]

    def get_group_options(
        self,
        group_name: str,
        results_filter: ObjectType | None = ObjectType.CONFIG,
        config_name: str | None = None,
        overrides: list[str] | None = None,
    ) -> list[str]:
        key = (group_name, results_filter, config_name, tuple(overrides or ()))
        if key not in self._options:  # `--help` asks for each group's options twice
            self._options[key] = super().get_group_options(group_name, results_filter, config_name, overrides)
        return list(self._options[key])


def hydra_answer(argv: Sequence[str]) -> str | None:
    """"help", "info", "cfg" or "completion" where Hydra would print the app's `--help`, `--info`, `--cfg` or a
    shell completion (`-sc`) for tamp's own config (nothing else asked on the same command line), else None."""
    from hydra._internal.utils import get_args_parser

    if not any(a in _FLAGS or a.startswith(("--info=", "--cfg=")) for a in argv):
        return None  # most commands: no parsing
    args = get_args_parser().parse_args(list(argv))
    if args.config_name or args.config_path or args.config_dir or args.experimental_rerun:
        return None
    if args.help:  # Hydra answers --help before looking at anything else
        return "help"
    asked = [name for name, flag in (("info", args.info), ("cfg", args.cfg), ("completion", args.shell_completion))
             if flag]
    if args.hydra_help or args.run or args.multirun or len(asked) != 1:
        return None  # Hydra's own answer, or its error for two commands at once
    if args.resolve and asked[0] != "cfg":  # Hydra's error: --resolve goes with --cfg or --help
        return None
    if asked[0] == "completion" and not _plain_completion(args.overrides):
        return None
    return asked[0]


_FLAGS = ("--help", "-h", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc")
#: the shells of Hydra's own completion plugins
_SHELLS = ("bash", "zsh", "fish")


def _plain_completion(overrides: Sequence[str]) -> bool:
    """`query=SHELL` (with the COMP_LINE the shell sets), `install=SHELL` or `uninstall=SHELL` for one of Hydra's
    shells: what a shell and its user run. Anything else ends in Hydra's error, whose traceback names the frame
    that called Hydra: it is left to Hydra's own entry so that it stays the same."""
    if len(overrides) != 1:
        return False
    command, _, shell = overrides[0].partition("=")
    if command == "query":
        return shell in _SHELLS and "COMP_LINE" in os.environ
    return command in ("install", "uninstall") and shell in _SHELLS


def show_answer(task_function: Callable[..., Any], config_path: str, config_name: str, argv: Sequence[str]) -> None:
    """Print Hydra's `--help`, `--info`, `--cfg` or shell completion for `task_function`'s app (what `@hydra.main`
    would do with this command line), its work done once."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import (
        create_automatic_config_search_path,
        detect_calling_file_or_module_from_task_function,
        detect_task_name,
        get_args_parser,
        run_and_report,
    )
    from hydra.core.global_hydra import GlobalHydra

    parser = get_args_parser()
    args = parser.parse_args(list(argv))
    calling_file, calling_module = detect_calling_file_or_module_from_task_function(task_function)
    search_path = create_automatic_config_search_path(calling_file, calling_module, config_path)
    loader = _ReadOnceLoader(config_search_path=search_path, reuse_configs=bool(args.info))  # --info composes twice
    hydra = Hydra(task_name=detect_task_name(calling_file, calling_module), config_loader=loader)
    GlobalHydra.instance().initialize(hydra)
    try:
        if args.help:
            hydra.app_help(config_name=config_name, args_parser=parser, args=args)
        elif args.info:
            hydra.show_info(args.info, config_name=config_name, overrides=args.overrides)
        elif args.shell_completion:  # as Hydra's own -sc: a failure is reported the way Hydra reports it
            run_and_report(lambda: hydra.shell_completion(config_name=config_name, overrides=args.overrides))
        else:  # as Hydra's own --cfg: a failure is reported the way Hydra reports it
            run_and_report(lambda: hydra.show_cfg(config_name=config_name, overrides=args.overrides,
                                                  cfg_type=args.cfg, package=args.package, resolve=args.resolve))
    finally:
        GlobalHydra.instance().clear()
