"""`python -m tamp.report DIR ...`: the report entry at the name users paste; it lives in tamp.cli.report_command."""

import sys

from tamp.cli.report_command import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
