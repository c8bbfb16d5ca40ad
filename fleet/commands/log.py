"""`fleet log [DOC]`: the audit trail, read from history.

Which deltas changed a document (or, with no document, every delta), with
the tick, utc, agent and worker, newest first. A commit on main that the
merge engine did not make and that changed the document (or, with no
document, anything under state/ or schemas/) is listed too, as ``outside``,
with its author: main has one writer, and a person's change is never silent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from fleet import canonical, docpath
from fleet.cli import dir_option, emit, json_option, remote_option
from fleet.config import CONFIG_PATH, FLEET_PATH
from fleet.delta import DELTA_DIR
from fleet.errors import FleetError, UsageError
from fleet.git import Git
from fleet.ids import is_safe_id, printable
from fleet.ledger import TickInputs, held_in, tick_inputs
from fleet.outside import before_first_tick, claims_tick, describe, tick_commits
from fleet.repo import FleetRepo
from fleet.state import CONFLICT_DIR


@dataclass
class LogEntry:
    tick: int
    commit: str
    delta: str
    utc: str
    agent: str
    worker: str
    ops: list[str]
    # applied | noop (an explicit empty delta) | held (a change held in a conflict) | quarantined |
    # decided (a person's decision on a conflict) | reverted / revert refused (`fleet revert`) |
    # outside (a commit not made by the merge engine)
    status: str
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
    cfg = repo.config(head)
    # Ledger lines were accepted under the limits of their day; today's (a lower
    # limits.max_ops, say) must not make history unreadable.
    trusted = dataclasses.replace(cfg.limits, max_ops=sys.maxsize)
    pathspec: list[str] = []
    held_spec: list[str] = []
    target: tuple[str, str] | None = None
    if doc:
        coll, doc_id = _name(cfg, doc)
        target = (coll, doc_id)
        # and every place it lived before a change of sharding (git mv'd as validate said), or
        # while its collection was in the config: history is read whatever today's config says
        h = hashlib.sha256(doc_id.encode()).hexdigest()
        before = [f"state/{coll}/{doc_id}.json",  # (a shard is 0 to 3 hex characters: schemas/config.schema.json)
                  *(f"state/{coll}/{h[:n]}/{doc_id}.json" for n in range(1, 4))]
        here = cfg.collections[coll].doc_path(doc_id) if coll in cfg.collections else before[0]
        pathspec = ["--", here, *(p for p in before if p != here)]
        held_spec = [CONFLICT_DIR + "/"]  # a held set leaves the document as it was: it is in the conflict files
    entries: list[LogEntry] = []
    recs = git.commits("--first-parent", head, *pathspec, *held_spec)  # messages of any bytes, read by size
    # a Fleet-Tick trailer that main's clock does not bear out makes no tick commit: a person's, listed as such
    ticks = tick_commits(git, [(c.sha, c.parents[0] if c.parents else None, c.message) for c in recs])
    for c in recs:
        commit, parents, body = c.sha, list(c.parents), c.message
        tick = ticks.get(commit)
        if not parents:
            continue  # genesis: the starting state
        if tick is None:
            # a person's commit: attributed to its author, never skipped; one made before the
            # first tick is the world's design (fleet.outside), named only in a document's log
            if not agent and (doc or not before_first_tick(git, f"{commit}^")):
                entry = _outside(git, commit, parents[0], pathspec[1:])
                if entry is not None:
                    if claims_tick(body):  # named for what it is: its trailer made it no tick commit
                        entry.reason += " (its message claims a Fleet-Tick that main's clock does not bear out)"
                    entries.append(entry)
            if len(entries) >= limit:
                break
            continue
        inputs = tick_inputs(git, parents[0], commit, trusted)
        if not agent:  # a person's decisions applied by this merge
            entries += _decisions(tick, commit, inputs, target, pathspec[1:])
        held: dict[str, list[str]] | None = None
        for d in sorted(inputs.applied, key=lambda d: d.key, reverse=True):
            if target and not any((o.collection, o.id) == target for o in d.ops):
                continue
            if agent and d.agent != agent:
                continue
            ops = [f"{o.op} {o.collection}/{o.id}" + (f" {'.'.join(o.path)}" if o.path else "") for o in d.ops]
            why = "" if ops else str(d.meta.get("noop") or d.meta.get("error") or "")  # an explicit no-op says why
            if held is None:
                held = held_in(git, parents[0], commit)
            status = "noop" if not ops else "held" if d.id in held else "applied"
            if status == "held":
                why = "; ".join(held[d.id])
            entries.append(LogEntry(tick, commit, d.id, d.utc, d.agent, d.worker, ops, status, why))
        if not target:
            for q in inputs.quarantined:
                body_ = q.get("delta") if isinstance(q.get("delta"), dict) else {}
                if agent and body_.get("agent") != agent:
                    continue
                # a file not read as a delta names no agent or utc: left empty, and the text says so
                entries.append(LogEntry(tick, commit, _text(body_.get("id")) or q["path"], _text(body_.get("utc")),
                                        _text(body_.get("agent")), q["worker"], [], "quarantined", q["reason"]))
        if len(entries) >= limit:
            break
    if target and not entries and target[0] not in cfg.collections:  # a typo, not a collection since removed
        raise FleetError(f"{printable(doc or '', 100)}: {printable(repr(target[0]), 100)} is not a collection in "
                         f"{CONFIG_PATH} (collections: {', '.join(cfg.collections)}), and no document of that name "
                         "is in the fleet's history")
    if target and not entries and repo.snapshot(head).read(pathspec[1]) is None:
        raise FleetError(f"{printable(doc, 100)}: no such document on the fleet's main (tick {repo.snapshot(head).tick}), "
                         "and none in its history")
    if agent and not entries and agent not in cfg.agents:  # a typo, not an agent that was quiet
        raise FleetError(f"--agent {printable(agent, 80)}: unknown: no agent of that name in state/config.json "
                         f"({', '.join(sorted(cfg.agents)[:20]) or 'none'}) and no delta of it in the fleet's history")
    return entries[:limit]


def _text(value: Any) -> str:
    """A field of a quarantined file as text ("" where it has none): any JSON a worker wrote."""
    if value is None:
        return ""
    return printable(value if isinstance(value, str) else canonical.dumps_line(value).decode(), 100)


def _name(cfg: Any, doc: str) -> tuple[str, str]:
    """(collection, id) of a document named ``collection/id`` or by its file. The
    collection need not be in today's config: a document of one since removed has
    its history still."""
    d = doc.removeprefix("state/").removesuffix(".json")
    coll, _, doc_id = d.partition("/")
    doc_id = doc_id.rsplit("/", 1)[-1]
    if not is_safe_id(coll) or not doc_id:
        raise UsageError(f"{printable(doc, 100)}: name a document as <collection>/<id>, e.g. {next(iter(cfg.collections))}/<id> "
                         f"(collections: {', '.join(cfg.collections)})")
    return coll, doc_id


def _target(cfg: Any, doc: str) -> tuple[str, str, str]:
    """(collection, id, file path) of a document on main, named ``collection/id`` or by its file."""
    coll, doc_id = _name(cfg, doc)
    if coll not in cfg.collections:
        raise FleetError(f"{printable(doc, 100)}: no such document on the fleet's main: {printable(repr(coll), 100)} "
                         f"is not a collection in {CONFIG_PATH} (collections: {', '.join(cfg.collections)}); "
                         f"`fleet log {printable(doc, 100)}` without --field lists the history it has")
    return coll, doc_id, cfg.collections[coll].doc_path(doc_id)


def blame(path: Path, doc: str, fields: list[str], remote: str | None = None) -> list[dict[str, Any]]:
    """Which delta (agent, worker, tick, utc), decision, revert or commit by hand
    last changed each field of ``doc`` (``*``: every top-level field)."""
    repo = FleetRepo(path, remote)
    repo.fetch()
    git, head = repo.git, repo.main()
    snap = repo.snapshot(head)
    coll, doc_id, rel = _target(snap.config, doc)
    now = snap.read(rel)
    if now is None:
        raise FleetError(f"{printable(doc, 100)}: no such document on the fleet's main (tick {snap.tick})")
    current = canonical.load(now, rel)
    wanted = sorted(current) if "*" in fields else fields
    paths = {f: tuple(f.split(".")) for f in wanted}
    for f, p in paths.items():
        if _at(current, p) is docpath.MISSING and "*" not in fields:
            raise FleetError(f"{printable(doc, 100)}: has no field '{printable(f, 100)}' (its fields: {', '.join(sorted(current))})")
    trusted = dataclasses.replace(snap.config.limits, max_ops=sys.maxsize)
    last: dict[str, dict[str, Any]] = {f: {"field": f, "how": "genesis", "tick": 0} for f in wanted}
    recs = git.commits("--first-parent", "--reverse", head, "--", rel)  # messages of any bytes, read by size
    ticks = tick_commits(git, [(c.sha, c.parents[0] if c.parents else None, c.message) for c in recs])
    for c in recs:
        commit, parents, author, body = c.sha, list(c.parents), c.author, c.message
        if not parents:
            continue
        before, after = (_doc_at(git, c, rel) for c in (parents[0], commit))
        changed = [f for f, p in paths.items() if not _same_at(before, after, p)]
        if not changed:
            continue
        tick = ticks.get(commit)
        if tick is None:
            how = "setup" if before_first_tick(git, f"{commit}^") else "outside"
            for f in changed:
                last[f] = {"field": f, "how": how, "commit": commit, "author": author,
                           "subject": body.split("\n", 1)[0]}
            continue
        inputs = tick_inputs(git, parents[0], commit, trusted)
        for f in changed:
            p = paths[f]
            by = [d for d in sorted(inputs.applied, key=lambda d: d.key)
                  if any(o.collection == coll and o.id == doc_id and (o.op in ("create", "delete")
                         or o.path[: len(p)] == p or p[: len(o.path)] == o.path) for o in d.ops)]
            decided = [r for r in inputs.decisions if (r.get("collection"), r.get("doc")) == (coll, doc_id)]
            reverted = [r for r in inputs.reverts if rel in (r.get("docs") or []) and r.get("status") == "applied"]
            entry: dict[str, Any] = {"field": f, "tick": tick, "commit": commit}
            if by:
                d = by[-1]
                entry.update(how="delta", delta=d.id, agent=d.agent, worker=d.worker, utc=d.utc,
                             also=[x.id for x in by[:-1]])  # counters: every delta of the tick added to it
            elif decided:
                entry.update(how="decision", conflict=decided[-1].get("conflict"),
                             by=_who(decided[-1].get("by"), decided[-1].get("source")))
            elif reverted:
                entry.update(how="revert", delta=reverted[-1].get("revert"), by=_who(reverted[-1].get("by")))
            else:
                entry.update(how="merge")
            last[f] = entry
    for f, p in paths.items():
        v = docpath.get(current, p)
        last[f]["value"] = None if v is docpath.MISSING else v
    return [last[f] for f in wanted]


def _doc_at(git: Git, commit: str, rel: str) -> Any:
    data = git.show(commit, rel)
    return None if data is None else canonical.load(data, f"{commit[:12]}:{rel}")


def _at(doc: Any, p: tuple[str, ...]) -> Any:
    """The value at ``p``, or MISSING: also where the path crosses a value that is
    no object (a field that was a number then, or a path typed into a number)."""
    try:
        return docpath.MISSING if doc is None else docpath.get(doc, p)
    except docpath.PathError:
        return docpath.MISSING


def _same_at(a: Any, b: Any, p: tuple[str, ...]) -> bool:
    va, vb = _at(a, p), _at(b, p)
    if va is docpath.MISSING or vb is docpath.MISSING:
        return va is vb
    return bool(canonical.dumps_line(va) == canonical.dumps_line(vb))


def delta_named(given: str) -> tuple[list[str], str | None]:
    """The delta ids ``given`` may name, most likely first, and the file path it names
    (None: a bare id or file name). A delta is named by its id, by its file's name,
    ``<id>.json`` (how a file quarantined before it was read is known), or by a path
    ending in that name: the one the merge prints, ``deltas/<worker>/<stream>/<id>.json``,
    or an inbox's file. (An id may itself end in ``.json``: both are tried.)"""
    name = given.rsplit("/", 1)[-1]
    ids = [i for i in dict.fromkeys([name.removesuffix(".json"), name] if name.endswith(".json") else [name])
           if is_safe_id(i)]
    if not ids or ("/" in given and not name.endswith(".json")):
        raise FleetError(f"{printable(given, 100)}: not a delta id, a delta file's name (ID.json) or its path "
                         "(deltas/WORKER/STREAM/ID.json, as the merge names it)")
    return ids, (given if "/" in given else None)


