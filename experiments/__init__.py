"""The studies, one YAML each (`python -m tamp.run -m +experiment=NAME`), the package `tamp.experiments`
once installed (pyproject.toml maps experiments/ onto it). Hydra sees them as the `experiment` group through
hydra_plugins/tamp_experiments; where they are: tamp.core.paths.EXPERIMENTS_DIR."""
