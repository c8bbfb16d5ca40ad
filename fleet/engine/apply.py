"""Applying ops to documents: every op of one tick on one document, at once.

``combine`` applies the ops of a tick's deltas to one document in any order
and says which deltas are refused and which fields are held. ``Applier`` runs
it over every document a tick touches, validates the results, and, once
anything is refused, decides delta by delta in delta order which deltas stand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fleet import canonical, docpath, keys, schemas
from fleet.authority import Authority, describe, refusal
from fleet.config import Collection, Config
from fleet.delta import Delta, Op
from fleet.engine.conflicts import Meanings, OpenHere, apply_sets, hold
from fleet.errors import FleetError
from fleet.records import Conflict
from fleet.state import CONFLICT_DIR, Snapshot

_MISSING = docpath.MISSING
_OpError = docpath.PathError  # an op that cannot apply to the document as it is
_get = docpath.get
_put = docpath.put

Entry = tuple[Delta, Op]  # an op and the delta it belongs to
DocKey = tuple[str, str]  # (collection, document id)


@dataclass
class DocOutcome:
    """What a tick's ops did to one document."""

    doc: dict[str, Any] | None  # None: deleted or never existed
    errors: dict[str, str]  # delta id -> reason
    conflicts: list[Conflict]
    exists: bool


@dataclass
class Outcome:
    """What a tick's ops did to every document they touch."""

    docs: dict[DocKey, DocOutcome]
    culprits: dict[str, str]
    base_bytes: dict[str, bytes | None]
    open_conflicts: dict[str, Conflict]


