"""Applying a person's decisions on held conflicts.

A decision is a resolution file, ``state/resolutions/<conflict id>.json``
(schemas/resolution.schema.json), that reaches main when a person merges the
conflict's pull request. The next merge applies it before the tick's deltas:
the field takes the chosen value, and the conflict and resolution files go.
A pull request closed without merging gets the documented fallback, a
resolution that keeps the value from before the conflict, handed to the merge
as an outside input; it is recorded in ``state/ledger/<tick>/_resolutions.jsonl``
so that replay sees it too. The merge engine applies decisions; it never
makes one.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any

from fleet import canonical, docpath, fieldindex, schemas
from fleet.errors import FleetError
from fleet.records import Conflict
from fleet.state import CONFLICT_DIR, LEDGER_DIR, OverlaySnapshot, Snapshot

RESOLUTION_DIR = "state/resolutions"
RECORDS = "_resolutions.jsonl"  # in state/ledger/<tick>/; no worker id starts with "_"
REVERTS = "_reverts.jsonl"  # reverts applied or refused, beside them
REVERT_PREFIX = "revert-"  # state/resolutions/revert-<delta id>.json: a revert asked for by `fleet revert`
BASE = "base"
_MISSING = docpath.MISSING


@dataclass
class Resolved:
    writes: dict[str, bytes] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    reverts: list[dict[str, Any]] = field(default_factory=list)  # one record per revert file: applied or refused


def fallback(conflict_id: str, why: str) -> dict[str, Any]:
    """The documented fallback of a conflict nobody decided: keep the old value."""
    return {"conflict": conflict_id, "choose": BASE, "by": why}


def apply(base: Snapshot, outside: list[dict[str, Any]] = ()) -> tuple[Snapshot, Resolved]:
    """Apply the resolution files on main and the ``outside`` ones (fallbacks).

    Returns the snapshot the tick's deltas then apply to, and what changed.
    """
    items: list[tuple[str | None, dict[str, Any]]] = []
    reverts: list[tuple[str, dict[str, Any]]] = []
    for path, data in base.read_many(base.under(RESOLUTION_DIR)).items():
        body = _checked(canonical.load(data or b"", path), path)
        if "revert" in body:
            reverts.append((path, body))
        else:
            items.append((path, body))
    for r in outside:
        items.append((None, _checked(r, "a fallback resolution")))
    if not items and not reverts:
        return base, Resolved()
    done = Resolved()
    docs: dict[str, dict[str, Any] | None] = {}
    seen: set[str] = set()
    for path, r in sorted(items, key=lambda i: (i[1]["conflict"], i[0] is None)):
        cid = r["conflict"]
        if path is not None:
            done.deletes.append(path)
        if cid in seen:
            continue  # a file and a fallback for one conflict: the person's file wins
        seen.add(cid)
        cpath = f"{CONFLICT_DIR}/{cid}.json"
        raw = base.read(cpath)
        if raw is None:
            continue  # decided already, or moot (its document was deleted)
        c = Conflict.parse(raw, cpath)
        coll = base.config.collections.get(c.collection)
        where = path or "fallback"
        if coll is None:
            raise FleetError(f"{cpath}: collection {c.collection!r} is no longer in state/config.json")
        dpath = coll.doc_path(c.doc)
        if dpath not in docs:
            data = base.read(dpath)
            docs[dpath] = canonical.load(data, dpath) if data is not None else None
        doc = docs[dpath]
        done.deletes.append(cpath)
        if doc is not None:
            try:
                _decide(doc, c, r, where)
            except docpath.PathError as e:
                raise FleetError(f"{where}: the decision on {cid} cannot apply to {dpath}: {e}") from None
            problem = schemas.first_error(base.validator(coll.name), doc)
            if problem:
                raise FleetError(f"{where}: the decision on {cid} would make {dpath} invalid: {problem} "
                                 f"(schemas/{coll.schema}); choose another candidate or value")
        done.records.append({"conflict": cid, "collection": c.collection, "doc": c.doc, "path": list(c.path),
                             **{k: r[k] for k in ("choose", "value", "by") if k in r},
                             "source": "file" if path else "fallback"})
    for dpath, doc in docs.items():
        if doc is not None:
            done.writes[dpath] = canonical.dumps(doc)
    for path, r in sorted(reverts):  # after the conflicts' decisions, in the order of the delta ids
        _revert(OverlaySnapshot(base, done.writes, done.deletes), path, r, done)
    return OverlaySnapshot(base, done.writes, done.deletes), done


def _revert(snap: Snapshot, path: str, r: dict[str, Any], done: Resolved) -> None:
    """Apply one revert file, all of it or nothing: each document must still be
    the one `fleet revert` saw (``expect``) and its new content valid; else the
    revert is refused with the reason. The file goes either way: it is decided."""
    done.deletes.append(path)
    rec: dict[str, Any] = {"revert": r["revert"], "tick": r["tick"], "docs": [d["path"] for d in r["docs"]],
                           **({"by": r["by"]} if "by" in r else {})}
    problem = None
    new: dict[str, bytes | None] = {}
    current = snap.read_many(d["path"] for d in r["docs"])
    for d in r["docs"]:
        dpath, doc = d["path"], d["doc"]
        parts = dpath.split("/")
        coll = snap.config.collections.get(parts[1])
        doc_id = parts[-1].removesuffix(".json")
        if coll is None or coll.doc_path(doc_id) != dpath:
            problem = f"{dpath} is no document of a collection in state/config.json"
            break
        cur = current[dpath]
        if (canonical.digest_line(cur) if cur is not None else None) != d["expect"]:
            problem = (f"{dpath} changed since `fleet revert` looked at it; run `fleet revert {r['revert']}` again "
                       "to see what built on it since")
            break
        if doc is not None:
            if doc.get("id") != doc_id:
                problem = f"{dpath}: its 'id' must be {doc_id!r}"
                break
            invalid = schemas.first_error(snap.validator(coll.name), doc)
            if invalid:
                problem = f"{dpath} would be invalid: {invalid} (schemas/{coll.schema})"
                break
        new[dpath] = None if doc is None else canonical.dumps(doc)
    if problem is not None:
        done.reverts.append({**rec, "status": "refused", "reason": problem})
        return
    for dpath, data in new.items():
        if data is None:
            done.writes.pop(dpath, None)
            done.deletes.append(dpath)
        else:
            done.writes[dpath] = data
            if dpath in done.deletes:
                done.deletes.remove(dpath)
    done.reverts.append({**rec, "status": "applied"})


def reverts_path(tick: int) -> str:
    return f"{LEDGER_DIR}/{tick}/{REVERTS}"


def outside_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fallbacks among a tick's resolution records (for replay)."""
    return [{k: r[k] for k in ("conflict", "choose", "value", "by") if k in r}
            for r in records if r.get("source") == "fallback"]


