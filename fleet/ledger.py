"""The ledger in history: which deltas a tick commit applied and quarantined.

The tree keeps ``limits.window`` ticks of ledger; every tick commit adds its
lines, so the diff between a tick commit and its parent names exactly the
deltas that commit applied (new ledger lines) and quarantined (new quarantine
lines). Replay and ``fleet log`` read history this way, however old.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fleet import canonical
from fleet.config import Limits
from fleet.delta import Arrival, Delta, file_path, from_body
from fleet.git import Git
from fleet.resolve import RECORDS, outside_of
from fleet.state import LEDGER_DIR, QUARANTINE_DIR

TRAILER_TICK = "Fleet-Tick"
_TICK = re.compile(rf"^{TRAILER_TICK}: (\d+)$", re.M)


def tick_of(message: str) -> int | None:
    """The tick a commit message says it merged, or None for other commits."""
    m = _TICK.search(message)
    return int(m.group(1)) if m else None


@dataclass
class TickInputs:
    applied: list[Delta]
    quarantined: list[dict[str, Any]]
    outside: list[dict[str, Any]]  # fallback decisions the merge was handed


def _new_lines(git: Git, rows: list[tuple[str, str, str]]) -> dict[str, list[bytes]]:
    zero = "0" * 40
    shas = [s for old, new, _ in rows for s in (old, new) if s != zero]
    blobs = git.cat_blobs(shas)
    out: dict[str, list[bytes]] = {}
    for old, new, path in rows:
        if new == zero:
            continue
        before = set(blobs[old].splitlines()) if old != zero else set()
        out[path] = [ln for ln in blobs[new].splitlines() if ln and ln not in before]
    return out


def tick_inputs(git: Git, parent: str, commit: str, limits: Limits) -> TickInputs:
    """The deltas a tick commit applied and the records it quarantined."""
    rows = git.changed(parent, commit, [LEDGER_DIR + "/", QUARANTINE_DIR + "/"])
    applied: list[Delta] = []
    quarantined: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    for path, lines in _new_lines(git, rows).items():
        for line in lines:
            body = canonical.load(line, path)
            if path.endswith("/" + RECORDS):
                decisions.append(body)
            elif path.startswith(LEDGER_DIR + "/"):
                applied.append(from_body(body, Arrival("ledger", file_path(body), line), limits))
            else:
                quarantined.append(body)
    return TickInputs(applied, quarantined, outside_of(decisions))
