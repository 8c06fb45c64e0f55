"""The studies of experiments/ served to Hydra as the config group `experiment`, for tamp's own config only.

Hydra finds a group only as a folder of that name under a search path entry, and the studies live in a
top-level folder of their own, outside conf/. Reading a folder from disk is also what defeats mapping
them into the config package: in an editable install the package is mapped but conf/experiment/ does not
exist on disk, so `+experiment=NAME` silently becomes the plain value `experiment: NAME`. Here the
folder's location comes from importlib (tamp.core.paths.EXPERIMENTS_DIR), the same for a wheel, an editable
install and the checkout: `ExperimentsSource` serves it as `experiment/`, and `ExperimentsSearchPath`
adds that source after the primary config directory when that directory is tamp's conf/ (other Hydra
applications in the environment see nothing). An unknown study stays Hydra's own error, which lists the
studies.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

SCHEME = "tamp-experiments"
GROUP = "experiment"  # tamp.core.paths.EXPERIMENT_GROUP; literal here so that loading this plugin imports no tamp


class ExperimentsSource(ConfigSource):
    """A folder of YAML files, each one config of the group `experiment` (nothing else: no other group)."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def _file(self, config_path: str) -> Path | None:
        group, _, name = config_path.strip("/").partition("/")
        if group != GROUP or not name or "/" in name:
            return None
        return Path(self.path) / self._normalize_file_name(name)

    def load_config(self, config_path: str) -> ConfigResult:
        file = self._file(config_path)
        if file is None or not file.is_file():
            raise ConfigLoadError(f"Config not found : {self.full_path()}/{config_path}")
        with open(file, encoding="utf-8") as f:  # as Hydra's own file source reads a config
            header = ConfigSource._get_header_dict(f.read(512))
            f.seek(0)
            config = OmegaConf.load(f)
        return ConfigResult(config=config, path=self.full_path(), provider=self.provider, header=header)

    def available(self) -> bool:
        return Path(self.path).is_dir()

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in ("", GROUP) and self.available()

    def is_config(self, config_path: str) -> bool:
        file = self._file(config_path)
        return file is not None and file.is_file()

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        path = config_path.strip("/")
        if path == "" and results_filter in (None, ObjectType.GROUP) and self.available():
            return [GROUP]
        if path == GROUP and results_filter in (None, ObjectType.CONFIG) and self.available():
            return sorted(p.stem for p in Path(self.path).glob("*.yaml") if p.is_file())
        return []


def _is_dir(entry: str, folder: Path) -> bool:
    """Whether a search path entry (`/abs`, `file:///abs`) is `folder`."""
    path = entry.removeprefix("file://")
    return "://" not in path and os.path.isabs(path) and Path(path).resolve() == folder


class ExperimentsSearchPath(SearchPathPlugin):
    """Adds the studies after the primary config directory when that is tamp's conf/ (`@hydra.main` of
    tamp.cli.run_command, `initialize_config_dir(CONF_DIR)`, `pkg://tamp.conf`)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        main = [e.path for e in search_path.get_path() if e.provider == "main" and e.path]
        if not main:
            return
        try:
            from tamp.core.paths import CONF_DIR, EXPERIMENTS_DIR
        except ImportError:  # tamp's configs are not installed here: nothing to serve (tamp's CLI says why)
            return
        if any(p.rstrip("/") == "pkg://tamp.conf" or _is_dir(p, CONF_DIR) for p in main):
            search_path.append(SCHEME, f"{SCHEME}://{EXPERIMENTS_DIR}")
