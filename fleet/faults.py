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
    "merge.before-commit",
    "merge.after-commit",
    "merge.during-push",
    "merge.after-push",
)


def point(name: str) -> None:
    """Die here if the tests asked for it."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