def records_path(tick: int) -> str:
    return f"{LEDGER_DIR}/{tick}/{RECORDS}"


def _checked(r: Any, where: str) -> dict[str, Any]:
    problem = schemas.first_error(schemas.protocol("resolution"), r)
    if problem:
        raise FleetError(f"{where}: {problem} (schemas/resolution.schema.json)")
    return r


def _decide(doc: dict[str, Any], c: Conflict, r: dict[str, Any], where: str) -> None:
    path = c.path
    if "value" in r:
        value = r["value"]
    elif r["choose"] == BASE:
        value = c.base
    else:
        chosen = [x for x in c.candidates if x["delta"] == r["choose"]]
        if not chosen:
            raise FleetError(f"{where}: choose {r['choose']!r} is neither 'base' nor a candidate of {c.id}")
        if "value" not in chosen[0]:
            raise FleetError(f"{where}: candidate {r['choose']} of {c.id} changed the field in several ways; "
                             "choose 'base' or give a value")
        value = chosen[0]["value"]
    if c.policy == "append":  # an item of an id-keyed list: the path ends in the item's id
        items = docpath.get(doc, path[:-1])
        items = [] if items is _MISSING else [i for i in items if i.get("id") != path[-1]]
        if value is not _MISSING and value is not None:
            items.append(value)
        docpath.put(doc, path[:-1], items)
    elif value is _MISSING:
        parent = docpath.get(doc, path[:-1]) if len(path) > 1 else doc
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
    else:
        docpath.put(doc, path, canonical.clone(value))


# -- a person's decision, made on this machine (`fleet resolve`) ------------------
ATTEMPTS = 5


@dataclass
class Proposed:
    """A person's file committed on the fleet's main for the next merge to apply."""

    path: str
    commit: str
    body: dict[str, Any]
    replaced: bool  # a pending decision of the same thing was replaced
    remote: str | None
    already: bool = False  # the same decision was pending already: nothing committed, ``commit`` is the one that made it


def person(git: Any) -> str:
    """Who is deciding: git's author identity here, as a commit by hand would have."""
    p = git.proc("var", "GIT_AUTHOR_IDENT")
    ident = p.stdout.decode(errors="replace").strip() if p.returncode == 0 else ""
    return ident.rsplit(" ", 2)[0] if ident else "a person (no git identity set)"


