"""Writing a tick: documents, conflicts, ledger, quarantine and ``state/fleet.json``.

What the appliers decided becomes files: every changed document in canonical
form, each held conflict, the applied deltas' lines in the ledger, the
quarantine records, and the totals. Ledger and quarantine keep the tick
merged and the ``limits.window`` ticks before it (window + 1 folders); older
ones are deleted from the tree (history keeps them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from fleet import canonical, profile_merge, resolve, schemas
from fleet.config import FLEET_PATH
from fleet.delta import Arrival, Delta
from fleet.engine.apply import Outcome
from fleet.records import Usage
from fleet.state import CONFLICT_DIR, LEDGER_DIR, QUARANTINE_DIR, Snapshot


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
    held_deltas: list[str] = field(default_factory=list)  # applied deltas with a change held in a conflict
    reverts: list[dict[str, Any]] = field(default_factory=list)  # reverts a person asked for: applied or refused

    @property
    def noop(self) -> list[str]:
        """The explicit empty deltas: in the ledger, but they changed nothing (``meta.noop`` or ``meta.error``)."""
        return [d.id for d in self.applied if not d.ops]

    @property
    def changed(self) -> int:
        """Deltas whose every change took effect: applied, not no-op, nothing held.
        Each delta of a tick counts in exactly one of changed, noop, held_deltas, quarantined."""
        return len(self.applied) - len(self.noop) - len(self.held_deltas)


def finish(base: Snapshot, tick: int, applied: list[Delta], quarantined: list[dict[str, Any]], outcome: Outcome,
           decided: resolve.Resolved, meanings: Sequence[dict[str, Any]] = ()) -> TickResult:
    """The files of tick ``tick``: what ``outcome`` decided, written on ``base``."""
    cfg = base.config
    writes: dict[str, bytes] = {}
    deletes: list[str] = []
    held: list[str] = []
    held_deltas: set[str] = set()
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
            writes[f"{CONFLICT_DIR}/{c.id}.json"] = canonical.dumps(c.to_json())
            held.append(c.id)
            held_deltas.update(x["delta"] for x in c.candidates)
    # Conflicts on deleted documents are moot: the delete won.
    for path, c in outcome.open_conflicts.items():
        doc_out = outcome.docs.get((c.collection, c.doc))
        if doc_out is not None and doc_out.doc is None and doc_out.exists:
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
    for w, records in by_worker.items():
        path = f"{QUARANTINE_DIR}/{tick}/{w}.jsonl"
        old = base.read(path)
        merged = sorted(set(records) | set(old.splitlines() if old else []))
        writes[path] = b"\n".join(merged) + b"\n"
    oldest = tick - cfg.limits.window
    for folder in (LEDGER_DIR, QUARANTINE_DIR):
        for t in sorted({int(p.split("/")[2]) for p in base.under(folder)}):
            if t < oldest:
                deletes.append(f"{folder}/{t}")

    if meanings:  # the model's answers ('meaning' policy): inputs of this tick, for replay
        writes[profile_merge.records_path(tick)] = b"".join(sorted(canonical.dumps_line(m) + b"\n" for m in meanings))
    if decided.records:
        decisions = sorted(canonical.dumps_line(r) for r in decided.records)
        writes[resolve.records_path(tick)] = b"\n".join(decisions) + b"\n"
    if decided.reverts:
        reverts = sorted(canonical.dumps_line(r) for r in decided.reverts)
        writes[resolve.reverts_path(tick)] = b"\n".join(reverts) + b"\n"
    fleet = base.fleet
    last: dict[str, Any] = {"applied": len(applied), "quarantined": len(quarantined), "held": len(held), "late": late,
            "resolved": len(decided.records),
            # tokens are spent whether or not the delta applied: count the quarantined too, each as far
            # as it can be read (spent_by); a merge by meaning spends too
            "usage": Usage.total([d.meta.get("usage") for d in applied] + [spent_by(q) for q in quarantined]
                                 + [m.get("usage") for m in meanings])}
    totals = {k: fleet["totals"].get(k, 0) + last[k] for k in ("applied", "quarantined", "held", "late", "resolved")}
    totals["usage"] = (Usage.parse(fleet["totals"].get("usage")) + last["usage"]).to_json()
    last["usage"] = last["usage"].to_json()
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
    changed += sum(1 for r in decided.reverts if r["status"] == "applied" for p in r["docs"]
                   if p not in decided.writes and p not in writes)  # documents a revert removed
    writes = {**decided.writes, **writes}
    deletes = sorted((set(deletes) | set(decided.deletes)) - set(writes))
    mine = {d.id for d in applied if d.ops}  # candidates from earlier ticks were counted then
    return TickResult(tick, writes, deletes, applied, quarantined, held, late=late, docs_changed=changed,
                      resolved=[r["conflict"] for r in decided.records], held_deltas=sorted(held_deltas & mine),
                      reverts=decided.reverts)


# -- what a quarantined delta spent ---------------------------------------------


@cache
def _usage_maxima() -> dict[str, float]:
    """The delta schema's bound of each figure of ``meta.usage``."""
    usage = schemas.protocol("delta").schema["properties"]["meta"]["properties"]["usage"]["properties"]
    return {name: float(prop["maximum"]) for name, prop in usage.items()}


def bounded_usage(usage: Any) -> dict[str, Any]:
    """A usage figure as a refused delta wrote it, made countable: each figure a
    number from 0 to the delta schema's maximum (above it, the maximum: over-counting
    is the safe side, and no hostile number can overflow a sum); tokens whole
    (rounded up); anything that is not a number counts 0."""
    out: dict[str, Any] = {}
    given = usage if isinstance(usage, dict) else {}
    for name, top in _usage_maxima().items():
        v = given.get(name)
        x: float = 0
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            x = min(max(v, 0), top)
        out[name] = float(x) if name == "cost_usd" else math.ceil(x)
    return out


def spent_by(record: dict[str, Any]) -> dict[str, Any] | None:
    """What a quarantined delta spent, from its quarantine record: the ``meta.usage`` of
    the delta if it parsed, else of the file's content if that is still a JSON object
    (a delta the schema refused: a cost over the maximum, a bad op), bounded; None when
    nothing of it was read (a branch refused unsigned, a symbolic link, a submodule, a
    file over the size limit or not JSON): what it spent is unknown."""
    body = record.get("delta")
    if not isinstance(body, dict):
        raw = record.get("raw")
        if not isinstance(raw, str):
            return None
        try:
            body = canonical.parse(raw.encode("utf-8", "surrogatepass"), canonical.MAX_DEPTH)
        except ValueError:  # not JSON (canonical.JSONProblem), or not text
            return None
        if not isinstance(body, dict):
            return None
    meta = body.get("meta")
    return bounded_usage(meta.get("usage") if isinstance(meta, dict) else None)
