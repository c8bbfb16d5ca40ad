"""`fleet status`: the tick, workers' health, pending branches, open conflicts, tasks, usage.

It also names the commits of the last ``limits.window`` ticks that the merge
engine did not make and that changed state or schemas (``outside``), and
which of their changes are refused (see ``fleet.outside``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet import canonical
from fleet.errors import FleetError
from fleet.outside import recent
from fleet.installed import carried
from fleet.records import Conflict
from fleet.repo import FleetRepo
from fleet.commands.watchdog import deliveries, health, stall
from fleet.state import CONFLICT_DIR, QUARANTINE_DIR
from fleet.tasks import TaskQueue, now, parse_stamp


def status(path: Path, remote: str | None = None) -> dict[str, Any]:
    repo = FleetRepo(path, remote)
    repo.fetch()
    head = repo.main()
    snap = repo.snapshot(head)
    fleet = snap.fleet
    conflicts = []
    paths = snap.under(CONFLICT_DIR)
    for p, data in snap.read_many(paths).items():
        c = Conflict.parse(data or b"", p)
        conflicts.append({"id": c.id, "doc": f"{c.collection}/{c.doc}", "path": ".".join(c.path),
                          "candidates": len(c.candidates), "opened_tick": c.opened_tick})
    recent_q = []
    for p in snap.under(QUARANTINE_DIR):
        for line in (snap.read(p) or b"").splitlines():
            q = canonical.load(line, p)
            if not isinstance(q, dict):
                raise FleetError(f"{p}: a quarantine record must be a JSON object, one a line")
            recent_q.append({"tick": q.get("tick"), "path": q.get("path"), "reason": q.get("reason")})
    pending = [s.branch for s in repo.sources()]
    queue = TaskQueue(repo).read()
    at = now()
    tasks = dict(queue.counts(), ready=len(queue.ready(None, at)),
                 expired=sum(1 for t in queue.tasks.values() if t["status"] == "in-progress"
                             and t["leaseUntil"] and parse_stamp(t["leaseUntil"]) < at))
    tick, seen = deliveries(snap)
    workers = list(health(tick, seen, queue, snap.config).values())
    stalled = stall(repo, snap.config, tick, at)
    # Main has one writer: a person's commit of the last window ticks is named, never silent.
    outside = recent(repo.git, head, snap.config.limits.window)
    return {
        "tick": fleet["tick"],
        "main": head,
        "remote": repo.remote,
        "agents": len(snap.config.agents),
        "pending_branches": pending,
        "open_conflicts": conflicts,
        "recent_quarantine": recent_q[-20:],
        "last": fleet["last"],
        "totals": fleet["totals"],
        "tasks": tasks,
        "workers": workers,
        "stalled": stalled,
        "outside": [oc.to_json() for oc in outside],
        "last_utc": fleet.get("last_utc"),
        "fleet": carried(repo.git, head),
    }
