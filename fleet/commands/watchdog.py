"""`fleet watchdog`: return expired leases and mark dead workers, saying why.

It writes only the queue branch (``fleet/tasks``), never ``main``, and only
when a conclusion changes: a returned task, a worker found dead or back. A run
that finds nothing commits nothing (exit 3), so a scheduled watchdog does not
fill the history with syncs.

- A task whose lease ran out goes back to pending after the retry delay, one
  commit per task naming the holder, the fence and how late it is; after
  ``tasks.max_failures`` it is marked failed for a person instead. Its fence
  stays, so the next claim gets a higher one and the old holder is fenced out.
- A tick worker that delivered deltas before (the ledger on main says when)
  and none in ``watchdog.dead_after_ticks`` merged ticks since is marked dead
  in ``workers/<worker>.json``, and alive again once it delivers. A dead
  worker's agents simply skip ticks; the mark is for the people watching.
- It also reports, without writing, worker branches that have waited for
  the merge more than twice the tick deadline: the merge, not a worker, is
  what is dead then.
"""

from __future__ import annotations

import datetime as _dt
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from fleet import summary
from fleet.cli import dir_option, emit, json_option, remote_option
from fleet.config import Config
from fleet.errors import EXIT_NOTHING
from fleet.health import deliveries, health, stall
from fleet.repo import FleetRepo
from fleet.store import now
from fleet.tasks import (
    BRANCH,
    Change,
    Queue,
    TaskQueue,
    ago,
    parse_stamp,
    returned,
    stamp,
    task_path,
    worker_path,
)


def watchdog(path: Path, *, remote: str | None = None, dry_run: bool = False, grace: float = 0.0) -> dict[str, Any]:
    repo = FleetRepo(path, remote)
    repo.fetch()  # main, the queue and the worker branches (to see a merge that stopped), in one go
    tq = TaskQueue(repo)
    snap = repo.snapshot()
    tick, seen = deliveries(snap)  # main does not move while the queue is retried
    stalled = stall(repo, snap.config, tick, now())
    report: dict[str, Any] = {}

    def decide(q: Queue, cfg: Config, at: _dt.datetime) -> Change:
        commits: list[tuple[str, dict[str, Any]]] = []
        returns, failed = [], []
        for t in sorted(q.tasks.values(), key=lambda t: t.id):
            if t.status != "in-progress" or t.lease_until is None:
                continue
            late = (at - parse_stamp(t.lease_until)).total_seconds()
            if late <= grace:
                continue
            why = (f"lease of {t.claimed_by} (fence {t.fence}) ran out at {t.lease_until}, "
                   f"{ago(late)} ago, without a renew or a result")
            new, line = returned(t, cfg, at, why)
            new = replace(new, updated_at=stamp(at))
            verb = "fail" if new.status == "failed" else "return"
            (failed if verb == "fail" else returns).append({"id": t.id, "holder": t.claimed_by,
                                                            "fence": t.fence, "late_seconds": round(late, 3)})
            commits.append((f"watchdog: {verb} {t.id}: lease of {t.claimed_by} ran out {ago(late)} ago{line}\n\n"
                            f"Fleet-Watchdog: lease\n", {task_path(t.id): new.to_json()}))
        marks = []
        for w, h in health(tick, seen, q, cfg).items():
            if h["status"] == h["marked"] or (h["marked"] is None and h["status"] == "alive"):
                continue  # no change (a worker seen alive needs no record until it dies)
            if h["status"] == "dead":
                reason = (f"no deltas in {h['missed']} merged ticks (last delivered tick {h['last_tick']}, "
                          f"main is at tick {tick}; watchdog.dead_after_ticks is {cfg.watchdog.dead_after_ticks}); "
                          "its agents skip ticks until it delivers again")
            else:
                reason = f"delivered tick {h['last_tick']} again (main is at tick {tick})"
            doc = {"worker": w, "status": h["status"], "last_tick": max(h["last_tick"], 0), "since": tick,
                   "reason": reason, "updated_at": stamp(at)}
            marks.append({"worker": w, "status": h["status"], "reason": reason})
            commits.append((f"watchdog: {w} {'dead' if h['status'] == 'dead' else 'back'}: {reason}\n\n"
                            f"Fleet-Watchdog: worker\n", {worker_path(w): doc}))
        report.update(returned=returns, failed=failed, workers=marks, stalled=stalled, tick=tick)
        return Change(commits, report)

    ch, pushed = tq.change(decide, dry_run=dry_run, fetched=True)
    return dict(ch.result, branch=BRANCH, commits=len(ch.commits), pushed=pushed, dry_run=dry_run, remote=repo.remote)


# -- the command line --------------------------------------------------------
@click.command("watchdog")
@dir_option
@json_option
@remote_option
@click.option("--dry-run", is_flag=True, help="Say what would be returned and marked, commit nothing.")
@click.option("--grace", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Seconds past a lease's end before it is returned (for clocks a little apart).")
def watchdog_command(directory: Path, as_json: bool, remote: str | None, dry_run: bool, grace: float) -> None:
    """Return expired task leases and mark dead workers, a commit each that says why; exit 3 if all is well."""
    r = watchdog(directory, remote=remote, dry_run=dry_run, grace=grace)

    def text() -> None:
        for t in r["returned"]:
            click.echo(f"returned {t['id']}: lease of {t['holder']} (fence {t['fence']}) ran out")
        for t in r["failed"]:
            click.echo(f"failed {t['id']}: lease of {t['holder']} ran out, too many failures; a person decides")
        for w in r["workers"]:
            click.echo(f"worker {w['worker']} {w['status']}: {w['reason']}")
        if r["stalled"]:
            click.echo(f"warning: {r['stalled']}")
        if not r["commits"]:
            click.echo("all leases current, no worker changed")
        elif dry_run:
            click.echo(f"dry run: {r['commits']} commit(s) not made")
        else:
            click.echo(f"pushed {r['commits']} commit(s) to {r['branch']} on {r['remote'] or 'this repository'}")

    emit(r, as_json, text)
    rows = {"returned": len(r["returned"]), "failed": len(r["failed"]),
            "workers dead": sum(1 for w in r["workers"] if w["status"] == "dead"),
            "workers back": sum(1 for w in r["workers"] if w["status"] == "alive")}
    summary.table("fleet watchdog" + (" (dry run: nothing committed)" if dry_run else ""), rows,
                  [f"returned {t['id']} (lease of {t['holder']})" for t in r["returned"]]
                  + [f"worker {w['worker']} {w['status']}: {w['reason']}" for w in r["workers"]]
                  + ([f"warning: {r['stalled']}"] if r["stalled"] else []))
    if r["stalled"]:
        summary.warning("fleet watchdog", r["stalled"])
    if not r["commits"] and not r["stalled"]:
        sys.exit(EXIT_NOTHING)
