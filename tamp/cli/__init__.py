"""The application around the library: the Hydra entry and its schema, the Fabric runner, the checks run
before anything loads, run directories (their lock, save targets, a sweep run again), the sweep summary
and the report CLI.

The library (tamp.api.functions, tamp.methods.composed, tamp.core.config and the packages under tamp/) knows nothing of these;
they only look down. `python -m tamp.run` and `python -m tamp.report` keep working through the thin
modules tamp/run.py and tamp/report.py.
"""

from tamp.core.paths import CONF_DIR  # the Hydra configs: conf/ of the checkout, or tamp/conf/ inside a wheel

__all__ = ["CONF_DIR"]
