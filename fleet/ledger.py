"""The ledger in history: which deltas a tick commit applied and quarantined.

The tree keeps the ledger of the tick just merged and of the ``limits.window``
ticks before it (window + 1 folders); every tick commit adds its
lines, so the diff between a tick commit and its parent names exactly the
deltas that commit applied (new ledger lines) and quarantined (new quarantine
lines). Replay and ``fleet log`` read history this way, however old.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleet import canonical
from fleet.config import CONFIG_PATH, Limits
from fleet.delta import Arrival, Delta, file_path, from_body
from fleet.git import Git
from fleet.profile_merge import RECORDS as MEANINGS
from fleet.resolve import RECORDS, REVERTS, outside_of
from fleet.state import CONFLICT_DIR, LEDGER_DIR, QUARANTINE_DIR

TRAILER_TICK = "Fleet-Tick"
# The trailers a tick commit ends with (fleet.commands.merge.message), in order.
TRAILERS = (TRAILER_TICK, "Fleet-Applied", "Fleet-Late", "Fleet-Quarantined", "Fleet-Held", "Fleet-Resolved")
_TRAILER = re.compile(r"([A-Za-z-]+): ([0-9]{1,19})")


def tick_of(message: str) -> int | None:
    """The tick a commit message says it merged, or None for other commits.

    Only fleet's own trailers count: the last paragraph must be made of known
    keys alone, each at most once, ``Fleet-Tick`` among them. A line that
    merely looks like a trailer elsewhere (a forged file name in a list of
    quarantined files, a person's message) is not read."""
    last = message.rstrip("\n").rsplit("\n\n", 1)[-1]
    found: dict[str, int] = {}
    for line in last.split("\n"):
        m = _TRAILER.fullmatch(line)
        if m is None or m.group(1) not in TRAILERS or m.group(1) in found:
            return None
        found[m.group(1)] = int(m.group(2))
    return found.get(TRAILER_TICK)


@dataclass
class TickInputs:
    applied: list[Delta]
    quarantined: list[dict[str, Any]]
    outside: list[dict[str, Any]]  # fallback decisions the merge was handed
    meanings: list[dict[str, Any]] = field(default_factory=list)  # the model's merges (fleet.profile_merge)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # every decision on a conflict it applied
    reverts: list[dict[str, Any]] = field(default_factory=list)  # reverts it applied or refused


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
    meanings: list[dict[str, Any]] = []
    reverts: list[dict[str, Any]] = []
    for path, lines in _new_lines(git, rows).items():
        for line in lines:
            body = canonical.load(line, path)
            if path.endswith("/" + RECORDS):
                decisions.append(body)
            elif path.endswith("/" + MEANINGS):
                meanings.append(body)
            elif path.endswith("/" + REVERTS):
                reverts.append(body)
            elif path.startswith(LEDGER_DIR + "/"):
                applied.append(from_body(body, Arrival("ledger", file_path(body), line), limits))
            else:
                quarantined.append(body)
    return TickInputs(applied, quarantined, outside_of(decisions), meanings, decisions, reverts)


def held_in(git: Git, parent: str, commit: str) -> dict[str, list[str]]:
    """Delta id -> the conflicts that tick commit ``commit`` opened or joined with its changes."""
    from fleet.errors import FleetError
    from fleet.records import Conflict

    out: dict[str, list[str]] = {}
    rows = [r for r in git.changed(parent, commit, [CONFLICT_DIR + "/"]) if r[1] != "0" * 40]
    blobs = git.cat_blobs([new for _, new, _ in rows])
    for _, new, path in rows:
        try:
            c = Conflict.parse(blobs[new], path)
        except FleetError:
            continue  # a hand-edited conflict file: status and replay name it
        for x in c.candidates:
            out.setdefault(x["delta"], []).append(f"{c.where} held in conflict {c.id} (since tick {c.opened_tick})")
    return out


def pruned_ledgers(git: Git, head: str, base: Any) -> Callable[[int], str | None]:
    """For a late delta's tick ``t``: why its ledger is no longer in main's tree
    (``base``, at ``head``), or None while it is whole.

    The merge of tick j deletes the ledger of ticks before ``j - limits.window``. Lower the
    window, then raise it, and a late delta of a tick whose ledger went is inside the
    window again, with nothing left to tell it from the copy applied before: applied
    again, it would be applied twice. So a tick is judged by the merges since it:
    the ledger of ``t`` went if a tick commit j after it kept fewer than ``j - t``
    ticks. A ledger or quarantine folder of ``t`` or an older tick still in the tree
    says no merge deleted ``t``'s (each deletes every folder below its bound); only
    otherwise is history read, once, as far back as the window reaches. A history
    that does not reach ``t`` (a shallow clone) cannot say: the delta is not applied."""
    from fleet.outside import tick_commits  # (it imports this module)

    kept: list[int] | None = None  # the ticks of the ledger and quarantine folders in the tree, read once
    windows: dict[int, int] = {}  # tick -> the window its merge kept (tick commits since the oldest asked for)
    read_to_start = reaches = False  # history read to its first commit here; that commit is the true start

    def read_back(t: int) -> None:
        nonlocal read_to_start, reaches
        limit = 64
        while True:
            rows = git.first_parent_log(head, limit=limit)  # oldest first
            ticks = tick_commits(git, rows)
            covered = min(ticks.values(), default=t + 2) <= t + 1
            read_to_start = len(rows) < limit or not rows or rows[0][1] is None
            if covered or read_to_start:
                break
            limit *= 4
        blobs = git.cat_maybe([f"{c}:{CONFIG_PATH}" for c in ticks])
        for c, n in ticks.items():
            windows[n] = _window(blobs.get(f"{c}:{CONFIG_PATH}"))
        if read_to_start:
            reaches = git.proc("rev-parse", "--is-shallow-repository").stdout.strip() != b"true"

    def pruned(t: int) -> str | None:
        nonlocal kept
        if kept is None:  # (asked only of a late delta: most merges never read these)
            kept = sorted({int(p.split("/")[2]) for d in (LEDGER_DIR, QUARANTINE_DIR) for p in base.under(d)
                           if p.split("/")[2].isdigit()})
        if kept and kept[0] <= t:
            return None
        if not read_to_start and (not windows or min(windows) > t + 1):
            read_back(t)
        for j in sorted(windows):
            if j > t and j - windows[j] > t:
                return (f"the ledger of tick {t} was deleted by the merge of tick {j}, which kept ticks "
                        f"{j - windows[j]} to {j} (limits.window was {windows[j]} then): a late delta of tick {t} cannot be "
                        "told from one applied before, so it is not applied")
        if (not windows or min(windows) > t + 1) and not reaches:
            return (f"the history here does not reach tick {t} (a shallow clone), so whether its ledger was "
                    "deleted cannot be told: a late delta of that tick is not applied")
        return None

    return pruned


def _window(data: bytes | None) -> int:
    """``limits.window`` of a tick commit's config (a tick commit's config is valid:
    a value that is not, or none, counts as the least, 1: as if most was deleted)."""
    try:
        w = canonical.parse(data or b"", max_depth=8).get("limits", {}).get("window", Limits().window)
    except (canonical.JSONProblem, AttributeError):
        return 1
    return w if type(w) is int and w >= 1 else 1
