"""tamp's studies (experiments/) as Hydra's `experiment` group (Hydra finds config sources and search path
plugins in the hydra_plugins namespace package)."""
