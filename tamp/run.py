"""`python -m tamp.run ...`: the run entry at the name users paste; it lives in tamp.cli.run_command."""

from tamp.cli.run_command import cli, main, run

__all__ = ["cli", "main", "run"]

if __name__ == "__main__":
    cli()
