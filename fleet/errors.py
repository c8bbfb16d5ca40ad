"""Expected failures and the exit codes the README documents.

An expected failure is raised as :class:`FleetError` and becomes one line on
stderr; anything else is a bug, reported briefly with the traceback written to
a log file (see ``fleet.main``).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOTHING = 3


class FleetError(Exception):
    """A failure the message explains; ``code`` is the process exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


class UsageError(FleetError):
    """Exit 2: the command was called wrongly; the message says what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class NothingToDo(FleetError):
    """Exit 3: the command had nothing to do (no pending deltas, no ready task)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_NOTHING)