class Applier:
    """Applies deltas to the documents of one snapshot, for one tick."""

    def __init__(self, base: Snapshot, cfg: Config, tick: int, meanings: Meanings | None = None,
                 replaying: bool = False) -> None:
        self.meanings = meanings or {}  # the model's recorded merges ('meaning' policy), by conflict id
        self.base = base
        self.cfg = cfg
        self.tick = tick
        self.authority = Authority(cfg)  # its answers live as long as this merge
        # no document the merge writes holds a secret's value, nor a float where its schema says
        # integer (doc_problem); a replay takes what the ledger applied, on any machine, as it was
        self.secrets = [] if replaying else keys.named()
        self.strict = not replaying
        self._conflicts: dict[str, Conflict] | None = None

    def open_conflicts(self) -> dict[str, Conflict]:
        """The held conflicts on main, by file path, read once."""
        if self._conflicts is None:
            paths = self.base.under(CONFLICT_DIR)
            blobs = self.base.read_many(paths)
            self._conflicts = {p: Conflict.parse(blobs[p] or b"", p) for p in paths}
        return self._conflicts

    def run(self, deltas: list[Delta]) -> Outcome:
        """Apply ``deltas`` all at once, document by document; ``culprits``
        names every delta refused in some document."""
        cfg = self.cfg
        culprits: dict[str, str] = {}
        by_doc: dict[DocKey, list[Entry]] = {}
        for d in deltas:
            for op in d.ops:
                if op.collection not in cfg.collections:
                    culprits.setdefault(d.id, f"unknown collection {op.collection!r} (state/config.json collections)")
                    continue
                by_doc.setdefault((op.collection, op.id), []).append((d, op))
        paths = {key: cfg.collections[key[0]].doc_path(key[1]) for key in by_doc}
        base_bytes = self.base.read_many(paths.values())
        conflicts_by_doc: dict[DocKey, OpenHere] = {}
        if self.base.under(CONFLICT_DIR):
            for c in self.open_conflicts().values():
                conflicts_by_doc.setdefault((c.collection, c.doc), {})[c.path] = c

        docs: dict[DocKey, DocOutcome] = {}
        for key in sorted(by_doc):
            entries = [(d, op) for d, op in by_doc[key] if d.id not in culprits]
            coll = cfg.collections[key[0]]
            path = paths[key]
            raw = base_bytes[path]
            base_doc = None
            if raw is not None:
                base_doc = canonical.load(raw, path)
                problem = doc_problem(self.base, coll, key[1], base_doc, written=False)
                if problem:
                    raise FleetError(
                        f"{path}: the state on main is invalid: {problem}; fix the file or revert the commit that broke it"
                    )
            open_here = conflicts_by_doc.get(key, {})
            out = combine(coll, key[1], raw, entries, open_here, self.authority, self.tick, self.meanings,
                          strict=self.strict)
            # Refused ops or an invalid result: settle the document in delta
            # order, so that a delta that is refused (an intruder's create, say)
            # takes no later delta down with it.
            if out.errors or (out.doc is not None and doc_problem(self.base, coll, key[1], out.doc, self.secrets, self.strict)):
                out = self._blame(coll, key[1], path, raw, entries, open_here)
            for delta_id, reason in out.errors.items():
                culprits.setdefault(delta_id, reason)
            docs[key] = out
        return Outcome(docs, culprits, base_bytes, self.open_conflicts() if conflicts_by_doc else {})

    def sequential(self, deltas: list[Delta]) -> dict[str, str]:
        """The deltas to refuse, decided one by one in delta order: a delta
        applies when all its ops apply, and leave every document it touches
        valid, on top of the earlier deltas that apply. Used once the fast,
        all-at-once pass found a culprit, so that no refusal found in one
        document can take down a delta that the sequential answer keeps."""
        cfg = self.cfg
        keys = {(op.collection, op.id) for d in deltas for op in d.ops if op.collection in cfg.collections}
        paths = {k: cfg.collections[k[0]].doc_path(k[1]) for k in keys}
        base_bytes = self.base.read_many(paths.values())
        open_by_doc: dict[DocKey, OpenHere] = {}
        for c in self.open_conflicts().values():
            open_by_doc.setdefault((c.collection, c.doc), {})[c.path] = c
        accepted: dict[DocKey, list[Entry]] = {}
        # A document whose accepted ops so far can be replayed one delta at a
        # time (see Carried.takes) is carried as its current bytes: adding a
        # delta then costs its own ops, not all the earlier ones again, so k
        # deltas on one hot document cost O(k) combines, not O(k^2). The
        # decisions are the same as recombining from the base (a property
        # test holds the two together); anything else recombines.
        carried: dict[DocKey, Carried] = {}
        refused: dict[str, str] = {}
        for d in deltas:
            unknown = next((op.collection for op in d.ops if op.collection not in cfg.collections), None)
            if unknown is not None:
                refused[d.id] = f"unknown collection {unknown!r} (state/config.json collections)"
                continue
            mine: dict[DocKey, list[Entry]] = {}
            for op in d.ops:
                mine.setdefault((op.collection, op.id), []).append((d, op))
            reason = None
            results: dict[DocKey, DocOutcome] = {}
            takes: dict[DocKey, bool] = {}
            start: bytes | None
            for key, ops in mine.items():
                coll = cfg.collections[key[0]]
                open_here = open_by_doc.get(key, {})
                first = key not in accepted
                now = Carried() if first else carried.get(key)
                takes[key] = now is not None and now.takes(coll, cfg, d, ops, open_here)
                parsed = None
                if takes[key] and not first:
                    start, entries, parsed = None, ops, carried[key].private(ops)
                elif first:
                    start, entries = base_bytes[paths[key]], ops
                else:
                    start, entries = base_bytes[paths[key]], accepted[key] + ops
                out = combine(coll, key[1], start, entries, open_here, self.authority, self.tick, self.meanings,
                              parsed, strict=self.strict)
                results[key] = out
                if out.errors:  # its own op, or one it broke for an earlier delta: its doing either way
                    reason = out.errors.get(d.id) or next(iter(out.errors.values()))
                elif out.doc is not None:
                    problem = doc_problem(self.base, coll, key[1], out.doc, self.secrets, self.strict)
                    if problem:
                        reason = f"would make {paths[key]} invalid: {problem}"
                if reason:
                    break
            if reason:
                refused[d.id] = reason
            else:
                for key, ops in mine.items():
                    accepted.setdefault(key, []).extend(ops)
                    out = results[key]
                    if takes[key] and out.doc is not None and not out.conflicts:
                        then = carried.get(key) or Carried()
                        then.doc = out.doc
                        then.record(d, ops)
                        carried[key] = then
                    else:
                        carried.pop(key, None)
        return refused

    def _blame(self, coll: Collection, doc_id: str, path: str, raw: bytes | None, entries: list[Entry],
               open_here: OpenHere) -> DocOutcome:
        """Add deltas one by one, in delta order, and blame each one whose
        ops are refused or make the document invalid on top of the earlier
        ones that stand."""
        by_delta: dict[str, list[Entry]] = {}
        order: list[Delta] = []
        for d, op in entries:
            if d.id not in by_delta:
                order.append(d)
            by_delta.setdefault(d.id, []).append((d, op))
        accepted: set[str] = set()
        taken: list[Entry] = []  # the ops of the accepted deltas, in delta order
        errors: dict[str, str] = {}
        carry: Carried | None = Carried()  # as in sequential: O(k) combines, not O(k^2)
        for d in order:
            ops = by_delta[d.id]
            takes = carry is not None and carry.takes(coll, self.cfg, d, ops, open_here)
            if carry is not None and takes and carry.doc is not None:
                out = combine(coll, doc_id, None, ops, open_here, self.authority, self.tick, self.meanings,
                              carry.private(ops), strict=self.strict)
            elif carry is not None and takes:  # the first delta: main's document as it is
                out = combine(coll, doc_id, raw, ops, open_here, self.authority, self.tick, self.meanings, strict=self.strict)
            else:
                out = combine(coll, doc_id, raw, taken + ops, open_here, self.authority, self.tick, self.meanings,
                              strict=self.strict)
            if d.id in out.errors:
                errors[d.id] = out.errors[d.id]
                continue
            problem = out.doc is not None and doc_problem(self.base, coll, doc_id, out.doc, self.secrets, self.strict)
            if problem:
                errors[d.id] = f"would make {path} invalid: {problem}"
                continue
            accepted.add(d.id)
            taken += ops
            if carry is not None and takes and out.doc is not None and not out.conflicts:
                carry.doc = out.doc
                carry.record(d, ops)
            else:
                carry = None
        out = combine(coll, doc_id, raw, [(x, op) for x, op in entries if x.id in accepted], open_here, self.authority,
                      self.tick, self.meanings, strict=self.strict)
        out.errors = errors
        return out


