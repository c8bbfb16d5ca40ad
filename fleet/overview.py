"""What `fleet status` shows, as data: one function, :func:`overview`, that the
status command renders and the HTML report reads.

Everything is read from the fleet's main, its history and the side branches,
once: the merged tick and when it was merged, the provider and models of the
last tick, each worker's last delta, last error and health (and why a dead
one counts as dead), open conflicts with the command that decides each (and
their pull request, where there is one), quarantined deltas with their
reasons, tasks by state, tokens and cost of the last tick and in total, what
the day and month spent against their budgets, and commits on main made
outside the merge engine.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
import sys
from pathlib import Path
from typing import Any

from fleet import canonical
from fleet import tasks as tasks_mod
from fleet.clock import due_now
from fleet.delta import made_by
from fleet.errors import FleetError
from fleet.health import deliveries, health, stall
from fleet.ids import printable
from fleet.installed import carried
from fleet.ledger import TickInputs, held_in, tick_inputs
from fleet.outside import main_refusal, recent, tick_commits
from fleet.records import MISSING, Conflict
from fleet.repo import FleetRepo
from fleet.resolve import RESOLUTION_DIR
from fleet.spend import spending
from fleet.state import CONFLICT_DIR, LEDGER_DIR, QUARANTINE_DIR, GitSnapshot
from fleet.store import now
from fleet.tasks import MISSING as TASK_MISSING
from fleet.tasks import TaskQueue, parse_stamp

QUARANTINE_SHOWN = 20
_GITHUB = re.compile(r"(?:https://|git@|ssh://git@)github\.com[/:]([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?)(?:\.git)?/?$")


def overview(path: Path, remote: str | None = None) -> dict[str, Any]:
    """The status of the fleet in ``path`` (its main at ``remote``), as JSON-ready data."""
    repo = FleetRepo(path, remote)
    repo.fetch()
    return overview_of(repo, now())


def overview_of(repo: FleetRepo, at: _dt.datetime) -> dict[str, Any]:
    """The status of the fleet of ``repo``, fetched already, at ``at``: what `fleet status`
    shows, and what the HTML report shows as "what needs you" (one list, so the two never disagree)."""
    head = repo.main()
    snap = repo.snapshot(head)
    # A change fleet refuses on main (a person's edit of the clock, the ledger, a held conflict; a
    # name that is not UTF-8; a forged tick): the merge builds nothing on it, so the fleet is where
    # the engine last left it, and its records are read there; the change is named under "needs you".
    refused = main_refusal(repo.git, head)
    engine = head if refused is None else refused.base
    records = snap if refused is None else repo.snapshot(engine)
    unreadable: list[str] = []  # records of the engine that cannot be read: named, never a crash
    fleet = records.fleet
    try:
        cfg = snap.config
    except FleetError:
        if refused is None:
            raise
        cfg = records.config  # the refused change broke it: the config the engine last worked under
    merged = _last_tick_commit(repo, engine)
    queue = TaskQueue(repo).read()
    stranded = [(t, why) for t in sorted(queue.tasks.values(), key=lambda t: t.id)
                if (why := tasks_mod.stranded(cfg, t))]  # slung to a name that may not claim: no claim takes them
    tasks = dict(queue.counts(), ready=len(queue.ready(None, at)) - sum(1 for t, _ in stranded
                                                                          if queue.is_ready(t, None, at)),
                 stranded=len(stranded),
                 expired=sum(1 for t in queue.tasks.values() if t.status == "in-progress"
                             and t.lease_until and parse_stamp(t.lease_until) < at),
                 cooling=sum(1 for t in queue.tasks.values() if t.status == "pending"
                             and t.not_before and parse_stamp(t.not_before) > at))
    # the flag a person must not miss: tasks the queue gave up on after tasks.max_failures
    escalated = [{"id": t.id, "title": t.title, "failures": t.failures,
                  "error": None if t.error is TASK_MISSING else t.error,
                  "escalated_at": t.updated_at if t.escalated_at is TASK_MISSING else t.escalated_at}
                 for t in sorted(queue.tasks.values(), key=lambda t: t.id) if t.escalated]
    tick, seen = deliveries(records)
    recent_deltas = _ledger_window(records, unreadable)
    workers = []
    for w in health(tick, seen, queue, cfg).values():
        mine = recent_deltas.get(w["worker"], [])
        last = mine[-1] if mine else None
        errors = [d for d in mine if isinstance(d.get("meta"), dict) and d["meta"].get("error")]
        w["last_delta"] = _brief(last) if last else None
        w["last_error"] = ({**_brief(errors[-1]), "error": str(errors[-1]["meta"]["error"])[:500]}
                           if errors else None)
        w["why"] = (f"delivered nothing in the {w['missed']} merged tick(s) since tick {w['last_tick']} "
                    f"(watchdog.dead_after_ticks is {cfg.watchdog.dead_after_ticks})"
                    if w["status"] == "dead" else None)
        workers.append(w)
    outside = recent(repo.git, head, cfg.limits.window)
    spent = spending(repo, engine, cfg, at, tick=fleet["tick"])
    due, start = due_now(repo, cfg, fleet["tick"] + 1, spent, at.timestamp())
    merged_utc = merged[1] if merged else None
    age = None
    if merged_utc:
        age = max(0, int((at - _dt.datetime.fromisoformat(merged_utc)).total_seconds()))
    last_tick = _last_tick(repo, merged[0] if merged else None, cfg)
    last_models = made_by(d.meta for d in last_tick.applied)
    conflicts = _conflicts(repo, records, snap, unreadable)
    quarantine = _quarantine(records, unreadable)
    stalled = stall(repo, cfg, tick, at)
    outside_json = [oc.to_json() for oc in outside]
    needs = []  # what a person should look at, in one list
    if refused is not None:
        needs.append(refused.line("`fleet run` and `fleet merge` build nothing on it, and this status is of "
                                  f"the last tick commit, {engine[:12]}"))
    for problem in unreadable[:5]:
        needs.append(f"{problem}: not read; the merge engine wrote no such record (`fleet replay --check` names "
                     "the commit that changed it)")
    if len(unreadable) > 5:
        needs.append(f"and {len(unreadable) - 5} more engine record(s) that cannot be read")
    undecided = [c for c in conflicts if not c["decided"]]
    if undecided:
        needs.append(f"{len(undecided)} open conflict(s) to decide (`fleet resolve ID --choose CANDIDATE`, "
                     "or their pull requests)")
    if quarantine:
        # the tree keeps the tick merged last and limits.window before it (fleet.engine.write)
        needs.append(f"{len(quarantine)} quarantined delta(s) in the last {cfg.limits.window + 1} ticks: read why "
                     "(`fleet log --delta ID`)")
    failed, first = failed_turns(last_tick.applied)
    if failed:
        needs.append(f"{failed} of {len(last_tick.applied)} turn(s) of the last tick failed, so they changed nothing "
                     f"(first: {first}); see each worker's last error below")
    if escalated:
        needs.append(f"{len(escalated)} escalated task(s) (`fleet task reopen ID`)")
    if stranded:
        needs.append(tasks_mod.stranded_line(stranded))
    doomed = tasks_mod.never_ready(queue)  # a cycle, a missing dep, a fence at its limit: a hand edit's
    if doomed:
        needs.append(tasks_mod.never_ready_line(doomed))
    if queue.quarantined:  # a bad file on the queue's branch: read past, named here once
        where, why = queue.quarantined[0]
        more = f" and {len(queue.quarantined) - 1} more" if len(queue.quarantined) > 1 else ""
        needs.append(f"{len(queue.quarantined)} file(s) on the task queue are quarantined, not read as tasks: "
                     f"{printable(where, 200)}: {why}{more}")
    dead = [w["worker"] for w in workers if w["status"] == "dead"]
    if dead:
        needs.append(f"dead worker(s): {', '.join(dead)}")
    if stalled:
        needs.append(stalled)
    refused_before = [r for oc in outside_json for r in oc["refused"]]
    if refused_before and refused is None:  # refused, and built on before fleet stopped on such changes
        needs.append(f"{len(refused_before)} change(s) on main that fleet refuses: fix or revert them")
    stop = spent.stop()
    if stop is not None:
        needs.append(f"no new tick starts: {stop.why()}")  # spent, or a tick's spend cannot be counted
    beats = _heartbeats(repo, cfg, at)
    seen_last = {w["name"]: w for w in beats.get("who") or []}
    for w in workers:  # a worker's own heartbeat on the bus, if it sends them
        hb = seen_last.get(w["worker"])
        w["heartbeat"] = f"{hb['status']} (last seen {hb['last_seen']})" if hb and hb.get("last_seen") else None
    return {
        "needs_you": needs,
        "refused": refused.to_json() if refused is not None else None,
        "unreadable": unreadable,
        "tick": fleet["tick"],
        "main": head,
        "merged_utc": merged_utc,
        "age_seconds": age,
        "remote": repo.remote,
        "provider": {"configured": cfg.run.provider, "last_tick": last_models},
        "agents": len(cfg.agents),
        "pending_branches": [s.branch for s in repo.sources()],
        "open_conflicts": conflicts,
        "pending_decisions": _pending(snap),
        "recent_quarantine": quarantine[-QUARANTINE_SHOWN:],
        "last": fleet["last"],
        "totals": fleet["totals"],
        "deltas": _split(repo, merged[0] if merged else None, last_tick, fleet["last"]),
        "tasks": tasks,
        "escalated": escalated,
        "tasks_quarantined": [{"where": w, "reason": r} for w, r in queue.quarantined],
        "workers": workers,
        "stalled": stalled,
        # Main has one writer: a person's commit of the last window ticks is named, never silent.
        "outside": outside_json,
        "last_utc": fleet.get("last_utc"),
        "fleet": carried(repo.git, head),
        "budgets": spent.to_json(),
        "clock": {**due.to_json(), "started": start.to_json() if start else None},
        "heartbeats": beats,
    }


def _heartbeats(repo: FleetRepo, cfg: Any, at: Any) -> dict[str, Any]:
    """Who is alive, late or silent by their heartbeats on the message bus (fleet.bus)."""
    from fleet import bus

    return bus.status_of(repo, cfg, at)


def _last_tick_commit(repo: FleetRepo, head: str) -> tuple[str, str] | None:
    """The newest commit the merge engine made on main, and its commit time (UTC):
    a commit whose trailer its clock bears out (fleet.outside.tick_commits)."""
    rows = repo.git.first_parent_log(head, limit=64)
    ticks = tick_commits(repo.git, rows)
    commit = next((c for c, _, _ in reversed(rows) if c in ticks), None)
    if commit is None:
        return None
    when = _dt.datetime.fromtimestamp(int(repo.git.text("log", "-1", "--format=%ct", commit)), _dt.UTC)
    return commit, when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ledger_window(snap: GitSnapshot, unreadable: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The deltas of the ledger still in the tree (``limits.window`` + 1 ticks), by worker, in delta order
    (a line that cannot be read is added to ``unreadable``, once per file)."""
    out: dict[str, list[dict[str, Any]]] = {}
    paths = [p for p in snap.under(LEDGER_DIR) if not p.rsplit("/", 1)[-1].startswith("_")]
    for p, data in snap.read_many(paths).items():
        for line in (data or b"").splitlines():
            try:
                d = canonical.load(line, p)
            except FleetError as e:
                unreadable.append(printable(str(e), 300))
                break
            if isinstance(d, dict) and isinstance(d.get("worker"), str):
                out.setdefault(d["worker"], []).append(d)
    for ds in out.values():
        ds.sort(key=lambda d: (d.get("tick", 0), str(d.get("utc", "")), str(d.get("id", ""))))
    return out


