"""`fleet status`: the tick, workers' health, pending branches, open conflicts, tasks, usage,
what this UTC day and month spent against their budgets, and when the next tick is due.

It also names the commits of the last ``limits.window`` ticks that the merge
engine did not make and that changed state or schemas (``outside``), and
which of their changes are refused (see ``fleet.outside``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fleet import canonical
from fleet.cli import dir_option, emit, json_option, remote_option
from fleet.clock import due_now
from fleet.errors import FleetError
from fleet.health import deliveries, health, stall
from fleet.ids import printable
from fleet.installed import carried
from fleet.outside import recent
from fleet.records import Conflict
from fleet.repo import FleetRepo
from fleet.spend import spending
from fleet.state import CONFLICT_DIR, QUARANTINE_DIR
from fleet.store import now
from fleet.tasks import MISSING, TaskQueue, parse_stamp


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
                 expired=sum(1 for t in queue.tasks.values() if t.status == "in-progress"
                             and t.lease_until and parse_stamp(t.lease_until) < at),
                 cooling=sum(1 for t in queue.tasks.values() if t.status == "pending"
                             and t.not_before and parse_stamp(t.not_before) > at))
    # the flag a person must not miss: tasks the queue gave up on after tasks.max_failures
    escalated = [{"id": t.id, "title": t.title, "failures": t.failures, "error": None if t.error is MISSING else t.error,
                  "escalated_at": t.updated_at if t.escalated_at is MISSING else t.escalated_at}
                 for t in sorted(queue.tasks.values(), key=lambda t: t.id) if t.escalated]
    tick, seen = deliveries(snap)
    workers = list(health(tick, seen, queue, snap.config).values())
    stalled = stall(repo, snap.config, tick, at)
    # Main has one writer: a person's commit of the last window ticks is named, never silent.
    outside = recent(repo.git, head, snap.config.limits.window)
    spent = spending(repo, head, snap.config, at, tick=fleet["tick"])
    due, start = due_now(repo, snap.config, fleet["tick"] + 1, spent, at.timestamp())
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
        "escalated": escalated,
        "workers": workers,
        "stalled": stalled,
        "outside": [oc.to_json() for oc in outside],
        "last_utc": fleet.get("last_utc"),
        "fleet": carried(repo.git, head),
        "budgets": spent.to_json(),
        "clock": {**due.to_json(), "started": start.to_json() if start else None},
    }


# -- the command line --------------------------------------------------------
@click.command("status")
@dir_option
@json_option
@remote_option
def status_command(directory: Path, as_json: bool, remote: str | None) -> None:
    """The merged tick, workers' health, open conflicts, tasks by state, tokens and cost."""
    s = status(directory, remote)

    def text() -> None:
        click.echo(f"tick {s['tick']} (main {s['main'][:12]}{', remote ' + s['remote'] if s['remote'] else ''})")
        last, tot = s["last"], s["totals"]
        click.echo(f"last tick: {last['applied']} applied, {last['quarantined']} quarantined, {last['held']} held")
        click.echo(f"all ticks: {tot['applied']} applied, {tot['quarantined']} quarantined, {tot['held']} held")
        u = tot.get("usage") or {}
        if u:
            click.echo(f"tokens: {u.get('input_tokens', 0)} in, {u.get('output_tokens', 0)} out; cost ${u.get('cost_usd', 0):.4f}")
        for name, key in (("today", "day"), ("this month", "month")):
            p = s["budgets"][key]
            line = f"{name}: ${p['cost_usd']:.4f} and {p['tokens']:,} tokens spent"
            if p["budget"] is None:
                line += f" (no budgets.{key})"
            else:
                left = " and ".join(x for x in (f"${p['left']['usd']:.4f}" if p["left"]["usd"] is not None else "",
                                                f"{p['left']['tokens']:,} tokens" if p["left"]["tokens"] is not None
                                                else "") if x)
                line += f", {left} left of budgets.{key}" + (" (spent)" if p["spent"] else "")
            click.echo(line)
        c = s["clock"]
        click.echo(f"next tick: {c['why']}")
        click.echo(f"pending worker branches: {len(s['pending_branches'])}")
        if s["workers"]:
            click.echo("workers: " + ", ".join(
                f"{w['worker']} {w['status']} (last tick {w['last_tick']})" for w in s["workers"]))
        t = s["tasks"]
        cooling = f", {t['cooling']} cooling down after a failure or a return" if t["cooling"] else ""
        click.echo(f"tasks: {t['pending']} pending ({t['ready']} ready{cooling}), {t['in-progress']} in progress"
                   f"{' (' + str(t['expired']) + ' lease(s) expired: run fleet watchdog)' if t['expired'] else ''}, "
                   f"{t['done']} done, {t['failed']} failed")
        if s["escalated"]:
            shown = "; ".join(f"{e['id']} ({e['failures']} failures: {printable(e['error'] or 'no error recorded', 80)})"
                              for e in s["escalated"][:5])
            more = f"; and {len(s['escalated']) - 5} more" if len(s["escalated"]) > 5 else ""
            click.echo(f"ESCALATED: {len(s['escalated'])} task(s) failed tasks.max_failures times and wait for a "
                       f"person: {shown}{more} (`fleet task reopen ID` gives one another go)")
        for c in s["open_conflicts"]:
            click.echo(f"  conflict {c['id']}: {c['doc']} {c['path']} ({c['candidates']} candidates, since tick {c['opened_tick']})")
        if s["stalled"]:
            click.echo(f"warning: {s['stalled']}")
        for oc in s["outside"]:
            files = ", ".join(f"{c['how']} {c['path']}" for c in oc["changes"][:10])
            more = f", and {len(oc['changes']) - 10} more" if len(oc["changes"]) > 10 else ""
            click.echo(f"warning: commit {oc['commit'][:12]} by {oc['author']} ({oc['subject']!r}) changed state "
                       f"outside the merge engine: {files}{more}")
            for why in oc["refused"]:
                click.echo(f"warning: refused: {why}; fix or revert it on main (`fleet replay --check` fails until then)")
        f = s["fleet"]
        if f["carried"] is not None and not f["same"]:
            edited = " with source that differs from it" if f["carried"] == f["installed"] else ""
            click.echo(f"warning: this repository carries fleet {f['carried']} in {f['path']}, and fleet "
                       f"{f['installed']} is installed{edited}: the workflows run the carried one, `fleet` here "
                       "runs the installed one")
            if f["shadows"]:
                click.echo(f"warning: {f['path']} at the top shadows the installed fleet for `python -m fleet` run "
                           "here; move it to .github/actions/fleet/, where `fleet init` puts it now")

    emit(s, as_json, text)