CARRIED_OPS = ("incr", "add", "set", "append")


@dataclass
class Carried:
    """A document carried through ``Applier.sequential`` and ``_blame``: the
    document after the deltas accepted so far (None before the first), and
    what those deltas did to each field. The document is never changed in
    place: each trial works on :meth:`private`, which copies only the objects
    on the trial's paths, so a delta costs its own ops, not the document."""

    doc: dict[str, Any] | None = None
    kinds: dict[tuple[str, ...], str] = field(default_factory=dict)  # path -> the one op kind on it
    values: dict[tuple[str, ...], tuple[bytes, tuple[Any, ...]]] = field(default_factory=dict)  # set: value, latest key
    items: dict[tuple[str, ...], dict[str, str]] = field(default_factory=dict)  # append: item id -> digest

    def takes(self, coll: Collection, cfg: Config, d: Delta, ops: list[Entry], open_here: OpenHere) -> bool:
        """Whether ``combine`` of this document with only ``ops`` decides ``d``
        exactly as recombining every accepted op and ``ops`` from the base:
        each field takes one kind of op (increments, adds, sets or appends),
        fields do not overlap each other or a held conflict, a set agrees with
        the earlier sets of its field or is the latest under ``lww``, and an
        append brings no item id that this tick appended with other content.
        (The owner, read before any op, cannot change: its field is fixed.)"""
        mine: dict[tuple[str, ...], str] = {}
        for _, op in ops:
            if op.op not in CARRIED_OPS or mine.setdefault(op.path, op.op) != op.op:
                return False
        for path, kind in mine.items():
            for other, other_kind in self.kinds.items():
                if other == path:
                    if other_kind != kind:
                        return False
                elif _overlaps(other, path):
                    return False
            if any(p != path and _overlaps(p, path) for p in mine):
                return False
            if any(_overlaps(held, path) for held in open_here):
                return False
            if kind == "set" and path in self.values:
                value = [op.arg for _, op in ops if op.path == path][-1]  # a delta's last set of a field counts
                line, latest = self.values[path]
                if canonical.dumps_line(value) != line and not (cfg.policy(coll.name, path) == "lww" and d.key > latest):
                    return False
            elif kind == "append" and path in self.items:
                seen = self.items[path]
                for _, op in ops:
                    if op.path == path and isinstance(op.arg, dict):
                        known = seen.get(op.arg.get("id"))  # type: ignore[arg-type]
                        if known is not None and known != canonical.digest(op.arg):
                            return False
        return True

    def private(self, ops: list[Entry]) -> dict[str, Any]:
        """A copy of the document that ``combine`` may change along the paths
        of ``ops`` (the only places it writes: ``docpath.put``) without
        touching the carried one."""
        assert self.doc is not None
        top = dict(self.doc)
        for _, op in ops:
            cur = top
            for k in op.path[:-1]:
                nxt = cur.get(k)
                if type(nxt) is not dict:
                    break
                cur[k] = cur = dict(nxt)
        return top

    def record(self, d: Delta, ops: list[Entry]) -> None:
        """Note what the accepted ``d`` did with ``ops``."""
        for _, op in ops:
            self.kinds[op.path] = op.op
            if op.op == "set":
                line = canonical.dumps_line(op.arg)
                old = self.values.get(op.path)
                self.values[op.path] = (line, max(old[1], d.key) if old else d.key)
            elif op.op == "append" and isinstance(op.arg, dict):
                self.items.setdefault(op.path, {}).setdefault(op.arg["id"], canonical.digest(op.arg))