def _brief(d: dict[str, Any]) -> dict[str, Any]:
    return {"delta": d.get("id"), "agent": d.get("agent"), "tick": d.get("tick"), "utc": d.get("utc"),
            "ops": len(d.get("ops") or [])}


def _last_tick(repo: FleetRepo, commit: str | None, cfg: Any) -> TickInputs:
    """What the newest tick commit applied and quarantined (nothing before the first tick)."""
    if commit is None:
        return TickInputs([], [], [])
    parent = repo.git.text("rev-parse", f"{commit}^")
    return tick_inputs(repo.git, parent, commit, dataclasses.replace(cfg.limits, max_ops=sys.maxsize))


def failed_turns(deltas: Any) -> tuple[int, str | None]:
    """How many of ``deltas`` (records or ``Delta``s) are turns that failed (an
    empty delta carrying ``meta.error``: the model call or the turn raised), and
    the first one's error, shortened. A failed turn is counted as a no-op too:
    it is in the ledger and changed nothing; this says why."""
    n, first = 0, None
    for d in deltas:
        meta = d.get("meta") if isinstance(d, dict) else getattr(d, "meta", None)
        err = meta.get("error") if isinstance(meta, dict) else None
        if err:
            n += 1
            if first is None:
                from fleet.ids import printable

                first = printable(str(err).splitlines()[0] if str(err).strip() else str(err), 160)
    return n, first


