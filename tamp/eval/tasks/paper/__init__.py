"""tamp's wrappers of lmms-eval built-in tasks for the paper's suites (they need lmms-eval's own tasks indexed)."""
