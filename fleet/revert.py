"""Undoing one delta (seed 003: one unit of work reverts cleanly).

`fleet revert DELTA` finds the tick commit that applied the delta, recomputes
that tick without it (the engine's replay of the tick, minus one delta), and
so knows exactly what the delta changed: for each document it touched, the
document with the delta and the document had it never come. What later
ticks did to those documents is kept where it does not depend on the
delta's change (a counter others incremented since stays incremented, by
their amount); where a later change touched what the delta changed (a field
set since, an item edited, a document created by the delta and changed
since), the revert is refused, naming the later deltas, decisions or
commits that built on it. Later deltas are read op by op, not only through
the state they left: an op that changed nothing because of the delta (the
same item appended again, a member added again, a field set to the value it
had) would change something had the delta never come.

The result is a revert file, ``state/resolutions/revert-<delta>.json``
(schemas/resolution.schema.json), committed on the fleet's main as a person's
decision is: each document's new content and a digest of the document as it
was when the revert was computed. The next merge applies it before the
tick's deltas, only if every document is still that very one, and records
it in ``state/ledger/<tick>/_reverts.jsonl``; replay applies it the same way,
so exactly-once and replay hold as for every other change to main.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fleet import canonical, docpath
from fleet.delta import Delta, Op
from fleet.engine import replay_tick
from fleet.engine.apply import member_key as _member_key
from fleet.errors import FleetError
from fleet.git import Git
from fleet.ids import is_safe_id, printable
from fleet.ledger import tick_inputs, tick_of
from fleet.records import Conflict
from fleet.resolve import RESOLUTION_DIR, REVERT_PREFIX, REVERTS
from fleet.state import CONFLICT_DIR, LEDGER_DIR, QUARANTINE_DIR, GitSnapshot

MISSING = docpath.MISSING


@dataclass
class Found:
    """Where a delta went: the commit that applied (or quarantined) it."""

    commit: str
    parent: str
    tick: int
    delta: Delta | None = None  # applied
    quarantined: dict[str, Any] | None = None  # its quarantine record
    reverted: dict[str, Any] | None = None  # a revert record of it, with the tick that applied it
    copies: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # other quarantine records of it, + "in_tick"


def request_path(delta_id: str) -> str:
    return f"{RESOLUTION_DIR}/{REVERT_PREFIX}{delta_id}.json"


def _names(record: dict[str, Any], delta_id: str) -> bool:
    """Whether a quarantine record is of ``delta_id``: by its parsed delta's id, or, for a
    file quarantined before it was parsed (not JSON, a duplicate key, a symlink, a secret
    in it, in another worker's folder), by the file's name, ``<id>.json``."""
    body = record.get("delta")
    if isinstance(body, dict) and body.get("id") == delta_id:
        return True
    where = record.get("path")
    return isinstance(where, str) and where.rsplit("/", 1)[-1] == f"{delta_id}.json"


def find(git: Git, head: str, delta_id: str, snap: GitSnapshot) -> Found | None:
    """The commit whose ledger (or, if none, quarantine) gained ``delta_id``, any revert
    of it since, and every other quarantine record of it (a late copy, a bad one before)."""
    trusted = dataclasses.replace(snap.config.limits, max_ops=sys.maxsize)
    out = git.text("log", "--first-parent", "--reverse", "--format=%H %P", "-F", "-S", delta_id, head,
                   "--", LEDGER_DIR + "/", QUARANTINE_DIR + "/")
    found: Found | None = None
    records: list[dict[str, Any]] = []
    for line in out.splitlines():
        commit, *parents = line.split()
        if not parents:
            continue
        tick = tick_of(git.text("show", "-s", "--format=%B", commit))
        if tick is None:
            continue
        inputs = tick_inputs(git, parents[0], commit, trusted)
        applied = next((d for d in inputs.applied if d.id == delta_id), None)
        if applied is not None and (found is None or found.delta is None):
            found = Found(commit, parents[0], tick, delta=applied)
        for q in inputs.quarantined:
            if _names(q, delta_id):
                records.append({**q, "in_tick": tick})
                if found is None:
                    found = Found(commit, parents[0], tick, quarantined=q)
        rv = next((r for r in inputs.reverts if r.get("revert") == delta_id and r.get("status") == "applied"), None)
        if rv is not None and found is not None:
            found.reverted = {**rv, "in_tick": tick}
    if found is not None:
        found.copies = [r for r in records if found.quarantined is None
                        or {k: v for k, v in r.items() if k != "in_tick"} != found.quarantined]
    return found


def plan(git: Git, head: str, delta_id: str, by: str, pending: Sequence[str] = ()) -> tuple[str, dict[str, Any]]:
    """The revert file that undoes ``delta_id`` on main at ``head``, or a
    FleetError saying why not (naming the later changes that built on it).
    ``pending``: the delta ids waiting on worker branches, for the message."""
    if not is_safe_id(delta_id):
        raise FleetError(f"{printable(delta_id, 100)}: not a delta id")
    snap = GitSnapshot(git, head)
    found = find(git, head, delta_id, snap)
    if found is None:
        if delta_id in pending:
            raise FleetError(f"{delta_id}: waits on a worker branch and is not merged yet: nothing to revert")
        raise FleetError(f"{delta_id}: no delta with this id in the fleet's history (`fleet log` lists them)")
    if found.delta is None:
        why = (found.quarantined or {}).get("reason", "")
        raise FleetError(f"{delta_id}: was quarantined in tick {found.tick} ({printable(str(why), 200)}): "
                         "it changed nothing, so there is nothing to revert")
    if found.reverted is not None:
        raise FleetError(f"{delta_id}: already reverted, in tick {found.reverted['in_tick']}")
    d = found.delta
    if not d.ops:
        raise FleetError(f"{delta_id}: an explicit empty delta (no-op): it changed nothing")
    at = GitSnapshot(git, found.commit)
    before = GitSnapshot(git, found.parent)
    _refuse_held(at, snap, d)
    inputs = tick_inputs(git, found.parent, found.commit,
                         dataclasses.replace(at.config.limits, max_ops=sys.maxsize))
    try:
        without = replay_tick(before, [x for x in inputs.applied if x.id != d.id], inputs.quarantined, inputs.outside)
    except FleetError as e:  # another delta of its tick does not apply without it
        raise FleetError(f"{delta_id} cannot be reverted: other deltas of tick {found.tick} built on it "
                         f"({printable(str(e), 300)})") from None
    cfg = at.config
    touched = sorted({cfg.collections[o.collection].doc_path(o.id) for o in d.ops if o.collection in cfg.collections})
    with_d = at.read_many(touched)
    old = before.read_many(touched)
    now = snap.read_many(touched)
    later = _later_ops(git, found.commit, head, touched, cfg)
    docs: list[dict[str, Any]] = []
    clashes: dict[str, list[tuple[str, ...]]] = {}
    for path in touched:
        w = with_d[path]
        wo = without.writes[path] if path in without.writes else None if path in without.deletes else old[path]
        if w == wo:
            continue  # its change here made no difference (an add of a member already there, say)
        cur = now[path]
        if cur == w and path not in later:
            target = _load(wo, path)
        else:
            target, bad = merge3(_load(w, path), _load(cur, path), _load(wo, path), later=later.get(path))
            if bad:
                clashes[path] = bad
                continue
        if target is not MISSING and _load(cur, path) == target:
            continue
        docs.append({"path": path, "expect": canonical.digest_line(cur) if cur is not None else None,
                     "doc": None if target is MISSING else target})
    if clashes:
        raise FleetError(f"{delta_id} cannot be reverted cleanly: later changes built on it: "
                         + "; ".join(_later(git, found.commit, head, clashes, cfg)))
    if not docs:
        raise FleetError(f"{delta_id}: reverting it would change nothing on main now")
    for doc in docs:  # what the merge will check, checked now: one line naming the file
        if doc["doc"] is not None:
            coll = cfg.collections[doc["path"].split("/")[1]]
            from fleet import schemas

            problem = schemas.first_error(snap.validator(coll.name), doc["doc"])
            if problem:
                raise FleetError(f"{delta_id} cannot be reverted: {doc['path']} would be invalid: {problem} "
                                 f"(schemas/{coll.schema})")
    return request_path(delta_id), {"revert": delta_id, "tick": found.tick, "docs": docs, "by": by}


def _load(data: bytes | None, path: str) -> Any:
    return MISSING if data is None else canonical.load(data, path)


def _refuse_held(at: GitSnapshot, now: GitSnapshot, d: Delta) -> None:
    """A change of the delta that a conflict held is not the delta's to undo: a person decides it."""
    for path, data in at.read_many(at.under(CONFLICT_DIR)).items():
        c = Conflict.parse(data or b"", path)
        if not any(x["delta"] == d.id for x in c.candidates):
            continue
        if now.read(path) is not None:
            raise FleetError(f"{d.id}: its change of {c.where} is held in conflict {c.id}: decide that instead "
                             f"(`fleet resolve {c.id} --choose base` keeps the value from before)")
        raise FleetError(f"{d.id}: its change of {c.where} was held in conflict {c.id}, which a person has "
                         "decided since; that decision built on it")


# -- a three-way merge: the delta's change, taken back out of what main is now ----------
def _same(a: Any, b: Any) -> bool:
    if a is MISSING or b is MISSING:
        return a is b
    return bool(canonical.dumps_line(a) == canonical.dumps_line(b))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _scalars(v: Any) -> bool:
    return isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v)


