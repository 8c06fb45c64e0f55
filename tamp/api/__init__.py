"""The Python entry (`tamp.prune`, `tamp.save`) and what it accepts as a model and a calibration set."""