def _at_path(given: str, where: str) -> bool:
    """Whether the path a person gave is ``where`` (a path in a worker's tree), or ends with it (an inbox's file)."""
    return given == where or given.endswith("/" + where)


def fate(path: Path, delta_id: str, remote: str | None = None) -> dict[str, Any]:
    """One delta and what became of it: applied, noop, held, quarantined, pending
    (on a worker branch), reverted; where, when and why. ``delta_id``: its id, its
    file's name or its file's path (:func:`delta_named`)."""
    from fleet.revert import find

    repo = FleetRepo(path, remote)
    repo.fetch()
    git, head = repo.git, repo.main()
    snap = repo.snapshot(head)
    ids, where = delta_named(delta_id)
    given = delta_id
    for delta_id in ids:
        found = find(git, head, delta_id, snap)
        if found is not None:
            break
    else:
        for a in repo.arrivals(repo.sources(), snap.config.limits.max_delta_bytes):
            name = a.path.rsplit("/", 1)[-1]
            if name in {f"{i}.json" for i in ids} and (where is None or _at_path(where, a.path)):
                return {"delta": name.removesuffix(".json"), "status": "pending", "source": a.source, "path": a.path,
                        "reason": f"waits on {a.source.removeprefix('refs/heads/')} for the next merge"}
        raise FleetError(f"{printable(given, 100)}: no delta with this id in the fleet's history or on a worker branch")
    if where is not None:  # named by a path: the one this delta (or a quarantined copy of it) came in at
        d = found.delta
        paths = ([f"{DELTA_DIR}/{d.worker}/{d.stream}/{d.id}.json"] if d is not None else []) + [
            str(q.get("path")) for q in [found.quarantined or {}, *found.copies] if q.get("path")]
        if not any(_at_path(where, p) for p in paths):
            raise FleetError(f"{printable(given, 100)}: no delta came in at that path; delta {delta_id} came in at "
                             f"{', '.join(printable(p, 200) for p in dict.fromkeys(paths)) or 'a path not recorded'} "
                             f"(`fleet log --delta {delta_id}`)")
    out: dict[str, Any] = {"delta": delta_id, "tick": found.tick, "commit": found.commit}
    if found.delta is None:
        q = found.quarantined or {}
        d = q.get("delta") or {}
        d = d if isinstance(d, dict) else {}
        out.update(status="quarantined", reason=q.get("reason"), agent=d.get("agent"), worker=q.get("worker"),
                   utc=d.get("utc"), path=q.get("path"),
                   quarantined_copies=[{"tick": c["in_tick"], "reason": printable(str(c.get("reason", "")), 300),
                                        "path": printable(str(c.get("path", "")), 200)} for c in found.copies])
        return out
    d = found.delta
    out.update(agent=d.agent, worker=d.worker, utc=d.utc, delta_tick=d.tick, meta_error=d.meta.get("error"),
               ops=[f"{o.op} {o.collection}/{o.id}" + (f" {'.'.join(o.path)}" if o.path else "") for o in d.ops])
    held = held_in(git, found.parent, found.commit).get(d.id, [])
    if not d.ops:
        out.update(status="noop", reason=str(d.meta.get("noop") or d.meta.get("error") or "no reason given"))
    elif held:
        out.update(status="held", reason="; ".join(held))
    else:
        out.update(status="applied", reason=f"merged in tick {found.tick}" + (
            f" (late: made for tick {d.tick})" if d.tick < found.tick else ""))
    out["duplicates"] = "a copy arriving again is dropped as a duplicate: the ledger has it"
    out["quarantined_copies"] = [{"tick": c["in_tick"], "reason": printable(str(c.get("reason", "")), 300),
                                  "path": printable(str(c.get("path", "")), 200)} for c in found.copies]
    if found.reverted is not None:
        out["reverted"] = {"tick": found.reverted["in_tick"], "by": found.reverted.get("by")}
    return out


