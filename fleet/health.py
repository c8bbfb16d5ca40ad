"""Workers' health, read from main and the queue: the last tick each worker
delivered, which are dead, and whether the merge itself has stopped.

`fleet watchdog` acts on these conclusions (marks, returns) and `fleet status`
reports them; neither command imports the other.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from fleet import canonical
from fleet.config import Config
from fleet.plan import _score
from fleet.repo import TRACKING, FleetRepo
from fleet.state import LEDGER_DIR, QUARANTINE_DIR, GitSnapshot
from fleet.tasks import Queue, ago

_WORKER = re.compile(r"w[1-9][0-9]{0,2}")  # fleet.plan.worker_name
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


class Seen(dict[str, int]):
    """Worker -> the last tick it delivered in the ledger window; ``idle``: the
    workers that have no agents at the worker count the newest tick ran with
    (a run with fewer workers than the one before): not dead, not in the plan."""

    idle: frozenset[str] = frozenset()


def deliveries(snap: GitSnapshot) -> tuple[int, Seen]:
    """Main's tick, and the last tick each worker delivered in the ledger window."""
    last = Seen()
    ledgers: dict[int, list[str]] = {}
    for path in snap.paths():
        m = _DELIVERY.match(path)
        if m and not m.group(2).startswith("_"):
            tick, worker = int(m.group(1)), m.group(2)
            last[worker] = max(last.get(worker, -1), tick)
            if path.startswith(LEDGER_DIR + "/"):
                ledgers.setdefault(tick, []).append(path)
    if ledgers:
        newest = max(ledgers)
        behind = [w for w, t in last.items() if t < newest and _WORKER.fullmatch(w)]
        if behind:
            last.idle = _out_of_plan(snap, ledgers[newest], behind)
    return snap.tick, last


def _out_of_plan(snap: GitSnapshot, paths: list[str], behind: list[str]) -> frozenset[str]:
    """Of the workers ``behind`` (named ``w<n>`` and silent in the newest ledger
    tick), those that tick's deltas show were not in its plan. Agents go to
    workers by rendezvous hashing (fleet.plan.assign): an agent whose delta
    came from ``wj`` scores below ``wj`` on every worker of the run, so a
    worker it scores higher on was not one of them. The worker count is
    written nowhere; this reads it from the agents' choices, and a worker
    of the plan that delivered nothing is still judged dead."""
    placed: set[tuple[str, str]] = set()
    for data in snap.read_many(paths).values():
        for line in (data or b"").splitlines():
            try:
                body = canonical.parse_trusted(line)
            except ValueError:
                continue  # not the engine's line: `fleet status` names it
            if isinstance(body, dict) and isinstance(body.get("agent"), str) and isinstance(body.get("worker"), str):
                placed.add((body["agent"], body["worker"]))
    return frozenset(w for w in behind
                     if any((_score(w, a), w) > (_score(by, a), by) for a, by in placed))


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
    idle = seen.idle if isinstance(seen, Seen) else frozenset()  # no agents at today's count: not dead, left out
    for w in sorted((set(seen) | set(q.workers)) - idle):
        record = q.workers.get(w)
        last = max(seen.get(w, -1), record["last_tick"] if record else -1)
        missed = tick - last
        out[w] = {"worker": w, "last_tick": last, "missed": missed,
                  "status": "dead" if missed >= cfg.watchdog.dead_after_ticks else "alive",
                  "marked": record["status"] if record else None}
    return out
