"""A study asked for is a study applied: `+experiment=NAME` must never run the defaults under NAME's label.

Each study file sets `experiment: NAME` itself, and Hydra turns `+experiment=NAME` into that same plain
value when no `experiment` group is on its search path (tamp's conf/ not the primary config directory,
the plugin serving experiments/ not installed). The config then looks like the study's, but its sweep
and settings are missing; only Hydra's record of the groups it chose tells the two apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tamp.core.paths import EXPERIMENT_GROUP, EXPERIMENTS_DIR


def check_study_applied(experiment: Any, choices: Mapping[str, Any]) -> None:
    """`experiment` (the config's value) against `hydra.runtime.choices`: a ValueError when it is a bare value."""
    if experiment is None or EXPERIMENT_GROUP in choices:
        return
    raise ValueError(
        f"+{EXPERIMENT_GROUP}={experiment} was not applied as a study: Hydra has no '{EXPERIMENT_GROUP}' group "
        f"on its search path (tamp's studies, {EXPERIMENTS_DIR}, are served by hydra_plugins/tamp_experiments "
        "when tamp's conf/ is the primary config directory); valid: reinstall tamp (`make install` or "
        "pip install .) and drop --config-path/--config-name"
    )