def _decisions(tick: int, commit: str, inputs: TickInputs, target: tuple[str, str] | None,
               paths: list[str]) -> list[LogEntry]:
    """The decisions and reverts a tick commit applied, on ``target`` (or all)."""
    out = []
    for r in inputs.decisions:
        if target and (r.get("collection"), r.get("doc")) != target:
            continue
        how = f"value {canonical.dumps_line(r['value']).decode()[:200]}" if "value" in r else f"choose {r.get('choose')}"
        where = f"{r.get('collection')}/{r.get('doc')} {'.'.join(map(str, r.get('path') or []))}"
        out.append(LogEntry(tick, commit, str(r.get("conflict")), "", "", "", [f"decide {where}: {how}"], "decided",
                            _who(r.get("by"), r.get("source")), str(r.get("by") or "")))
    for r in inputs.reverts:
        docs = [str(p) for p in r.get("docs") or []]
        if paths and not set(paths) & set(docs):
            continue
        status = "reverted" if r.get("status") == "applied" else "revert refused"
        out.append(LogEntry(tick, commit, str(r.get("revert")), "", "", "", [f"revert {p}" for p in docs], status,
                            str(r.get("reason") or r.get("by") or ""), str(r.get("by") or "")))
    return out

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
    how = "setup" if before_first_tick(git, f"{commit}^") else "outside"
    return LogEntry(tick, commit, "", oc.date, "", "", [str(c) for c in changes], how, oc.subject, oc.author)