def _split(repo: FleetRepo, commit: str | None, inputs: TickInputs, last: dict[str, Any]) -> dict[str, int]:
    """The last tick's deltas, each counted once: every change took effect
    (applied), an explicit empty delta (noop), a change held for a person
    (held), or quarantined. ``conflicts``: how many conflicts they opened or joined."""
    from fleet.report import split  # the report's count of every tick, so the two never disagree

    held_ids = held_in(repo.git, repo.git.text("rev-parse", f"{commit}^"), commit) if commit else {}
    applied, noop, held = split(((d.id, len(d.ops)) for d in inputs.applied), held_ids)
    return {"applied": applied, "noop": noop, "failed": failed_turns(inputs.applied)[0],
            "held": held,
            "quarantined": len(inputs.quarantined), "conflicts": int(last.get("held", 0)),
            "resolved": int(last.get("resolved", 0))}


def _conflicts(repo: FleetRepo, snap: GitSnapshot, main: GitSnapshot, unreadable: list[str]) -> list[dict[str, Any]]:
    """Open conflicts (held in ``snap``): where, the candidates, the pending decision
    if any (on ``main``), how to decide. One that cannot be read goes to ``unreadable``."""
    pending = set(main.under(RESOLUTION_DIR))
    branches = {r.name.rsplit("fleet/conflict/", 1)[-1] for r in repo.git.refs("refs/")
                if "/fleet/conflict/" in r.name}
    github = _github_repo(repo)
    out = []
    for p, data in snap.read_many(snap.under(CONFLICT_DIR)).items():
        try:
            c = Conflict.parse(data or b"", p)
        except FleetError as e:
            unreadable.append(printable(str(e), 300))
            continue
        valued = [x for x in c.candidates if "value" in x]
        latest = valued[-1]["delta"] if valued else "base"
        key = f"{c.id}-t{c.opened_tick}"
        branch = f"fleet/conflict/{key}" if key in branches else None
        out.append({
            "id": c.id, "doc": f"{c.collection}/{c.doc}", "path": ".".join(c.path),
            "candidates": len(c.candidates), "opened_tick": c.opened_tick, "policy": c.policy, "reason": c.reason,
            "base": None if c.base is MISSING else c.base,
            "choices": [{"delta": x["delta"], "agent": x["agent"], "tick": x["tick"],
                         **({"value": x["value"]} if "value" in x else {"ops": len(x.get("ops") or [])})}
                        for x in c.candidates],
            "decided": f"{RESOLUTION_DIR}/{c.id}.json" in pending,
            "decide": f"fleet resolve {c.id} --choose {latest}",
            "pr_branch": branch,
            "pr_url": (f"{github[0]}/{github[1]}/pulls?q=is%3Apr+head%3A{branch}"
                       if github and branch else None),
        })
    return sorted(out, key=lambda c: (c["opened_tick"], c["id"]))


