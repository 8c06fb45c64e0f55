"""What every layer stands on and nothing heavy: the job's typed config, the registries, the engine's
protocols with the allocations, file and error helpers, progress bars, where the Hydra configs are."""
