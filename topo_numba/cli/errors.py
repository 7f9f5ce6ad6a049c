"""The command line's one error type."""


class CLIError(Exception):
    """A problem to report to the user as one line (exit status 1)."""