def _pending(snap: GitSnapshot) -> list[dict[str, Any]]:
    """A person's decisions on main that the next merge applies: conflicts decided, reverts asked for."""
    out: list[dict[str, Any]] = []
    for p, data in snap.read_many(snap.under(RESOLUTION_DIR)).items():
        try:
            r = canonical.load(data or b"", p)
        except FleetError as e:
            out.append({"path": p, "kind": "unreadable", "what": str(e)})
            continue
        # a person's file: what it does not name is said so, never shown as None (the merge checks the rest)
        if isinstance(r, dict) and "revert" in r:
            out.append({"path": p, "kind": "revert", "what": f"revert of {printable(str(r['revert']), 120)}",
                        "by": r.get("by")})
        elif isinstance(r, dict):
            what = (f"decision on {printable(str(r['conflict']), 120)}" if r.get("conflict") is not None
                    else "decision that names no conflict")
            out.append({"path": p, "kind": "decision", "what": what, "by": r.get("by")})
    return out


def _github_repo(repo: FleetRepo) -> tuple[str, str] | None:
    """(server, owner/name) when the fleet's main lives on github.com, or on
    the server a GitHub Actions job names (GITHUB_SERVER_URL, GITHUB_REPOSITORY)."""
    import os

    url = repo.remote or ""
    if url and "/" not in url and ":" not in url:  # a remote's name
        url = repo.git.proc("config", "--get", f"remote.{url}.url").stdout.decode().strip()
    m = _GITHUB.match(url)
    if m:
        return "https://github.com", m.group(1)
    named = os.environ.get("GITHUB_REPOSITORY", "")
    if re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", named):
        return os.environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/"), named
    return None


def _quarantine(snap: GitSnapshot, unreadable: list[str]) -> list[dict[str, Any]]:
    out = []
    for p, data in snap.read_many(snap.under(QUARANTINE_DIR)).items():
        for line in (data or b"").splitlines():
            try:
                q = canonical.load(line, p)
            except FleetError as e:
                unreadable.append(printable(str(e), 300))
                break
            if not isinstance(q, dict):
                unreadable.append(f"{printable(p, 200)}: a quarantine record must be a JSON object, one a line")
                break
            d: dict[str, Any] = q["delta"] if isinstance(q.get("delta"), dict) else {}
            out.append({"tick": q.get("tick"), "path": q.get("path"), "reason": q.get("reason"),
                        "delta": d.get("id"), "agent": d.get("agent"), "worker": q.get("worker")})
    return sorted(out, key=lambda q: (q["tick"] or 0, str(q["path"])))