def _items(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, dict) and "id" in x for x in v)


@dataclass(frozen=True)
class Later:
    """What the deltas (and decisions) of the ticks after the delta's did to
    one document, whether or not it changed anything there: a later op that
    changed nothing with the delta may well change something without it (an
    item appended again, a member added again, a field set to the same value),
    so the state of main alone cannot tell what "never came" would hold."""

    sets: frozenset[tuple[str, ...]] = frozenset()  # paths set (() : the document created or deleted)
    members: frozenset[tuple[tuple[str, ...], bytes]] = frozenset()  # (path, canonical member line) added or removed
    items: frozenset[tuple[tuple[str, ...], str]] = frozenset()  # (path, item id) appended
    paths: frozenset[tuple[str, ...]] = frozenset()  # every path a later op or decision touched

    def near(self, at: tuple[str, ...]) -> bool:
        return any(p[: len(at)] == at or at[: len(p)] == p for p in self.paths)

    def set_over(self, at: tuple[str, ...]) -> bool:
        return any(at[: len(p)] == p for p in self.sets)


def merge3(w: Any, cur: Any, wo: Any, at: tuple[str, ...] = (),
           later: Later | None = None) -> tuple[Any, list[tuple[str, ...]]]:
    """``cur`` with the change from ``w`` (with the delta) to ``wo`` (without
    it) taken out. Counters give back the delta's amount, sets and id-keyed
    lists lose or regain its members and items, objects are merged key by key.
    ``later``: what later deltas did to the document; a member they added or
    removed since keeps what they made of it, a field they set or an item they
    appended where the delta changed it is a clash. Returns the result and the
    fields where a later change touched what the delta changed (then the
    result is not to be used)."""
    if _same(w, wo):
        return cur, []
    if later is not None and later.set_over(at):
        return cur, [at]  # set again since (to whatever value): that later change built on it
    if later is None or not later.near(at):
        if _same(cur, w):
            return wo, []
        if _same(cur, wo):
            return cur, []
    if _number(w) and _number(cur) and _number(wo):
        return cur + (wo - w), []
    if isinstance(w, dict) and isinstance(cur, dict) and isinstance(wo, dict):
        out: dict[str, Any] = {}
        bad: list[tuple[str, ...]] = []
        for k in sorted(set(w) | set(cur) | set(wo)):
            v, b = merge3(w.get(k, MISSING), cur.get(k, MISSING), wo.get(k, MISSING), (*at, k), later)
            bad += b
            if v is not MISSING:
                out[k] = v
        return out, bad
    if _scalars(w) and _scalars(cur) and _scalars(wo):
        since = {m for p, m in later.members if p == at} if later is not None else set()
        gone = {canonical.dumps_line(x) for x in w} - {canonical.dumps_line(x) for x in wo} - since
        back = {canonical.dumps_line(x): x for x in wo if x not in w and canonical.dumps_line(x) not in since}
        members = {canonical.dumps_line(x): x for x in cur if canonical.dumps_line(x) not in gone}
        members.update(back)
        return sorted(members.values(), key=_member_key), []
    if _items(w) and _items(cur) and _items(wo):
        wi, woi = {x["id"]: x for x in w}, {x["id"]: x for x in wo}
        curi = {x["id"]: x for x in cur}
        again = {i for p, i in later.items if p == at} if later is not None else set()
        bad = [(*at, str(i)) for i in set(wi) | set(woi)
               if not _same(wi.get(i, MISSING), woi.get(i, MISSING)) and i in curi
               and (not _same(curi[i], wi.get(i, MISSING)) or str(i) in again)]
        if bad:
            return cur, sorted(bad)
        items = [x if x["id"] not in woi or x["id"] not in wi else woi[x["id"]] for x in cur if x["id"] in woi or x["id"] not in wi]
        items += [x for i, x in woi.items() if i not in wi and i not in curi]
        return items, []
    return cur, [at]