def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """One path is a prefix of the other (or they are the same)."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def doc_problem(base: Snapshot, coll: Collection, doc_id: str, doc: Any,
                secrets: list[tuple[str, bytes]] | None = None, written: bool = True) -> str | None:
    """Why ``doc`` cannot be document ``doc_id`` of ``coll``, or None if it can.
    ``secrets`` (keys.named()): a document the merge writes may hold none of them. The
    commit's last net would mask it, and a masked document is another document (a key
    renamed, a value the schema refuses) that nobody checked: the change is refused here."""
    if not isinstance(doc, dict) or doc.get("id") != doc_id:
        return f"its 'id' must be {doc_id!r}"
    problem = schemas.first_error(base.validator(coll.name), doc)
    if problem:
        return f"{problem} (schemas/{coll.schema})"
    # A document the merge writes holds its integers as integers (an incr by 1.0, a create's
    # "tick": 2e0); main's own, as it found it (written=False), is read as JSON Schema reads it.
    problem = schemas.float_at_integer(base.integer_places(coll.name), doc) if written else None
    if problem:
        return f"{problem} (schemas/{coll.schema})"
    try:
        line = canonical.dumps_line(doc)
    except TypeError as e:  # orjson: an integer beyond 64 bits
        return f"it cannot be written as JSON: {e}"
    for name, value in secrets or ():
        if value in line:
            return (f"it would hold the value of {name}, and fleet writes no key's value anywhere (if {name} "
                    "is no secret, rename it: a variable named like a token, key or secret is treated as one)")
    return None


def combine(
    coll: Collection,
    doc_id: str,
    raw: bytes | None,
    entries: list[Entry],
    open_here: OpenHere,
    authority: Authority,
    tick: int,
    meanings: Meanings | None = None,
    parsed: dict[str, Any] | None = None,
    strict: bool = True,
) -> DocOutcome:
    """Apply every op on one document from the deltas of one tick, in any order.
    ``parsed``: the document already parsed, a copy this call may change
    (``Carried.private``), instead of ``raw``. ``strict``: refuse an op that can apply
    in no order before it competes (a replay takes what a merge decided before this rule)."""
    errors: dict[str, str] = {}
    # raw is main's document, checked where the tick read it (Applier.run), or bytes the engine wrote
    doc: dict[str, Any] | None = parsed if parsed is not None else canonical.parse_trusted(raw) if raw is not None else None
    exists = doc is not None

    creates = [(d, op) for d, op in entries if op.op == "create"]
    winner: Delta | None = None
    for d, op in creates:
        if exists:
            errors.setdefault(d.id, f"create {coll.name}/{doc_id}: the document already exists")
        elif winner is None:
            if not isinstance(op.arg, dict) or op.arg.get("id") != doc_id:
                errors.setdefault(d.id, f"create {coll.name}/{doc_id}: the document's 'id' must be {doc_id!r}")
                continue
            winner, doc = d, canonical.clone(op.arg)
        elif canonical.digest(op.arg) != canonical.digest(doc):
            errors.setdefault(d.id, f"create {coll.name}/{doc_id}: already created in this tick by delta {winner.id}"
                              if d is not winner else f"create {coll.name}/{doc_id}: the delta creates it twice, with different content")

    owner = coll.owner_of(doc_id, doc)
    for d, op in entries:
        if d.id in errors:
            continue
        if op.op == "create":
            # Every create, not only the one that stands: a copy of another
            # agent's create must not carry an agent past its rules.
            if not authority.allows(coll, coll.owner_of(doc_id, op.arg), d, op):
                errors[d.id] = refusal(d, op, coll, coll.owner_of(doc_id, op.arg))
            continue
        if doc is None:
            errors[d.id] = f"{describe(op)}: no such document"
        elif not authority.allows(coll, owner, d, op):
            errors[d.id] = refusal(d, op, coll, owner)
    # An op whose path crosses a value that is not an object (bio.x where bio is a string)
    # applies in no order: it is refused before it can compete with the ops that can, and
    # hold a field for a person to choose between a change and a mistake. Judged on the
    # document as this combine starts (main's, or the create's), which is the same wherever
    # it is decided: an op carried on top of earlier deltas (Carried.takes) overlaps none
    # of their fields, so the values on its way are main's.
    if doc is not None and strict:
        for d, op in entries:
            if op.op not in ("create", "delete") and d.id not in errors and _crosses(doc, op.path):
                errors[d.id] = f"{describe(op)}: {'.'.join(op.path)} crosses a value that is not an object"
    if errors:
        entries = [(d, op) for d, op in entries if d.id not in errors]
        if winner is not None and winner.id in errors:
            doc, winner = (None, None)

    if doc is None:
        return DocOutcome(None, errors, [], exists)
    if any(op.op == "delete" for _, op in entries):
        return DocOutcome(None, errors, [], exists)  # a delete wins

    # Ops on overlapping fields cannot commute: they are grouped at the
    # outermost field and held there together, as one conflict.
    held_paths = _overlapping({op.path for _, op in entries if op.op != "create"})
    groups: dict[tuple[str, ...], list[Entry]] = {}
    for d, op in entries:
        if op.op != "create":
            groups.setdefault(held_paths.get(op.path, op.path), []).append((d, op))

    conflicts: list[Conflict] = []
    for path in sorted(groups):
        ops = groups[path]
        kinds = {_family(op.op) for _, op in ops}
        if path in held_paths or len(kinds) > 1:
            conflicts.append(hold(coll, doc_id, path, doc, ops, "mixed", "different kinds of change to overlapping fields", tick, open_here, as_ops=True))
            continue
        family = kinds.pop()
        try:
            if family == "set":
                apply_sets(coll, doc_id, doc, path, ops, authority.cfg, owner, tick, open_here, conflicts, meanings)
            elif family == "incr":
                cur = _get(doc, path)
                cur = 0 if cur is _MISSING else cur
                if isinstance(cur, bool) or not isinstance(cur, (int, float)):
                    raise _OpError(f"{'.'.join(path)} is not a number")
                total = cur
                for _, op in ops:
                    total += op.arg
                if type(total) is float and not math.isfinite(total):  # orjson would write it as null
                    raise _OpError(f"{'.'.join(path)} would be {total}, which JSON cannot hold")
                # (an integer beyond 64 bits is refused where the document is written: doc_problem)
                _put(doc, path, total)
            elif family == "set-member":
                _apply_members(doc, path, ops)
            else:
                appended = _apply_append(coll, doc_id, doc, path, ops, tick, open_here, conflicts)
                for delta_id, reason in appended.items():
                    errors.setdefault(delta_id, reason)
        except _OpError as e:
            for d, op in ops:
                errors.setdefault(d.id, f"{describe(op)}: {e}")
    # A conflict is between deltas: one delta whose own ops compete for a
    # field leaves nobody to choose between, so it is refused instead.
    for c in conflicts:
        if len(c.candidates) < 2:
            errors.setdefault(c.candidates[0]["delta"], f"{c.where}: the delta's own ops compete for this field ({c.reason})")
    return DocOutcome(doc, errors, conflicts, exists)


def _crosses(doc: dict[str, Any], path: tuple[str, ...]) -> bool:
    """Whether a value on the way to ``path`` (not the field itself) is there and no object."""
    cur: Any = doc
    for k in path[:-1]:
        cur = cur.get(k, _MISSING)
        if cur is _MISSING:
            return False  # made on the way, as docpath.put does
        if type(cur) is not dict:
            return True
    return False


def _family(op: str) -> str:
    """The ops that combine with each other on one field."""
    return {"set": "set", "incr": "incr", "add": "set-member", "remove": "set-member", "append": "append", "delete": "delete"}[op]


def _overlapping(paths: set[tuple[str, ...]]) -> dict[tuple[str, ...], tuple[str, ...]]:
    """Paths where one is a proper prefix of another, each mapped to the
    outermost path of its group: their ops cannot commute."""
    held: dict[tuple[str, ...], tuple[str, ...]] = {}
    outer: tuple[str, ...] | None = None
    for p in sorted(paths):  # a path sorts right before the paths it prefixes
        if outer is not None and p[: len(outer)] == outer:
            held[outer] = held[p] = outer
        else:
            outer = p
    return held


def member_key(v: Any) -> tuple[int, Any, Any]:
    """The order of a set's members: null, booleans, numbers, strings (a revert sorts by it too)."""
    if v is None:
        return (0, 0, "")
    if isinstance(v, bool):
        return (1, int(v), "")
    if isinstance(v, (int, float)):
        return (2, v, "")
    return (3, 0, v)