# -- the command line --------------------------------------------------------
@click.command("log")
@dir_option
@json_option
@remote_option
@click.argument("doc", required=False)
@click.option("--agent", default=None, help="Only this agent's deltas.")
@click.option("-n", "--limit", default=50, show_default=True, help="At most this many entries.")
@click.option("--field", "fields", multiple=True, metavar="F",
              help="Blame: which delta (agent, worker, tick, utc) last changed field F of DOC (dotted; * for all).")
@click.option("--delta", "delta_id", default=None, metavar="ID",
              help="One delta and what became of it: applied, noop, held, quarantined, pending, reverted, and why. "
                   "ID: the delta's id, its file's name (ID.json) or the path the merge names "
                   "(deltas/WORKER/STREAM/ID.json).")
def log_command(directory: Path, as_json: bool, remote: str | None, doc: str | None, agent: str | None, limit: int,
                fields: tuple[str, ...], delta_id: str | None) -> None:
    """Which deltas changed DOC (collection/id), by whom, newest first."""
    if delta_id is not None:
        if doc or fields:
            raise UsageError("--delta ID stands alone: give no DOC or --field with it")
        f = fate(directory, delta_id, remote)
        emit(f, as_json, lambda: _fate_text(f))
        return
    if fields:
        if not doc:
            raise UsageError("--field needs a document: fleet log COLLECTION/ID --field F")
        rows = blame(directory, doc, list(fields), remote)
        emit(rows, as_json, lambda: _blame_text(rows))
        return
    entries = log(directory, doc, agent, limit, remote)

    def text() -> None:
        if not entries:
            click.echo("no deltas found")
        for e in entries:
            if e.status in ("outside", "setup"):
                how = "outside the merge engine" if e.status == "outside" else "before the first tick"
                click.echo(f"tick {e.tick:<5} {e.utc}  commit {e.commit[:12]} by {e.author}, {how} "
                           f"({e.reason!r}): {'; '.join(e.ops)}")
                continue
            if e.status in ("decided", "reverted", "revert refused"):
                tail = f" ({e.reason})" if e.reason else ""
                click.echo(f"tick {e.tick:<5} {e.status.upper()} {e.delta}: {'; '.join(e.ops)}{tail}")
                continue
            what = {"applied": "; ".join(e.ops), "noop": f"no change: {e.reason or 'no reason given'}",
                    "held": f"HELD: {'; '.join(e.ops)} ({e.reason})"}.get(e.status, f"QUARANTINED: {e.reason}")
            if not (e.utc and e.agent):  # a quarantined file that is no delta: say what is not known
                named = "".join(f", {k} {v}" for k, v in (("agent", e.agent), ("utc", e.utc)) if v)
                unknown = _unknown([k for k, v in (("agent", e.agent), ("utc", e.utc)) if not v])
                click.echo(f"tick {e.tick:<5} {e.delta} from worker {e.worker}{named} ({unknown}): {what}")
                continue
            click.echo(f"tick {e.tick:<5} {e.utc}  {e.agent:<12} {e.worker:<8} {e.delta}  {what}")

    emit([e.to_json() for e in entries], as_json, text)