def _later_ops(git: Git, since: str, head: str, touched: list[str], cfg: Any) -> dict[str, Later]:
    """Per document in ``touched``: what the ticks after ``since`` up to ``head``
    applied to it. Every tick commit is read, not only those that changed the
    document: an op that changed nothing there counts too."""
    trusted = dataclasses.replace(cfg.limits, max_ops=sys.maxsize)
    where = {(path.split("/")[1], path.rsplit("/", 1)[-1].removesuffix(".json")): path for path in touched}
    found: dict[str, dict[str, set[Any]]] = {}

    def note(path: str, kind: str, value: Any) -> None:
        found.setdefault(path, {"sets": set(), "members": set(), "items": set(), "paths": set()})[kind].add(value)

    for c in git.commits("--first-parent", f"{since}..{head}", "--", LEDGER_DIR + "/"):
        commit, parents, body = c.sha, list(c.parents), c.message
        if not parents or tick_of(body) is None:
            continue
        inputs = tick_inputs(git, parents[0], commit, trusted)
        for d in inputs.applied:
            for o in d.ops:
                path = where.get((o.collection, o.id))
                if path is None:
                    continue
                note(path, "paths", o.path)
                if o.op in ("set", "create", "delete"):
                    note(path, "sets", o.path)
                elif o.op in ("add", "remove"):
                    note(path, "members", (o.path, canonical.dumps_line(o.arg)))
                elif o.op == "append" and isinstance(o.arg, dict):
                    note(path, "items", (o.path, str(o.arg.get("id"))))
        for r in inputs.decisions:
            path = where.get((str(r.get("collection")), str(r.get("doc"))))
            if path is not None and isinstance(r.get("path"), list):
                note(path, "paths", tuple(str(x) for x in r["path"]))
                note(path, "sets", tuple(str(x) for x in r["path"]))
    return {path: Later(frozenset(f["sets"]), frozenset(f["members"]), frozenset(f["items"]),
                        frozenset(f["paths"])) for path, f in found.items()}


