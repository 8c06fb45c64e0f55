"""A method as the run config names it: the composed pruner x allocation x tokens, its components
resolved from the registries, the conf/method presets and their names."""
