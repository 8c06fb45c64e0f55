"""Where things are: tamp's Hydra configs (the one place that says so), and the names of a run folder's own files.

The checkout keeps them at the top, `conf/` (the groups and run.yaml) and `experiments/` (one study each);
pyproject.toml maps those folders onto the packages `tamp.conf` and `tamp.experiments`. A wheel therefore
carries them inside tamp/, and an editable install's finder points the packages back at the top-level
folders: asking importlib where the package is gives the right folder for both, where a path computed
from this file would not. The CLI, `tamp.prune` by preset name, the Hydra plugin that serves the studies
(hydra_plugins/tamp_experiments) and the tests all read CONF_DIR and EXPERIMENTS_DIR from here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: the Hydra config group the studies of EXPERIMENTS_DIR form: `+experiment=NAME`
EXPERIMENT_GROUP = "experiment"


def package_dir(package: str) -> Path:
    """The folder of the installed config package `package`; a one-line error when it is not one."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ImportError(f"{package} is not installed: install tamp (`make install`, or pip install -e .)")
    if spec.origin is None or Path(spec.origin).name != "__init__.py":  # a bare folder shadowing the package
        where = ", ".join(spec.submodule_search_locations or []) or "?"
        raise ImportError(
            f"{package} resolves to {where}, a folder without __init__.py (left from before the configs moved "
            "to the top-level conf/ and experiments/?): move your own files out (this machine's settings go "
            "in conf/local/), delete that folder and reinstall (`make install`)"
        )
    return Path(spec.origin).resolve().parent


CONF_DIR = package_dir("tamp.conf")
EXPERIMENTS_DIR = package_dir("tamp.experiments")

#: what a run keeps in its own folder (tamp's and Hydra's files): never a save target (tamp.models.saving)
RUN_DIR_OWN = (".hydra", "checkpoint", "wandb", "results.json", "run.log", "prune_report.md", ".tamp.lock",
               "config_resolved.yaml")
