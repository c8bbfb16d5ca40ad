"""`fleet plan`: the workers and agents of the next tick, for `fromJSON`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet.errors import FleetError
from fleet.plan import assign, roster
from fleet.repo import FleetRepo


def plan(path: Path, *, workers: int | None = None, remote: str | None = None,
         agents: list[str] | None = None) -> dict[str, Any]:
    repo = FleetRepo(path, remote)
    repo.fetch()
    head = repo.main()
    snap = repo.snapshot(head)
    cfg = snap.config
    count = workers or cfg.run.workers
    if not 1 <= count <= 256:
        raise FleetError(f"--workers {count}: a tick has 1 to 256 workers (a GitHub matrix holds 256 jobs)", code=2)
    assignment = assign(roster(cfg.agents, agents), count)
    include = [{"worker": int(name[1:]), "name": name, "agents": len(a)} for name, a in assignment.items() if a]
    return {
        "tick": snap.tick + 1,
        "main": head,
        "workers": count,
        "push": cfg.run.push_mode(count),
        "deadline_seconds": cfg.run.deadline_seconds,
        "matrix": {"include": include},
        "assignment": {k: v for k, v in assignment.items() if v},
        "agents": ",".join(agents) if agents else "",
    }