def _blame_text(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        value = canonical.dumps_line(r["value"]).decode()
        value = value if len(value) <= 60 else value[:57] + "..."
        if r["how"] == "delta":
            also = f" (and {len(r['also'])} more in that tick)" if r["also"] else ""
            who = f"delta {r['delta']} by {r['agent']} on {r['worker']}, tick {r['tick']}, {r['utc']}{also}"
        elif r["how"] == "decision":  # a decision file need not say who made it (resolution.schema.json)
            who = f"the decision on {r['conflict']} ({r['by']}), tick {r['tick']}"
        elif r["how"] == "revert":
            who = f"the revert of {r['delta']} ({r['by']}), tick {r['tick']}"
        elif r["how"] in ("outside", "setup"):
            how = "outside the merge engine" if r["how"] == "outside" else "before the first tick"
            who = f"commit {r['commit'][:12]} by {r['author']}, {how} ({r['subject']!r})"
        elif r["how"] == "genesis":
            who = "unchanged since genesis"
        else:
            who = f"the merge of tick {r['tick']}"
        click.echo(f"{r['field']} = {value}: {who}")


def _unknown(fields: list[str]) -> str:
    """What a quarantined file does not name, said so: it was not read as a delta."""
    return f"its {' and '.join(fields)} {'is' if len(fields) == 1 else 'are'} not known: it was not read as a delta"


def _who(by: Any, source: Any = None) -> str:
    """Who made a decision or a revert, as its record says; a decision file need not say
    (resolution.schema.json), and a closed pull request's fallback is no one's."""
    if by:
        return printable(str(by), 120)
    return "the fallback of its closed pull request" if source == "fallback" else "its file names no one who made it"


def _fate_text(f: dict[str, Any]) -> None:
    click.echo(f"delta {f['delta']}: {f['status'].upper()}: {f['reason']}")
    if f["status"] == "pending":
        return
    # a quarantined file need not be a delta: what it does not name is said, not printed as None
    named = [f"{k} {_text(f.get(k))}" for k in ("agent", "worker", "utc") if f.get(k) is not None]
    unnamed = [k for k in ("agent", "worker", "utc") if f.get(k) is None]
    named.append(f"{'quarantined in' if f['status'] == 'quarantined' else 'merged by'} tick {f['tick']}")
    click.echo(f"  {', '.join(named)} (commit {f['commit'][:12]})"
               + (f"; {_unknown(unnamed)}" if unnamed else ""))
    for op in f.get("ops") or []:
        click.echo(f"  {op}")
    if f.get("reverted"):
        click.echo(f"  reverted in tick {f['reverted']['tick']} ({_who(f['reverted']['by'])})")
    for c in f.get("quarantined_copies") or []:
        click.echo(f"  a copy ({c['path']}) was quarantined in tick {c['tick']}: {c['reason']}")
