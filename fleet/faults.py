"""Named crash points for fault-injection tests.

``FLEET_CRASH_AT=<point>`` makes the process kill itself with SIGKILL when it
reaches that point: no cleanup handler, no finally block runs, exactly as if
the machine died there. The tests use it to prove that every step of a worker
and of the merge can die and be recovered from without losing or doubling a
delta. Unset (always, outside tests) it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "FLEET_CRASH_AT"

POINTS = (
    "work.after-fetch",
    "work.during-streams",
    "work.after-commit",
    "work.during-push",
    "work.cleanup",
    "merge.before-commit",
    "merge.after-commit",
    "merge.during-push",
    "merge.after-push",
    "task.after-commit",
    "task.during-push",
)


def point(name: str) -> None:
    """Die here if the tests asked for it (``<point>:SIGINT`` or ``<point>:SIGTERM``
    sends that signal instead, to test what an interrupt at that step leaves)."""
    wanted = os.environ.get(ENV)
    if wanted is None:
        return
    where, _, sig = wanted.partition(":")
    if where == name:
        os.kill(os.getpid(), getattr(signal, sig) if sig in ("SIGINT", "SIGTERM") else signal.SIGKILL)
