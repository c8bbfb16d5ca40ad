"""The merge engine: from a snapshot of main and a set of delta files to one tick.

``merge_tick`` is a pure function of (the state at main, the set of delta
files): the order in which the files arrived never matters, because deltas are
sorted by (tick, utc, worker, id) before anything is decided, and commutative
ops (counters, sets, id-keyed lists) give the same result in any order.

Each delta ends in exactly one of three places:

- applied: all its ops take effect and its canonical line joins the ledger,
  ``state/ledger/<delta tick>/<worker>.jsonl``; a set that competes with
  another delta's set of the same field and no policy decides is *held* in
  ``state/conflicts/<id>.json`` with every competing value, for a person;
- quarantined: none of its ops take effect; the file's content and the reason
  are recorded in ``state/quarantine/<tick>/<worker>.jsonl``;
- duplicate: its id and content are already in the ledger (a rerun, or a
  branch that was merged but not yet deleted); it is dropped, as it should be.

The tree does not grow with the number of ticks: ledger and quarantine keep
``limits.window`` ticks; older ones live in history, where replay reads them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from fleet import canonical, docpath, resolve, schemas, secrets
from fleet.config import FLEET_PATH, Collection, Config, Rule
from fleet.delta import Arrival, Delta, Rejected, parse
from fleet.errors import FleetError
from fleet.ids import printable
from fleet.state import CONFLICT_DIR, LEDGER_DIR, QUARANTINE_DIR, Snapshot

_MISSING = docpath.MISSING
_OpError = docpath.PathError  # an op that cannot apply to the document as it is


@dataclass
class Quarantined:
    arrival: Arrival
    reason: str
    delta: Delta | None = None

    def record(self, tick: int, max_raw: int) -> dict[str, Any]:
        """The quarantine record: names from outside in printable form, and the
        file's content only if it was a regular file of ours."""
        a = self.arrival
        rec: dict[str, Any] = {
            "tick": tick,
            "worker": self.delta.worker if self.delta else (a.worker_dir or UNKNOWN_WORKER),
            "source": printable(a.source),
            "path": printable(a.path),
            "reason": printable(self.reason, 2000),
            "size": a.size if a.size is not None else len(a.data),
        }
        if self.delta is not None:
            rec["delta"] = self.delta.body
        elif a.refused is None or a.data:  # a file over the size limit: its head
            rec["raw"] = secrets.redact(a.data[:max_raw].decode("utf-8", errors="replace"))
        return rec


UNKNOWN_WORKER = "_unknown"  # the quarantine file of entries whose folder names no worker



@dataclass
class TickResult:
    """What one merge decided, and the files that make it so."""

    tick: int
    writes: dict[str, bytes]
    deletes: list[str]
    applied: list[Delta]
    quarantined: list[dict[str, Any]]
    held: list[str]  # conflict ids opened or joined this tick
    duplicates: list[Arrival] = field(default_factory=list)
    late: int = 0
    docs_changed: int = 0
    resolved: list[str] = field(default_factory=list)  # conflict ids decided this tick


@dataclass
class _DocOutcome:
    doc: dict[str, Any] | None  # None: deleted or never existed
    errors: dict[str, str]  # delta id -> reason
    conflicts: list[dict[str, Any]]
    exists: bool


# -- ordering and triage ----------------------------------------------------


