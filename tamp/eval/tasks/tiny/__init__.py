"""Tiny offline lmms-eval tasks: "what colour is the square?" on images drawn from a seed."""
