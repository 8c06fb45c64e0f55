"""`tamp-run --help` exactly as Hydra prints it, without Hydra's two seconds of copying.

Hydra's help lists every config group with one lookup per group and option kind (about 125), and each
lookup deep-copies the config repository, the whole structured config store with it (the run schema,
every component's settings, Hydra's own nodes): about 10 ms a lookup, most of `--help`'s time. Hydra's
main branch stopped copying the store (its pull request 2928); the release tamp pins (1.3) still does.

`show_help` runs Hydra's own app_help (the same search path, composition, `hydra.help` template, flags
and overrides) with a config loader that answers those listing lookups from one copy of the repository,
the same answer each time: the groups come from every search path entry (conf/, the studies, the
components' store nodes, `hydra.searchpath`) as Hydra lists them. A `--help` that also names another
config (`-cn`, `-cp`, `-cd`) is left to Hydra as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.object_type import ObjectType


class _OneCopyLoader(ConfigLoaderImpl):
    """Hydra's config loader; a group listing with no config and no overrides is read from one repository copy."""

    _listing: Any = None

    def get_group_options(
        self,
        group_name: str,
        results_filter: ObjectType | None = ObjectType.CONFIG,
        config_name: str | None = None,
        overrides: list[str] | None = None,
    ) -> list[str]:
        if config_name is not None or overrides:
            return super().get_group_options(group_name, results_filter, config_name, overrides)
        if self._listing is None:  # what Hydra builds for each lookup, built once
            self._listing = self._parse_overrides_and_create_caching_repo(None, [])[1]
        return self._listing.get_group_options(group_name, results_filter)


def wants_app_help(argv: Sequence[str]) -> bool:
    """Whether Hydra would print the app's `--help` for this command line, for tamp's own config."""
    from hydra._internal.utils import get_args_parser

    if not any(a in ("--help", "-h") for a in argv):  # most commands: no parsing
        return False
    args = get_args_parser().parse_args(list(argv))
    return bool(args.help) and not (args.config_name or args.config_path or args.config_dir
                                    or args.experimental_rerun)


def show_app_help(task_function: Callable[..., Any], config_path: str, config_name: str,
                  argv: Sequence[str]) -> None:
    """Print Hydra's `--help` for `task_function`'s app (what `@hydra.main` would), the group listing read once."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import (
        create_automatic_config_search_path,
        detect_calling_file_or_module_from_task_function,
        detect_task_name,
        get_args_parser,
    )
    from hydra.core.global_hydra import GlobalHydra

    parser = get_args_parser()
    args = parser.parse_args(list(argv))
    calling_file, calling_module = detect_calling_file_or_module_from_task_function(task_function)
    search_path = create_automatic_config_search_path(calling_file, calling_module, config_path)
    hydra = Hydra(task_name=detect_task_name(calling_file, calling_module),
                  config_loader=_OneCopyLoader(config_search_path=search_path))
    GlobalHydra.instance().initialize(hydra)
    hydra.app_help(config_name=config_name, args_parser=parser, args=args)
