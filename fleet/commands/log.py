"""`fleet log [DOC]`: the audit trail, read from history.

Which deltas changed a document (or, with no document, every delta), with
the tick, utc, agent and worker, newest first. A commit on main that the
merge engine did not make and that changed the document (or, with no
document, anything under state/ or schemas/) is listed too, as ``outside``,
with its author: main has one writer, and a person's change is never silent.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from fleet import canonical
from fleet.cli import dir_option, emit, json_option, remote_option
from fleet.config import FLEET_PATH
from fleet.errors import UsageError
from fleet.git import Git
from fleet.ledger import tick_inputs, tick_of
from fleet.outside import describe
from fleet.repo import FleetRepo


@dataclass
class LogEntry:
    tick: int
    commit: str
    delta: str
    utc: str
    agent: str
    worker: str
    ops: list[str]
    status: str  # applied | quarantined | outside (a commit not made by the merge engine)
    reason: str = ""  # why nothing changed, why quarantined, or an outside commit's subject
    author: str = ""  # an outside commit's author, "Name <email>"

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def log(
    path: Path,
    doc: str | None = None,
    agent: str | None = None,
    limit: int = 50,
    remote: str | None = None,
) -> list[LogEntry]:
    repo = FleetRepo(path, remote)
    repo.fetch()
    git = repo.git
    head = repo.main()
    cfg = repo.snapshot(head).config
    # Ledger lines were accepted under the limits of their day; today's (a lower
    # limits.max_ops, say) must not make history unreadable.
    trusted = dataclasses.replace(cfg.limits, max_ops=sys.maxsize)
    pathspec: list[str] = []
    target: tuple[str, str] | None = None
    if doc:
        d = doc.removeprefix("state/").removesuffix(".json")
        coll, _, doc_id = d.partition("/")
        if coll not in cfg.collections or not doc_id:
            raise UsageError(f"{doc}: name a document as <collection>/<id>, e.g. {next(iter(cfg.collections))}/<id> "
                             f"(collections: {', '.join(cfg.collections)})")
        doc_id = doc_id.rsplit("/", 1)[-1]
        target = (coll, doc_id)
        pathspec = ["--", cfg.collections[coll].doc_path(doc_id)]
    out = git.run("log", "--first-parent", "--format=%H %P%x00%B%x1e", head, *pathspec).decode()
    entries: list[LogEntry] = []
    for rec in out.split("\x1e"):
        rec = rec.lstrip("\n")
        if not rec:
            continue
        shas, _, body = rec.partition("\0")
        commit, *parents = shas.split()
        tick = tick_of(body)
        if not parents:
            continue  # genesis: the starting state
        if tick is None:
            if not agent:  # a person's commit: attributed to its author, never skipped
                entry = _outside(git, commit, parents[0], pathspec[1:])
                if entry is not None:
                    entries.append(entry)
            if len(entries) >= limit:
                break
            continue
        inputs = tick_inputs(git, parents[0], commit, trusted)
        for d in sorted(inputs.applied, key=lambda d: d.key, reverse=True):
            if target and not any((o.collection, o.id) == target for o in d.ops):
                continue
            if agent and d.agent != agent:
                continue
            ops = [f"{o.op} {o.collection}/{o.id}" + (f" {'.'.join(o.path)}" if o.path else "") for o in d.ops]
            why = "" if ops else str(d.meta.get("noop") or d.meta.get("error") or "")  # an explicit no-op says why
            entries.append(LogEntry(tick, commit, d.id, d.utc, d.agent, d.worker, ops, "applied", why))
        if not target:
            for q in inputs.quarantined:
                body_ = q.get("delta") or {}
                if agent and body_.get("agent") != agent:
                    continue
                entries.append(LogEntry(tick, commit, body_.get("id", q["path"]), body_.get("utc", ""),
                                        body_.get("agent", "?"), q["worker"], [], "quarantined", q["reason"]))
        if len(entries) >= limit:
            break
    return entries[:limit]


def _outside(git: Git, commit: str, parent: str, paths: list[str]) -> LogEntry | None:
    """A commit the merge engine did not make, if it changed ``paths`` (or state/schemas)."""
    oc = describe(git, commit, parent)
    changes = [c for c in oc.changes if not paths or c.path in paths]
    if not changes:
        return None
    try:
        tick = int(canonical.parse(git.show(commit, FLEET_PATH) or b"")["tick"])
    except (canonical.JSONProblem, KeyError, TypeError, ValueError):
        tick = -1  # a clock edited by hand: fleet status and replay --check say so
    return LogEntry(tick, commit, "", oc.date, "", "", [str(c) for c in changes], "outside", oc.subject, oc.author)


# -- the command line --------------------------------------------------------
@click.command("log")
@dir_option
@json_option
@remote_option
@click.argument("doc", required=False)
@click.option("--agent", default=None, help="Only this agent's deltas.")
@click.option("-n", "--limit", default=50, show_default=True, help="At most this many entries.")
def log_command(directory: Path, as_json: bool, remote: str | None, doc: str | None, agent: str | None, limit: int) -> None:
    """Which deltas changed DOC (collection/id), by whom, newest first."""
    entries = log(directory, doc, agent, limit, remote)

    def text() -> None:
        if not entries:
            click.echo("no deltas found")
        for e in entries:
            if e.status == "outside":
                click.echo(f"tick {e.tick:<5} {e.utc}  commit {e.commit[:12]} by {e.author}, outside the merge "
                           f"engine ({e.reason!r}): {'; '.join(e.ops)}")
                continue
            what = ("; ".join(e.ops) or f"no change: {e.reason or 'no reason given'}") if e.status == "applied" \
                else f"QUARANTINED: {e.reason}"
            click.echo(f"tick {e.tick:<5} {e.utc}  {e.agent:<12} {e.worker:<8} {e.delta}  {what}")

    emit([e.to_json() for e in entries], as_json, text)
