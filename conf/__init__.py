"""tamp's Hydra config groups and run.yaml, the package `tamp.conf` once installed (pyproject.toml maps
conf/ onto it, so a wheel carries the configs). Where they are: tamp.core.paths.CONF_DIR."""
