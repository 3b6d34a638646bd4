"""``python -m fastconv``: the command-line interface (see :mod:`fastconv.cli`)."""

import sys

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
