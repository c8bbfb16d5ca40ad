"""Conflicts and the policies that may decide them.

Sets of one field by several deltas with different values go to the path's
policy (``policies`` in config): ``lww``, ``priority`` or ``authority`` pick a
value; ``hold`` (the default), a tie, or an owner who did not write leaves
the field as it is and holds every competing value in
``state/conflicts/<id>.json`` for a person. Later sets of a held field join
its conflict. ``meaning`` takes the model's merge of the competing texts from
a record the merge job made (fleet.profile_merge), only for exactly these
versions; without one, the field is held.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fleet import canonical, docpath, profile_merge
from fleet.config import Collection, Config
from fleet.delta import Delta, Op
from fleet.records import Candidate, Conflict

_MISSING = docpath.MISSING

# The open conflicts on one document, by the path they hold.
OpenHere = dict[tuple[str, ...], Conflict]
# The model's recorded merges of fields under the 'meaning' policy, by conflict id (fleet.profile_merge).
Meanings = dict[str, dict[str, Any]]


def conflict_id(collection: str, doc_id: str, path: tuple[str, ...]) -> str:
    """The id of a conflict on one field: the same field always gets the same id."""
    key = "\0".join((collection, doc_id, *path)).encode()
    return "c-" + hashlib.sha256(key).hexdigest()[:16]


def _candidate(d: Delta) -> Candidate:
    return {"delta": d.id, "agent": d.agent, "worker": d.worker, "tick": d.tick, "utc": d.utc}


def hold(coll: Collection, doc_id: str, path: tuple[str, ...], doc: dict[str, Any],
         writers: list[tuple[Delta, Any]], policy: str, reason: str, tick: int, open_here: OpenHere,
         as_ops: bool = False) -> Conflict:
    """A held conflict on one field: the field keeps its value, every candidate is kept.

    ``writers`` pairs each delta with its value, or with its op if ``as_ops``
    (different kinds of change, which have no one value to choose).
    """
    existing = open_here.get(path)
    if as_ops:
        per: dict[str, Candidate] = {}
        for d, op in writers:
            per.setdefault(d.id, {**_candidate(d), "ops": []})["ops"].append(op.to_json())
        new = list(per.values())
    else:
        new = [{**_candidate(d), "value": v} for d, v in writers]
    cands = {c["delta"]: c for c in (existing.candidates if existing else [])}
    for x in new:
        cands.setdefault(x["delta"], x)
    candidates = sorted(cands.values(), key=lambda c: (c["tick"], c["utc"], c["worker"], c["delta"]))
    cid = conflict_id(coll.name, doc_id, path)
    if existing:
        return Conflict(cid, coll.name, doc_id, path, existing.policy, existing.reason, existing.opened_tick,
                        candidates, existing.base)
    try:
        base = docpath.get(doc, path)
    except docpath.PathError:
        base = _MISSING
    return Conflict(cid, coll.name, doc_id, path, policy, reason, tick, candidates,
                    _MISSING if base is _MISSING else canonical.clone(base))


def apply_sets(coll: Collection, doc_id: str, doc: dict[str, Any], path: tuple[str, ...],
               ops: list[tuple[Delta, Op]], cfg: Config, owner: str | None, tick: int, open_here: OpenHere,
               conflicts: list[Conflict], meanings: Meanings | None = None) -> None:
    """Apply the sets of one field: one value stands, a policy picks one, or
    the field is held (appended to ``conflicts``). ``meanings``: the model's
    recorded merges for fields under the ``meaning`` policy, by conflict id."""
    last: dict[str, tuple[Delta, Any]] = {}
    for d, op in ops:  # within one delta, ops run in order: its last set counts
        last[d.id] = (d, op.arg)
    writers = list(last.values())
    if path in open_here:
        conflicts.append(hold(coll, doc_id, path, doc, writers, "", "", tick, open_here))
        return
    values = {canonical.dumps_line(v): v for _, v in writers}
    if len(values) == 1:
        docpath.put(doc, path, writers[0][1])
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
    elif policy == "meaning":
        try:
            current = docpath.get(doc, path)
        except docpath.PathError:
            current = _MISSING
        chosen, reason = profile_merge.decided((meanings or {}).get(conflict_id(coll.name, doc_id, path)),
                                               current, [(d.id, v) for d, v in writers])
    if chosen is _MISSING:
        conflicts.append(hold(coll, doc_id, path, doc, writers, policy, reason, tick, open_here))
    else:
        docpath.put(doc, path, canonical.clone(chosen))