def merge_tick(base: Snapshot, arrivals: list[Arrival], outside: list[dict[str, Any]] = ()) -> TickResult:
    """Decide the next tick: which deltas apply, which are held, which are quarantined.

    Decisions on held conflicts (resolution files on main, and ``outside``
    fallbacks for pull requests closed unmerged) are applied first.
    """
    base, decided = resolve.apply(base, list(outside))
    cfg = base.config
    tick = base.tick + 1
    window = cfg.limits.window
    quarantined: list[Quarantined] = []
    duplicates: list[Arrival] = []

    # A file quarantined by an earlier merge (one that raced this one, or
    # whose sources were not deleted yet) is a duplicate, not a second verdict.
    refused_before = _LazyRefused(base)
    parsed: list[tuple[Delta, Arrival]] = []
    keys = secrets.named()
    for a in sorted(arrivals, key=lambda a: (a.path, a.source, a.data)):
        try:
            leaked = secrets.found_in(a.data, keys) if keys else None
            if leaked is not None:
                # Quarantined whole, its content masked: a key never reaches main.
                raise Rejected(f"holds the value of the secret {leaked}; a delta never carries a key")
            parsed.append((parse(a, cfg.limits), a))
        except Rejected as e:
            q = Quarantined(a, str(e))
            if _raw_key(q.record(tick, cfg.limits.max_delta_bytes)) in refused_before.keys:
                duplicates.append(a)
            else:
                quarantined.append(q)

    # One id, one content: the first copy (in delta order) stands; identical
    # copies are duplicates, different content under a used id is refused.
    # What an earlier merge decided (the ledger, the quarantine) comes first:
    # a re-sent delta is a duplicate whatever else arrives with it.
    parsed.sort(key=lambda da: (da[0].key, da[1].source, da[1].path))
    seen: dict[str, Delta] = {}
    ledger_cache: dict[tuple[int, str], dict[str, str]] = {}

    def ledger(d: Delta) -> dict[str, str]:
        if not tick - window <= d.tick < tick:
            return {}
        return ledger_cache.setdefault((d.tick, d.worker), base.ledger_ids(d.tick, d.worker))

    candidates: list[Delta] = []
    arrival_of: dict[str, Arrival] = {}
    reused: set[tuple[str, str]] = set()
    for d, a in parsed:
        if ledger(d).get(d.id) == d.digest or (d.id, d.digest) in refused_before.keys:
            duplicates.append(a)
            continue
        if d.id in seen:
            if seen[d.id].digest == d.digest or (d.id, d.digest) in reused:
                duplicates.append(a)  # a copy of the delta that stands, or of one refused here
            else:
                reused.add((d.id, d.digest))
                quarantined.append(Quarantined(a, f"delta id {d.id} is reused with different content", d))
            continue
        seen[d.id] = d
        if d.tick > tick:
            quarantined.append(Quarantined(a, f"tick {d.tick} is ahead of the next tick ({tick}); main is at {tick - 1}", d))
        elif d.tick < tick - window:
            quarantined.append(Quarantined(a, f"tick {d.tick} was merged long ago: late deltas are accepted for {window} ticks (limits.window), main is at {tick - 1}", d))
        elif d.agent not in cfg.agents:
            quarantined.append(Quarantined(a, f"agent {d.agent!r} is not in state/config.json agents", d))
        elif d.id in ledger(d):
            quarantined.append(Quarantined(a, f"delta id {d.id} was applied in tick {d.tick} with different content", d))
        else:
            candidates.append(d)
            arrival_of[d.id] = a  # the copy that stands, not a later duplicate
    def split_off(refused: dict[str, str]) -> list[Delta]:
        """Quarantine the refused deltas; the rest go on."""
        for d in candidates:
            if d.id in refused:
                quarantined.append(Quarantined(arrival_of[d.id], refused[d.id], d))
        return [d for d in candidates if d.id not in refused]

    # The fast path applies everything at once. If anything is refused, the
    # tick is decided delta by delta in delta order; the loop after that is a
    # safety net whose set only shrinks, so it ends.
    apply = _Applier(base, cfg, tick)
    outcome = apply.run(candidates)
    if outcome.culprits:
        candidates = split_off(apply.sequential(candidates))
        outcome = apply.run(candidates)
        while outcome.culprits:
            candidates = split_off(_refuse_now(candidates, outcome))
            outcome = apply.run(candidates)

    records = [q.record(tick, cfg.limits.max_delta_bytes) for q in quarantined]
    result = _finish(base, tick, candidates, records, outcome, decided)
    result.duplicates = duplicates
    return result


class _LazyRefused:
    """Keys of the quarantine records still in the tree, read when first needed."""

    def __init__(self, base: Snapshot) -> None:
        self.base = base

    @cached_property
    def keys(self) -> set[Any]:
        out: set[Any] = set()
        paths = self.base.under(QUARANTINE_DIR)
        for path, data in self.base.read_many(paths).items():
            for line in (data or b"").splitlines():
                rec = canonical.load(line, path)
                if isinstance(rec.get("delta"), dict):
                    out.add((rec["delta"].get("id"), canonical.digest(rec["delta"])))
                else:
                    out.add(_raw_key(rec))
        return out


