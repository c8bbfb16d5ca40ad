"""`fleet watchdog`: return expired leases and mark dead workers, saying why.

It writes only the queue branch (``fleet/tasks``), never ``main``, and only
when a conclusion changes: a returned task, a worker found dead or back. A run
that finds nothing commits nothing (exit 3), so a scheduled watchdog does not
fill the history with syncs.

- A task whose lease ran out goes back to pending after the cooldown
  (``tasks.retry_delay_seconds``), one commit per task naming the holder, the
  fence and how late it is; after ``tasks.max_failures`` it is failed and
  escalated to a person instead. Its fence stays, so the next claim gets a
  higher one and the old holder is fenced out. A task claimed less than
  ``tasks.grace_seconds`` ago is left alone, lease or not: its holder may
  still be starting.
- With ``tasks.escalate: "issue"`` it keeps one GitHub issue per escalated
  task (fleet.github.TaskIssues), whoever escalated it: this job, unlike the
  jobs that run a model, holds the token for that.
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
from fleet.cli import dir_option, emit, flag_seconds, json_option, remote_option
from fleet.config import Config
from fleet.errors import EXIT_NOTHING, UsageError
from fleet.github import GitHubSettings, TaskIssues
from fleet.health import deliveries, engine_snapshot, health, stall
from fleet.ids import printable
from fleet.repo import FleetRepo
from fleet.store import FIRST, now
from fleet.tasks import (
    BRANCH,
    Change,
    Queue,
    TaskQueue,
    ago,
    parse_stamp,
    quarantine_lines,
    returned,
    stamp,
    task_path,
    worker_path,
)


def watchdog(path: Path, *, remote: str | None = None, dry_run: bool = False, grace: float | None = None,
             github: GitHubSettings | None = None) -> dict[str, Any]:
    """Return expired leases, mark dead and returning workers, and (with
    ``tasks.escalate: "issue"``) keep the escalated tasks' issues. ``grace``
    overrides ``tasks.grace_seconds``; ``github`` the settings from the environment."""
    repo = FleetRepo(path, remote)
    repo.fetch()  # main, the queue and the worker branches (to see a merge that stopped), in one go
    tq = TaskQueue(repo)
    snap = engine_snapshot(repo)  # not a clock a person moved: no worker is dead by it
    tick, seen = deliveries(snap)  # main does not move while the queue is retried
    stalled = stall(repo, snap.config, tick, now())
    report: dict[str, Any] = {}

    def decide(q: Queue, cfg: Config, at: _dt.datetime) -> Change:
        commits: list[tuple[str, dict[str, Any]]] = []
        returns, failed, starting = [], [], []
        wait = cfg.tasks.grace_seconds if grace is None else grace
        for t in sorted(q.tasks.values(), key=lambda t: t.id):
            if t.status != "in-progress" or t.lease_until is None:
                continue
            late = (at - parse_stamp(t.lease_until)).total_seconds()
            if late <= 0:
                continue
            since = (at - parse_stamp(t.claimed_at)).total_seconds() if t.claimed_at else wait
            if since < wait:  # still starting, maybe: left alone until the grace is over
                starting.append({"id": t.id, "holder": t.claimed_by, "fence": t.fence,
                                 "claimed_seconds_ago": round(since, 3), "grace_seconds": wait})
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
        report.update(returned=returns, failed=failed, starting=starting, workers=marks, stalled=stalled, tick=tick)
        return Change(commits, report)

    # returns what holders lost; before every other change (holders complete back to back, and never back off)
    ch, pushed = tq.change(decide, dry_run=dry_run, fetched=True, priority=FIRST)
    out = dict(ch.result, branch=BRANCH, commits=len(ch.commits), pushed=pushed, dry_run=dry_run, remote=repo.remote,
               issues=None, escalated=[])
    q = tq.read()  # the queue as this run left it
    out["escalated"] = sorted(t.id for t in q.tasks.values() if t.escalated)
    out["quarantined"] = [{"where": w, "reason": r} for w, r in q.quarantined]  # read past: named, left in place
    if snap.config.tasks.escalate == "issue":
        out["issues"] = _escalate(q, github, dry_run)
    return out


def _escalate(q: Queue, github: GitHubSettings | None, dry_run: bool) -> dict[str, Any]:
    """The escalated tasks' issues brought up to date; a run without GitHub settings says
    why it skipped them, and still returns leases (that is the watchdog's first job)."""
    if dry_run:
        return {"skipped": "dry run: no issue opened, updated or closed"}
    if github is None:
        try:
            github = GitHubSettings.from_env()
        except UsageError:
            return {"skipped": "tasks.escalate is \"issue\", but GITHUB_REPOSITORY and GITHUB_TOKEN are not set "
                               "in this job (watchdog.yml passes them)"}
    return dict(TaskIssues(github).sync(q.tasks).to_json(), skipped=None)


# -- the command line --------------------------------------------------------
@click.command("watchdog")
@dir_option
@json_option
@remote_option
@click.option("--dry-run", is_flag=True, help="Say what would be returned and marked, commit nothing.")
@click.option("--grace", type=click.FloatRange(0, 86400), default=None, metavar="S",
              help="Leave alone a task claimed less than S seconds ago, lease or not: its holder may still be "
                   "starting (default: tasks.grace_seconds in config, 60).")
def watchdog_command(directory: Path, as_json: bool, remote: str | None, dry_run: bool, grace: float | None) -> None:
    """Return expired task leases and mark dead workers, a commit each that says why; exit 3 if all is well.

    A task claimed less than tasks.grace_seconds ago is left alone: its holder may still be starting.
    With tasks.escalate "issue", it also keeps one GitHub issue per escalated task.
    """
    if grace is not None:
        grace = flag_seconds("--grace", grace, zero=True, high=86400)
    r = watchdog(directory, remote=remote, dry_run=dry_run, grace=grace)

    def text() -> None:
        for line in quarantine_lines([(x["where"], x["reason"]) for x in r["quarantined"]]):
            click.echo(line, err=True)
        for t in r["returned"]:
            click.echo(f"returned {t['id']}: lease of {printable(str(t['holder']), 130)} (fence {t['fence']}) ran out")
        for t in r["failed"]:
            click.echo(f"failed {t['id']}: lease of {printable(str(t['holder']), 130)} ran out, too many failures: escalated to a person")
        for t in r["starting"]:
            click.echo(f"left alone {t['id']}: lease of {printable(str(t['holder']), 130)} ran out, but it was claimed "
                       f"{ago(t['claimed_seconds_ago'])} ago, within the grace of {ago(t['grace_seconds'])} "
                       "(tasks.grace_seconds)")
        for w in r["workers"]:
            click.echo(f"worker {w['worker']} {w['status']}: {w['reason']}")
        if r["stalled"]:
            click.echo(f"warning: {r['stalled']}")
        issues = r["issues"]
        if issues and issues["skipped"]:
            click.echo(f"warning: escalation issues skipped: {issues['skipped']}")
        elif issues:
            for verb in ("opened", "reopened", "updated", "closed"):
                for i in issues[verb]:
                    click.echo(f"{verb} issue #{i['number']} for task {i['task']}")
            if issues["deferred"]:
                click.echo(f"deferred to the next run (request budget): issues for {', '.join(issues['deferred'])}")
        if r["escalated"]:
            click.echo(f"escalated, waiting for a person: {', '.join(r['escalated'])}")
        if not r["commits"]:
            click.echo("all leases current, no worker changed")
        elif dry_run:
            click.echo(f"dry run: {r['commits']} commit(s) not made")
        else:
            click.echo(f"pushed {r['commits']} commit(s) to {r['branch']} on {r['remote'] or 'this repository'}")

    emit(r, as_json, text)
    issues = r["issues"] or {}
    rows = {"returned": len(r["returned"]), "failed": len(r["failed"]),
            "workers dead": sum(1 for w in r["workers"] if w["status"] == "dead"),
            "workers back": sum(1 for w in r["workers"] if w["status"] == "alive"),
            "escalated": len(r["escalated"])}
    summary.table("fleet watchdog" + (" (dry run: nothing committed)" if dry_run else ""), rows,
                  [f"returned {t['id']} (lease of {printable(str(t['holder']), 130)})" for t in r["returned"]]
                  + [f"worker {w['worker']} {w['status']}: {w['reason']}" for w in r["workers"]]
                  + [f"{verb} issue #{i['number']} for task {i['task']}" for verb in ("opened", "reopened", "closed")
                     for i in issues.get(verb) or []]
                  + ([f"warning: {r['stalled']}"] if r["stalled"] else []))
    if r["stalled"]:
        summary.warning("fleet watchdog", r["stalled"])
    if issues.get("skipped") and not dry_run:
        summary.warning("fleet watchdog", f"escalation issues skipped: {issues['skipped']}")
    if not r["commits"] and not r["stalled"] and not any(issues.get(k) for k in ("opened", "reopened", "updated", "closed")):
        sys.exit(EXIT_NOTHING)
