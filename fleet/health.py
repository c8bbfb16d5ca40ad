"""Workers' health, read from main and the queue: the last tick each worker
delivered, which are dead, and whether the merge itself has stopped.

`fleet watchdog` acts on these conclusions (marks, returns) and `fleet status`
reports them; neither command imports the other.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from fleet.config import Config
from fleet.repo import TRACKING, FleetRepo
from fleet.state import LEDGER_DIR, QUARANTINE_DIR, GitSnapshot
from fleet.tasks import Queue, ago

_DELIVERY = re.compile(rf"^(?:{LEDGER_DIR}|{QUARANTINE_DIR})/(\d+)/([A-Za-z0-9][A-Za-z0-9_.-]*)\.jsonl$")


def engine_snapshot(repo: FleetRepo) -> GitSnapshot:
    """Main as the merge engine last left it: main itself, or, while a change fleet
    refuses sits on it (fleet.outside.main_refusal: a clock moved by hand, say),
    the last tick commit, which no tick has built on since. Health is judged there:
    a clock pushed ahead by hand makes no worker dead."""
    from fleet.outside import main_refusal

    head = repo.main()
    refused = main_refusal(repo.git, head)
    return repo.snapshot(head if refused is None else refused.base)


def deliveries(snap: GitSnapshot) -> tuple[int, dict[str, int]]:
    """Main's tick, and the last tick each worker delivered in the ledger window."""
    last: dict[str, int] = {}
    for path in snap.paths():
        m = _DELIVERY.match(path)
        if m and not m.group(2).startswith("_"):
            tick, worker = int(m.group(1)), m.group(2)
            last[worker] = max(last.get(worker, -1), tick)
    return snap.tick, last


def waiting_since(repo: FleetRepo) -> list[_dt.datetime]:
    """When each worker branch waiting for the merge was pushed, oldest first."""
    prefix = TRACKING + "fleet/" if repo.remote else "refs/heads/fleet/"
    names = {s.ref.name for s in repo.sources()}
    out = repo.git.text("for-each-ref", "--format=%(refname) %(committerdate:unix)", prefix)
    times = [int(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line.rsplit(" ", 1)[0] in names]
    return [_dt.datetime.fromtimestamp(t, _dt.UTC) for t in sorted(times)]


def stall(repo: FleetRepo, cfg: Config, tick: int, at: _dt.datetime) -> str | None:
    """Worker branches waiting for the merge more than twice the tick
    deadline: the merge, not a worker, has stopped. None if all is well."""
    waiting = waiting_since(repo)
    if not waiting:
        return None
    idle = (at - waiting[0]).total_seconds()
    if idle <= cfg.run.deadline_seconds * 2:
        return None
    return (f"{len(waiting)} worker branch{'es have' if len(waiting) != 1 else ' has'} waited up to "
            f"{ago(idle)} (twice the tick deadline is {ago(cfg.run.deadline_seconds * 2)}) and main is "
            f"still at tick {tick}: is the merge running?")


def health(tick: int, seen: dict[str, int], q: Queue, cfg: Config) -> dict[str, dict[str, Any]]:
    """Each worker's last delivered tick and what it is now: alive or dead."""
    out = {}
    for w in sorted(set(seen) | set(q.workers)):
        record = q.workers.get(w)
        last = max(seen.get(w, -1), record["last_tick"] if record else -1)
        missed = tick - last
        out[w] = {"worker": w, "last_tick": last, "missed": missed,
                  "status": "dead" if missed >= cfg.watchdog.dead_after_ticks else "alive",
                  "marked": record["status"] if record else None}
    return out