def _raw_key(rec: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies an unparseable file across merges: where it was and what it held."""
    return ("raw", rec.get("path"), rec.get("size"), rec.get("raw"))


def _refuse_now(candidates: list[Delta], outcome: _Outcome) -> dict[str, str]:
    """The culprits to quarantine this round, with their reasons.

    A document's verdicts were reached with every delta that touched it. If
    one of those is itself refused (for another document), the verdicts there
    may be its doing: they wait for a round without it. The earliest culprit
    never waits, so every round removes at least one delta.
    """
    culprits = outcome.culprits
    touching: dict[tuple[str, str], set[str]] = {}
    for d in candidates:
        for op in d.ops:
            touching.setdefault((op.collection, op.id), set()).add(d.id)
    firm: dict[str, str] = {}
    waiting: set[str] = set()
    for key in sorted(outcome.docs):
        errors = outcome.docs[key].errors
        if (touching.get(key, set()) & culprits.keys()) - errors.keys():
            waiting.update(errors)
        else:
            for delta_id, reason in errors.items():
                firm.setdefault(delta_id, reason)
    for delta_id, reason in culprits.items():
        if delta_id not in waiting:
            firm.setdefault(delta_id, reason)  # e.g. an unknown collection
    if not firm:
        first = next(d.id for d in candidates if d.id in culprits)
        firm[first] = culprits[first]
    return firm


def replay_tick(base: Snapshot, applied: list[Delta], quarantined: list[dict[str, Any]],
                outside: list[dict[str, Any]] = ()) -> TickResult:
    """Recompute a tick from the deltas its commit applied, the records it
    quarantined, and the fallback decisions it was handed."""
    base, decided = resolve.apply(base, list(outside))
    tick = base.tick + 1
    applied = sorted(applied, key=lambda d: d.key)
    outcome = _Applier(base, base.config, tick).run(applied)
    if outcome.culprits:
        delta_id, reason = sorted(outcome.culprits.items())[0]
        raise FleetError(f"replay of tick {tick}: ledger delta {delta_id} does not apply: {reason}")
    return _finish(base, tick, applied, quarantined, outcome, decided)


# -- applying ----------------------------------------------------------------


@dataclass
class _Outcome:
    docs: dict[tuple[str, str], _DocOutcome]
    culprits: dict[str, str]
    base_bytes: dict[str, bytes | None]
    open_conflicts: dict[str, dict[str, Any]]


class _Applier:
    def __init__(self, base: Snapshot, cfg: Config, tick: int) -> None:
        self.base = base
        self.cfg = cfg
        self.tick = tick
        self._conflicts: dict[str, dict[str, Any]] | None = None
        _RULE_CACHE.clear()

    def open_conflicts(self) -> dict[str, dict[str, Any]]:
        if self._conflicts is None:
            paths = self.base.under(CONFLICT_DIR)
            blobs = self.base.read_many(paths)
            self._conflicts = {p: _conflict_file(blobs[p] or b"", p) for p in paths}
        return self._conflicts

    def run(self, deltas: list[Delta]) -> _Outcome:
        cfg = self.cfg
        culprits: dict[str, str] = {}
        by_doc: dict[tuple[str, str], list[tuple[Delta, Any]]] = {}
        for d in deltas:
            for op in d.ops:
                if op.collection not in cfg.collections:
                    culprits.setdefault(d.id, f"unknown collection {op.collection!r} (state/config.json collections)")
                    continue
                by_doc.setdefault((op.collection, op.id), []).append((d, op))
        paths = {key: cfg.collections[key[0]].doc_path(key[1]) for key in by_doc}
        base_bytes = self.base.read_many(paths.values())
        conflicts_by_doc: dict[tuple[str, str], dict[tuple[str, ...], dict[str, Any]]] = {}
        if self.base.under(CONFLICT_DIR):
            for c in self.open_conflicts().values():
                conflicts_by_doc.setdefault((c["collection"], c["doc"]), {})[tuple(c["path"])] = c

        docs: dict[tuple[str, str], _DocOutcome] = {}
        for key in sorted(by_doc):
            entries = [(d, op) for d, op in by_doc[key] if d.id not in culprits]
            coll = cfg.collections[key[0]]
            path = paths[key]
            raw = base_bytes[path]
            base_doc = None
            if raw is not None:
                base_doc = canonical.load(raw, path)
                problem = _doc_problem(self.base, coll, key[1], base_doc)
                if problem:
                    raise FleetError(
                        f"{path}: the state on main is invalid: {problem}; fix the file or revert the commit that broke it"
                    )
            open_here = conflicts_by_doc.get(key, {})
            out = _combine(coll, key[1], raw, entries, open_here, cfg, self.tick)
            # Refused ops or an invalid result: settle the document in delta
            # order, so that a delta that is refused (an intruder's create, say)
            # takes no later delta down with it.
            if out.errors or (out.doc is not None and _doc_problem(self.base, coll, key[1], out.doc)):
                out = self._blame(coll, key[1], path, raw, entries, open_here)
            for delta_id, reason in out.errors.items():
                culprits.setdefault(delta_id, reason)
            docs[key] = out
        return _Outcome(docs, culprits, base_bytes, self.open_conflicts() if conflicts_by_doc else {})

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
        open_by_doc: dict[tuple[str, str], dict[tuple[str, ...], dict[str, Any]]] = {}
        for c in self.open_conflicts().values():
            open_by_doc.setdefault((c["collection"], c["doc"]), {})[tuple(c["path"])] = c
        accepted: dict[tuple[str, str], list[tuple[Delta, Any]]] = {}
        # A document that so far only took commutative ops (counters
        # incremented, members added: a hot counter, a channel everyone joins)
        # is carried as its current bytes and the field each op family
        # touched: adding a delta then costs its own ops, not all the earlier
        # ones again. Sums and unions come out the same either way, so the
        # decisions do too; anything else (a set, a remove, a create, two
        # families on overlapping fields) recombines from the base.
        carried: dict[tuple[str, str], tuple[bytes, dict[tuple[str, ...], str]]] = {}
        refused: dict[str, str] = {}
        for d in deltas:
            unknown = next((op.collection for op in d.ops if op.collection not in cfg.collections), None)
            if unknown is not None:
                refused[d.id] = f"unknown collection {unknown!r} (state/config.json collections)"
                continue
            mine: dict[tuple[str, str], list[tuple[Delta, Any]]] = {}
            for op in d.ops:
                mine.setdefault((op.collection, op.id), []).append((d, op))
            reason = None
            results: dict[tuple[str, str], _DocOutcome] = {}
            for key, ops in mine.items():
                coll = cfg.collections[key[0]]
                if key in carried and _carries(carried[key][1], ops):
                    start, entries = carried[key][0], ops
                elif key not in accepted:
                    start, entries = base_bytes[paths[key]], ops
                else:
                    start, entries = base_bytes[paths[key]], accepted[key] + ops
                out = _combine(coll, key[1], start, entries, open_by_doc.get(key, {}), cfg, self.tick)
                results[key] = out
                if out.errors:  # its own op, or one it broke for an earlier delta: its doing either way
                    reason = out.errors.get(d.id) or next(iter(out.errors.values()))
                elif out.doc is not None:
                    problem = _doc_problem(self.base, coll, key[1], out.doc)
                    if problem:
                        reason = f"would make {paths[key]} invalid: {problem}"
                if reason:
                    break
            if reason:
                refused[d.id] = reason
            else:
                for key, ops in mine.items():
                    first = key not in accepted
                    accepted.setdefault(key, []).extend(ops)
                    out = results[key]
                    fields = {} if first else carried[key][1] if key in carried else None
                    if fields is not None and _carries(fields, ops) and out.doc is not None and not out.conflicts:
                        carried[key] = (canonical.dumps(out.doc), {**fields, **{op.path: op.op for _, op in ops}})
                    else:
                        carried.pop(key, None)
        return refused

    def _blame(self, coll, doc_id, path, raw, entries, open_here) -> _DocOutcome:
        """Add deltas one by one, in delta order, and blame each one whose
        ops are refused or make the document invalid on top of the earlier
        ones that stand."""
        order: list[Delta] = []
        for d, _ in entries:
            if not order or order[-1] is not d:
                order.append(d)
        accepted: set[str] = set()
        errors: dict[str, str] = {}
        for d in order:
            trial = [(x, op) for x, op in entries if x.id in accepted or x is d]
            out = _combine(coll, doc_id, raw, trial, open_here, self.cfg, self.tick)
            if d.id in out.errors:
                errors[d.id] = out.errors[d.id]
                continue
            problem = out.doc is not None and _doc_problem(self.base, coll, doc_id, out.doc)
            if problem:
                errors[d.id] = f"would make {path} invalid: {problem}"
            else:
                accepted.add(d.id)
        out = _combine(coll, doc_id, raw, [(x, op) for x, op in entries if x.id in accepted], open_here, self.cfg, self.tick)
        out.errors = errors
        return out


def _carries(fields: dict[tuple[str, ...], str], ops: list[tuple[Delta, Any]]) -> bool:
    """Whether ``ops`` can be applied on top of a carried document whose
    earlier ops were ``fields`` (path -> op) with the same result as
    recombining them all: only increments and adds, each on a field that no
    other kind of op touches and that does not overlap another field."""
    mine: dict[tuple[str, ...], str] = {}
    for _, op in ops:
        if op.op not in ("incr", "add") or mine.setdefault(op.path, op.op) != op.op:
            return False
    for path, kind in mine.items():
        for other, other_kind in fields.items():
            if other == path:
                if other_kind != kind:
                    return False
            elif other[: len(path)] == path or path[: len(other)] == other:
                return False
    for path in mine:
        if any(p != path and (p[: len(path)] == path or path[: len(p)] == p) for p in mine):
            return False
    return True


def _conflict_file(data: bytes, path: str) -> dict[str, Any]:
    """A held conflict on main, checked: a hand edit must not crash a merge."""
    c = canonical.load(data, path)
    problem = schemas.first_error(schemas.protocol("conflict"), c)
    if problem:
        raise FleetError(f"{path}: {problem} (schemas/conflict.schema.json); fix the file or revert the commit that broke it")
    return c


def _doc_problem(base: Snapshot, coll: Collection, doc_id: str, doc: Any) -> str | None:
    if not isinstance(doc, dict) or doc.get("id") != doc_id:
        return f"its 'id' must be {doc_id!r}"
    problem = schemas.first_error(base.validator(coll.name), doc)
    if problem:
        return f"{problem} (schemas/{coll.schema})"
    try:
        canonical.dumps_line(doc)
    except TypeError as e:  # orjson: an integer beyond 64 bits
        return f"it cannot be written as JSON: {e}"
    return None


def _allowed(cfg: Config, coll: Collection, owner: str | None, d: Delta, op: Any) -> bool:
    if op.op != "create" and op.path and op.path[0] in coll.fixed:
        return False
    is_self = op.op in ("set", "add", "remove") and op.arg == d.agent
    key = (id(cfg), coll.name, d.agent, owner is not None and owner == d.agent, op.op, op.path, is_self)
    found = _RULE_CACHE.get(key)
    if found is None:
        found = _RULE_CACHE[key] = _rules_allow(cfg, coll, *key[2:])
    return found


# Whether the rules allow (agent, owns, op, path, value is the agent): a tick
# asks the same question for thousands of ops. Cleared for every merge.
_RULE_CACHE: dict[tuple[Any, ...], bool] = {}


def _rules_allow(cfg: Config, coll: Collection, agent: str, owns: bool, op: str, path: tuple[str, ...],
                 is_self: bool) -> bool:
    rules: tuple[Rule, ...] = cfg.agents[agent].grants.get(coll.name, ())
    if owns:
        rules = rules + coll.own
    rules = rules + coll.others
    value = agent if is_self else None
    return any(r.allows(op, path, value, agent) for r in rules)


def _refusal(d: Delta, op: Any, coll: Collection, owner: str | None) -> str:
    if op.op != "create" and op.path and op.path[0] in coll.fixed:
        return (f"agent {d.agent} may not {_describe(op)}: field {op.path[0]!r} is fixed once the document "
                f"exists (collections.{coll.name}.fixed and its owner field, in state/config.json)")
    return (f"agent {d.agent} may not {_describe(op)} (owner: {owner or 'nobody'}; "
            f"see collections.{coll.name} in state/config.json)")


def _describe(op: Any) -> str:
    where = f"{op.collection}/{op.id}"
    return f"{op.op} {where}" + (f" {'.'.join(op.path)}" if op.path else "")


def _combine(
    coll: Collection,
    doc_id: str,
    raw: bytes | None,
    entries: list[tuple[Delta, Any]],
    open_here: dict[tuple[str, ...], dict[str, Any]],
    cfg: Config,
    tick: int,
) -> _DocOutcome:
    """Apply every op on one document from the deltas of one tick, in any order."""
    errors: dict[str, str] = {}
    # raw is main's document, checked where the tick read it (_Applier.run), or bytes the engine wrote
    doc: dict[str, Any] | None = canonical.parse_trusted(raw) if raw is not None else None
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
            if not _allowed(cfg, coll, coll.owner_of(doc_id, op.arg), d, op):
                errors[d.id] = _refusal(d, op, coll, coll.owner_of(doc_id, op.arg))
            continue
        if doc is None:
            errors[d.id] = f"{_describe(op)}: no such document"
        elif not _allowed(cfg, coll, owner, d, op):
            errors[d.id] = _refusal(d, op, coll, owner)
    if errors:
        entries = [(d, op) for d, op in entries if d.id not in errors]
        if winner is not None and winner.id in errors:
            doc, winner = (None, None)

    if doc is None:
        return _DocOutcome(None, errors, [], exists)
    if any(op.op == "delete" for _, op in entries):
        return _DocOutcome(None, errors, [], exists)  # a delete wins

    # Ops on overlapping fields cannot commute: they are grouped at the
    # outermost field and held there together, as one conflict.
    held_paths = _overlapping({op.path for _, op in entries if op.op != "create"})
    groups: dict[tuple[str, ...], list[tuple[Delta, Any]]] = {}
    for d, op in entries:
        if op.op != "create":
            groups.setdefault(held_paths.get(op.path, op.path), []).append((d, op))

    conflicts: list[dict[str, Any]] = []
    for path in sorted(groups):
        ops = groups[path]
        kinds = {_family(op.op) for _, op in ops}
        if path in held_paths or len(kinds) > 1:
            conflicts.append(_conflict(coll, doc_id, path, doc, ops, "mixed", "different kinds of change to overlapping fields", tick, open_here, as_ops=True))
            continue
        family = kinds.pop()
        try:
            if family == "set":
                _apply_sets(coll, doc_id, doc, path, ops, cfg, owner, tick, open_here, conflicts)
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
                # (an integer beyond 64 bits is refused where the document is written: _doc_problem)
                _put(doc, path, total)
            elif family == "set-member":
                _apply_members(doc, path, ops)
            else:
                appended = _apply_append(coll, doc_id, doc, path, ops, tick, open_here, conflicts)
                for delta_id, reason in appended.items():
                    errors.setdefault(delta_id, reason)
        except _OpError as e:
            for d, op in ops:
                errors.setdefault(d.id, f"{_describe(op)}: {e}")
    # A conflict is between deltas: one delta whose own ops compete for a
    # field leaves nobody to choose between, so it is refused instead.
    for c in conflicts:
        if len(c["candidates"]) < 2:
            errors.setdefault(c["candidates"][0]["delta"], f"{coll.name}/{doc_id} {'.'.join(c['path'])}: the delta's own ops compete for this field ({c['reason']})")
    return _DocOutcome(doc, errors, conflicts, exists)


def _family(op: str) -> str:
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


_get = docpath.get
_put = docpath.put


def _candidate(d: Delta, **extra: Any) -> dict[str, Any]:
    return {"delta": d.id, "agent": d.agent, "worker": d.worker, "tick": d.tick, "utc": d.utc, **extra}


def conflict_id(collection: str, doc_id: str, path: tuple[str, ...]) -> str:
    key = "\0".join((collection, doc_id, *path)).encode()
    return "c-" + hashlib.sha256(key).hexdigest()[:16]


def _conflict(coll, doc_id, path, doc, ops, policy, reason, tick, open_here, as_ops=False) -> dict[str, Any]:
    """A held conflict on one field: the field keeps its value, every candidate is kept."""
    existing = open_here.get(path)
    if as_ops:
        per: dict[str, dict[str, Any]] = {}
        for d, op in ops:
            per.setdefault(d.id, _candidate(d, ops=[]))["ops"].append(op.to_json())
        new = list(per.values())
    else:
        new = [_candidate(d, value=v) for d, v in ops]
    cands = {c["delta"]: c for c in (existing["candidates"] if existing else [])}
    for c in new:
        cands.setdefault(c["delta"], c)
    c: dict[str, Any] = {
        "id": conflict_id(coll.name, doc_id, path),
        "collection": coll.name,
        "doc": doc_id,
        "path": list(path),
        "policy": existing["policy"] if existing else policy,
        "reason": existing["reason"] if existing else reason,
        "opened_tick": existing["opened_tick"] if existing else tick,
        "candidates": sorted(cands.values(), key=lambda c: (c["tick"], c["utc"], c["worker"], c["delta"])),
    }
    if existing:
        if "base" in existing:
            c["base"] = existing["base"]
    else:
        try:
            base = _get(doc, path)
        except _OpError:
            base = _MISSING
        if base is not _MISSING:
            c["base"] = canonical.clone(base)
    return c


def _apply_sets(coll, doc_id, doc, path, ops, cfg: Config, owner, tick, open_here, conflicts) -> None:
    last: dict[str, tuple[Delta, Any]] = {}
    for d, op in ops:  # within one delta, ops run in order: its last set counts
        last[d.id] = (d, op.arg)
    writers = list(last.values())
    if path in open_here:
        conflicts.append(_conflict(coll, doc_id, path, doc, writers, "", "", tick, open_here))
        return
    values = {canonical.dumps_line(v): v for _, v in writers}
    if len(values) == 1:
        _put(doc, path, writers[0][1])
        return
    policy = cfg.policy(coll.name, path)
    chosen: Any = _MISSING
    reason = "policy 'hold': a person decides"
    if policy == "lww":
        chosen = max(writers, key=lambda w: w[0].key)[1]
    elif policy == "priority":
        top = max(cfg.agents[d.agent].priority for d, _ in writers)
        best = {canonical.dumps_line(v): v for d, v in writers if cfg.agents[d.agent].priority == top}
        if len(best) == 1:
            chosen = next(iter(best.values()))
        else:
            reason = f"policy 'priority': a tie at priority {top}"
    elif policy == "authority":
        mine = {canonical.dumps_line(v): v for d, v in writers if d.agent == owner}
        if len(mine) == 1:
            chosen = next(iter(mine.values()))
        else:
            reason = f"policy 'authority': the owner ({owner}) " + ("set several values" if mine else "did not write")
    if chosen is _MISSING:
        conflicts.append(_conflict(coll, doc_id, path, doc, writers, policy, reason, tick, open_here))
    else:
        _put(doc, path, canonical.clone(chosen))


def _member_key(v: Any) -> tuple:
    if v is None:
        return (0, 0, "")
    if isinstance(v, bool):
        return (1, int(v), "")
    if isinstance(v, (int, float)):
        return (2, v, "")
    return (3, 0, v)


def _apply_members(doc, path, ops) -> None:
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
    _put(doc, path, sorted(members.values(), key=_member_key))


def _apply_append(coll, doc_id, doc, path, ops, tick, open_here, conflicts) -> dict[str, str]:
    errors: dict[str, str] = {}
    cur = _get(doc, path)
    cur = [] if cur is _MISSING else cur
    if not isinstance(cur, list) or not all(isinstance(i, dict) and "id" in i for i in cur):
        raise _OpError(f"{'.'.join(path)} is not a list of objects with an 'id'")
    existing = {i["id"]: canonical.digest(i) for i in cur}
    new: dict[str, list[tuple[Delta, Any]]] = {}
    for d, op in ops:
        item_id = op.arg["id"]
        if item_id in existing:
            if existing[item_id] != canonical.digest(op.arg):
                errors.setdefault(d.id, f"append {coll.name}/{doc_id} {'.'.join(path)}: item {item_id!r} already exists with other content")
            continue
        new.setdefault(item_id, []).append((d, op.arg))
    for item_id, items in new.items():
        mine: dict[str, str] = {}
        for d, item in items:
            if mine.setdefault(d.id, canonical.digest(item)) != canonical.digest(item):
                errors.setdefault(d.id, f"append {coll.name}/{doc_id} {'.'.join(path)}: the delta appends two different items with id {item_id!r}")
    out = list(cur)
    for item_id, items in new.items():
        if len({canonical.digest(i) for _, i in items}) > 1 or (*path, item_id) in open_here:
            conflicts.append(_conflict(coll, doc_id, (*path, item_id), doc, items, "append", f"different items with id {item_id!r}", tick, open_here))
        else:
            out.append(canonical.clone(items[0][1]))
    _put(doc, path, out)
    return errors


# -- writing -------------------------------------------------------------------


def _finish(base: Snapshot, tick: int, applied: list[Delta], quarantined: list[dict[str, Any]], outcome: _Outcome,
            decided: resolve.Resolved) -> TickResult:
    cfg = base.config
    writes: dict[str, bytes] = {}
    deletes: list[str] = []
    held: list[str] = []
    changed = 0
    for key, out in sorted(outcome.docs.items()):
        path = cfg.collections[key[0]].doc_path(key[1])
        before = outcome.base_bytes.get(path)
        if out.doc is None:
            if before is not None:
                deletes.append(path)
                changed += 1
        else:
            data = canonical.dumps(out.doc)
            if data != before:
                writes[path] = data
                changed += 1
        for c in out.conflicts:
            writes[f"{CONFLICT_DIR}/{c['id']}.json"] = canonical.dumps(c)
            held.append(c["id"])
    # Conflicts on deleted documents are moot: the delete won.
    for path, c in outcome.open_conflicts.items():
        out = outcome.docs.get((c["collection"], c["doc"]))
        if out is not None and out.doc is None and out.exists:
            deletes.append(path)

    ledger: dict[tuple[int, str], dict[str, bytes]] = {}
    late = 0
    for d in applied:
        ledger.setdefault((d.tick, d.worker), {})[d.id] = d.line
        late += d.tick < tick
    for (t, w), lines in ledger.items():
        path = f"{LEDGER_DIR}/{t}/{w}.jsonl"
        old = base.read(path)
        if old:
            for line in old.splitlines():
                lines.setdefault(canonical.parse_trusted(line)["id"], line)
        writes[path] = b"\n".join(lines[i] for i in sorted(lines)) + b"\n"
    by_worker: dict[str, list[bytes]] = {}
    for rec in quarantined:
        by_worker.setdefault(rec["worker"], []).append(canonical.dumps_line(rec))
    for w, lines in by_worker.items():
        path = f"{QUARANTINE_DIR}/{tick}/{w}.jsonl"
        old = base.read(path)
        merged = sorted(set(lines) | set(old.splitlines() if old else []))
        writes[path] = b"\n".join(merged) + b"\n"
    oldest = tick - cfg.limits.window
    for folder in (LEDGER_DIR, QUARANTINE_DIR):
        for t in sorted({int(p.split("/")[2]) for p in base.under(folder)}):
            if t < oldest:
                deletes.append(f"{folder}/{t}")

    if decided.records:
        lines = sorted(canonical.dumps_line(r) for r in decided.records)
        writes[resolve.records_path(tick)] = b"\n".join(lines) + b"\n"
    fleet = base.fleet
    last = {"applied": len(applied), "quarantined": len(quarantined), "held": len(held), "late": late,
            "resolved": len(decided.records),
            # tokens are spent whether or not the delta applied: count the quarantined too
            "usage": _usage([d.meta for d in applied] + [q["delta"].get("meta") or {} for q in quarantined
                                                         if isinstance(q.get("delta"), dict)])}
    totals = {k: fleet["totals"].get(k, 0) + last[k] for k in ("applied", "quarantined", "held", "late", "resolved")}
    totals["usage"] = _add_usage(fleet["totals"].get("usage", {}), last["usage"])
    conflict_files = set(base.under(CONFLICT_DIR)) | {p for p in writes if p.startswith(CONFLICT_DIR + "/")}
    conflict_files -= set(deletes)
    writes[FLEET_PATH] = canonical.dumps(
        {
            "tick": tick,
            "totals": totals,
            "last": last,
            "last_utc": max((d.utc for d in applied), default=fleet.get("last_utc")),
            "open_conflicts": len(conflict_files),
        }
    )
    # the decisions applied before the deltas: their documents, unless the tick wrote them again
    changed += sum(1 for p in decided.writes if p not in writes)
    writes = {**decided.writes, **writes}
    deletes = sorted((set(deletes) | set(decided.deletes)) - set(writes))
    return TickResult(tick, writes, deletes, applied, quarantined, held, late=late, docs_changed=changed,
                      resolved=[r["conflict"] for r in decided.records])


_USAGE_INTS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def _usage(metas: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {k: 0 for k in _USAGE_INTS}
    micro = 0  # dollars summed as integer micro-dollars: exact in any order
    for meta in metas:
        u = meta.get("usage") or {} if isinstance(meta, dict) else {}
        for k in _USAGE_INTS:
            total[k] += u.get(k, 0)
        micro += round(u.get("cost_usd", 0) * 1_000_000)
    total["cost_usd"] = micro / 1_000_000
    return total


def _add_usage(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {k: a.get(k, 0) + b.get(k, 0) for k in _USAGE_INTS}
    out["cost_usd"] = (round(a.get("cost_usd", 0) * 1_000_000) + round(b.get("cost_usd", 0) * 1_000_000)) / 1_000_000
    return out