def _apply_members(doc: dict[str, Any], path: tuple[str, ...], ops: list[Entry]) -> None:
    cur = _get(doc, path)
    cur = [] if cur is _MISSING else cur
    if not isinstance(cur, list) or any(isinstance(v, (dict, list)) for v in cur):
        raise _OpError(f"{'.'.join(path)} is not a set of scalars")
    members = {canonical.dumps_line(v): v for v in cur}
    adds = {canonical.dumps_line(op.arg): op.arg for _, op in ops if op.op == "add"}
    for _, op in ops:  # an add and a remove of one value in one tick: the add wins
        k = canonical.dumps_line(op.arg)
        if op.op == "remove" and k not in adds:
            members.pop(k, None)
    members.update(adds)
    _put(doc, path, sorted(members.values(), key=member_key))


def _apply_append(coll: Collection, doc_id: str, doc: dict[str, Any], path: tuple[str, ...], ops: list[Entry],
                  tick: int, open_here: OpenHere, conflicts: list[Conflict]) -> dict[str, str]:
    """Append the id-keyed items of one list; returns the refused deltas with
    their reasons. Different items under one new id are held."""
    errors: dict[str, str] = {}
    cur = _get(doc, path)
    cur = [] if cur is _MISSING else cur
    # One pass over the list, and digests only where ids meet: a hot list of
    # k items costs no k digests a delta. (i["id"] fails on anything but an
    # object with an 'id': a list, a string, a number, null.)
    try:
        if not isinstance(cur, list):
            raise TypeError
        existing = {i["id"]: i for i in cur}
    except (TypeError, KeyError):
        raise _OpError(f"{'.'.join(path)} is not a list of objects with an 'id'") from None
    new: dict[str, list[tuple[Delta, Any]]] = {}  # item id -> (delta, item)
    for d, op in ops:
        item_id = op.arg["id"]
        if item_id in existing:
            if canonical.digest(existing[item_id]) != canonical.digest(op.arg):
                errors.setdefault(d.id, f"append {coll.name}/{doc_id} {'.'.join(path)}: item {item_id!r} already exists with other content")
            continue
        new.setdefault(item_id, []).append((d, op.arg))
    for item_id, items in new.items():
        if len(items) < 2:
            continue
        mine: dict[str, str] = {}
        for d, item in items:
            digest = canonical.digest(item)
            if mine.setdefault(d.id, digest) != digest:
                errors.setdefault(d.id, f"append {coll.name}/{doc_id} {'.'.join(path)}: the delta appends two different items with id {item_id!r}")
    out = list(cur)
    for item_id, items in new.items():
        if (len(items) > 1 and len({canonical.digest(i) for _, i in items}) > 1) or (*path, item_id) in open_here:
            conflicts.append(hold(coll, doc_id, (*path, item_id), doc, items, "append", f"different items with id {item_id!r}", tick, open_here))
        else:
            out.append(canonical.clone(items[0][1]))
    _put(doc, path, out)
    return errors