def _later(git: Git, since: str, head: str, clashes: dict[str, list[tuple[str, ...]]], cfg: Any) -> list[str]:
    """Each clash, with the later deltas (and decisions, and commits by hand) that changed it."""
    trusted = dataclasses.replace(cfg.limits, max_ops=sys.maxsize)
    out = []
    for path, fields in sorted(clashes.items()):
        coll, doc_id = path.split("/")[1], path.rsplit("/", 1)[-1].removesuffix(".json")
        people: list[str] = []  # a person's commit: the blocker a reader looks for, named first
        who: list[str] = []
        # every tick, not only those that changed the document: a later op that changed nothing
        # with the delta (an item appended again) is what built on it when it would without
        for c in git.commits("--first-parent", "--reverse", f"{since}..{head}", "--", path, LEDGER_DIR + "/"):
            commit, parents, author, body = c.sha, list(c.parents), c.author, c.message
            tick = tick_of(body)
            if tick is None:
                if not parents or git.changed(parents[0], commit, [path]):
                    people.append(f"commit {commit[:12]} by {printable(author, 120)}")
                continue
            inputs = tick_inputs(git, parents[0], commit, trusted)
            for d in inputs.applied:
                if any(o.collection == coll and o.id == doc_id and _overlaps(o, fields) for o in d.ops):
                    who.append(f"delta {d.id} ({d.agent}, tick {d.tick})")
            for r in inputs.decisions:
                if r.get("collection") == coll and r.get("doc") == doc_id:
                    who.append(f"the decision on {r.get('conflict')} (tick {tick})")
            for r in inputs.reverts:
                if path in r.get("docs", []) and r.get("status") == "applied":
                    who.append(f"the revert of {r.get('revert')} (tick {tick})")
        names = ", ".join(".".join(f) or "the document" for f in fields[:LATER_SHOWN])
        if len(fields) > LATER_SHOWN:
            names += f" and {len(fields) - LATER_SHOWN} more field(s)"
        out.append(f"{coll}/{doc_id} {names}: " + _bounded(list(dict.fromkeys(people)), list(dict.fromkeys(who)),
                                                          f"{coll}/{doc_id}"))
    return out


LATER_SHOWN = 10  # later changes named in a refusal: thousands of deltas can build on one


def _bounded(people: list[str], others: list[str], doc: str) -> str:
    """The later changes of one document, for a message a person reads: every commit
    by hand first (what they are most likely to have to undo), then the first
    ``LATER_SHOWN`` others, then how many more and where to see them."""
    shown = people[:LATER_SHOWN] + others[: max(0, LATER_SHOWN - len(people))]
    rest = len(people) + len(others) - len(shown)
    if not shown:
        return "a change fleet cannot name"
    return ", ".join(shown) + (f", and {rest} more (`fleet log {doc}` lists them)" if rest else "")


def _overlaps(o: Op, fields: list[tuple[str, ...]]) -> bool:
    if o.op in ("create", "delete"):
        return True
    for f in fields:
        if o.path[: len(f)] == f:
            return True
        if f[: len(o.path)] == o.path:  # a field under the op's: an append names the item it is about
            if o.op != "append" or len(f) == len(o.path) or not isinstance(o.arg, dict) \
                    or f[len(o.path)] == str(o.arg.get("id")):
                return True
    return False


__all__ = ["Found", "Later", "MISSING", "REVERTS", "find", "merge3", "plan", "request_path"]