def propose(repo: Any, build: Any, subject: str) -> Proposed:
    """Commit a person's file on the fleet's main, as merging a pull request would,
    with a compare-and-swap: ``build(snapshot)`` checks what it decides against
    main as it is now and returns (path, body). Main moving meanwhile is retried."""
    from fleet.git import FLEET_IDENT

    for _ in range(ATTEMPTS):
        repo.fetch()
        head = repo.main()
        snap = repo.snapshot(head)
        path, body = build(snap)
        had = snap.read(path)
        if had == canonical.dumps(body):  # asked again before the merge: no second, empty commit
            made = repo.git.text("log", "-1", "--format=%H", head, "--", path).strip() or head
            return Proposed(path, made, body, False, repo.remote, already=True)
        replaced = had is not None
        tree_commit = repo.git.write_commit(head, subject, {path: canonical.dumps(body)}, [])
        who = person(repo.git)
        name, _, email = who.partition(" <")
        ident = ["-c", f"author.name={name}", "-c", f"author.email={email.rstrip('>') or 'unknown'}",
                 "-c", f"committer.name={FLEET_IDENT[0]}", "-c", f"committer.email={FLEET_IDENT[1]}"]
        commit = repo.git.run(*ident, "commit-tree", repo.git.commit_tree(tree_commit), "-p", head,
                              "-m", subject).decode().strip()
        index = fieldindex.for_publish(repo.git, snap, commit, repo.index_ref)  # as the merge: workers read it
        try:
            published = repo.publish(commit, head, [], index)
        except FleetError as e:  # a protected main: people decide through pull requests there
            raise FleetError(f"{e}; where main takes no pushes from people, merge the conflict's pull request "
                             f"(or one adding {path}) instead") from None
        if published:
            return Proposed(path, commit, body, replaced, repo.remote)
    raise FleetError(f"the fleet's main kept moving: gave up after {ATTEMPTS} attempts; run the command again")


def decided(snap: Snapshot, conflict_id: str) -> str | None:
    """When and how a conflict that is no longer open was decided, read from the
    decision records the merges wrote (``state/ledger/<tick>/_resolutions.jsonl``,
    in history however old), or None if no merge decided it."""
    from fleet.ids import printable
    from fleet.ledger import tick_inputs, tick_of  # (it imports this module)
    from fleet.state import GitSnapshot

    if not isinstance(snap, GitSnapshot):
        return None
    git = snap.git
    out = git.text("log", "--first-parent", "--format=%H %P", "-F", "-S", conflict_id, snap.commit,
                   "--", LEDGER_DIR + "/")
    for line in out.splitlines():  # newest first
        commit, *parents = line.split()
        tick = tick_of(git.text("show", "-s", "--format=%B", commit)) if parents else None
        if tick is None:
            continue
        trusted = dataclasses.replace(snap.config.limits, max_ops=sys.maxsize)  # the ledger: applied already
        for r in tick_inputs(git, parents[0], commit, trusted).decisions:
            if r.get("conflict") != conflict_id:
                continue
            how = (f"chose {printable(str(r['choose']), 100)}" if "choose" in r
                   else f"set the value {printable(canonical.dumps_line(r.get('value')).decode(), 100)}")
            src = "the fallback of its closed pull request" if r.get("source") == "fallback" else "a decision"
            # a decision file need not say who made it (resolution.schema.json): said so, not "?"
            by = (f", by {printable(str(r['by']), 120)}" if r.get("by") else "" if r.get("source") == "fallback"
                  else ", its file names no one who made it")
            return f"in tick {tick} ({src}: {how}{by})"
    return None


def decision(snap: Snapshot, conflict_id: str, choose: str | None, value: Any, by: str) -> tuple[str, dict[str, Any]]:
    """The resolution file deciding ``conflict_id`` on ``snap``, checked as the
    merge will check it: the conflict is open, the candidate is one of its
    own, and the document stays valid."""
    from fleet.ids import is_safe_id, printable

    cpath = f"{CONFLICT_DIR}/{conflict_id}.json"
    raw = snap.read(cpath) if is_safe_id(conflict_id) else None
    if raw is None:
        done = decided(snap, conflict_id) if is_safe_id(conflict_id) else None
        if done is not None:
            raise FleetError(f"{conflict_id}: already decided, {done}: no open conflict to decide "
                             "(`fleet log` of the document shows it)")
        open_ = [p.rsplit("/", 1)[1].removesuffix(".json") for p in snap.under(CONFLICT_DIR)]
        listed = f"open: {', '.join(open_[:10])}" if open_ else "none is open"
        raise FleetError(f"{printable(conflict_id, 100)}: no open conflict with this id on the fleet's main "
                         f"(tick {snap.tick}; {listed}; `fleet status` lists them)")
    c = Conflict.parse(raw, cpath)
    body: dict[str, Any] = {"conflict": c.id}
    if choose is not None:
        ids = [x["delta"] for x in c.candidates]
        if choose != BASE and choose not in ids:
            raise FleetError(f"{printable(choose, 100)}: not a candidate of conflict {c.id} "
                             f"(candidates: {', '.join(ids)}; or 'base', the value from before the conflict)")
        body["choose"] = choose
    else:
        body["value"] = value
    body["by"] = by
    path = f"{RESOLUTION_DIR}/{c.id}.json"
    apply(OverlaySnapshot(snap, {path: canonical.dumps(body)}, []))  # refuses what the merge would refuse
    return path, body
