"""Exit statuses of the ``fastconv`` command, and the error that ends a run with status 1.

A leaf module: every ``_cli_*`` module may raise :class:`CommandError`, and
``fastconv.cli.main`` turns it into one line on stderr and exit status 1.
"""

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_INTERRUPTED", "CommandError"]

# 0 success, 1 a runtime failure (unreadable data, download failure, NaN/Inf
# loss), 2 bad arguments (argparse's usage message), 130 Ctrl-C (as a shell).
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CommandError(Exception):
    """A failure the user can act on: printed as one line, exit status 1."""
