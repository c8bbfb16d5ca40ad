"""Ordering and de-duplication: which of a tick's arrivals are candidates.

Every arrival is parsed (or quarantined with the reason), sorted by
(tick, utc, worker, id), and checked against what earlier merges decided:
a delta already in the ledger, or a file already quarantined, is a duplicate;
a used id with other content, a tick out of the window or an unknown agent is
quarantined. What is left are the candidates, in delta order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from fleet import canonical, keys
from fleet.delta import Arrival, Delta, Rejected, misnamed, parse
from fleet.engine.apply import Outcome
from fleet.ids import device_name
from fleet.records import Quarantined
from fleet.state import LEDGER_DIR, QUARANTINE_DIR, Snapshot


@dataclass
class Triage:
    """A tick's arrivals sorted out: candidates in delta order, and the rest."""

    candidates: list[Delta] = field(default_factory=list)
    arrival_of: dict[str, Arrival] = field(default_factory=dict)  # delta id -> the copy that stands
    quarantined: list[Quarantined] = field(default_factory=list)
    duplicates: list[Arrival] = field(default_factory=list)


def triage(base: Snapshot, arrivals: list[Arrival], tick: int,
           pruned: Callable[[int], str | None] | None = None) -> Triage:
    """Parse, order and de-duplicate the arrivals of ``tick`` against what
    ``base`` (main, its decisions applied) already holds. ``pruned``: for a late
    delta's tick, why its ledger is gone though the window reaches it (the window
    was lower once: fleet.ledger.pruned_ledgers), or None; without it, the window
    is taken to have been what it is now."""
    cfg = base.config
    window = cfg.limits.window
    out = Triage()
    quarantined, duplicates = out.quarantined, out.duplicates

    # A file quarantined by an earlier merge (one that raced this one, or
    # whose sources were not deleted yet) is a duplicate, not a second verdict.
    refused_before = _LazyRefused(base)
    parsed: list[tuple[Delta, Arrival]] = []
    known = keys.named()
    for a in sorted(arrivals, key=lambda a: (a.path, a.source, a.data)):
        try:
            leaked = keys.found_in(a.data, known) if known else None
            if leaked is not None:
                # Quarantined whole, its content masked: a key never reaches main.
                raise Rejected(f"holds the value of the secret {leaked}; a delta never carries a key")
            parsed.append((parse(a, cfg.limits), a))
        except Rejected as e:
            q = Quarantined(a, str(e))
            if raw_key(q.record(tick, cfg.limits.max_delta_bytes)) in refused_before.keys:
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

    candidates, arrival_of = out.candidates, out.arrival_of
    portable = _Portable(base)
    turns = _Turns(base, tick)
    # Workers whose names differ only by case (w1, W1) would write one ledger file on
    # Windows or macOS: of those arriving together, the name in lower case stands (fleet
    # names its workers so), else the first; a look-alike never displaces a real worker
    # by sorting before it (a name in the tree already stands over both: _Portable).
    folds: dict[str, set[str]] = {}
    for d, _ in parsed:
        folds.setdefault(d.worker.casefold(), set()).add(d.worker)
    stands = {f: f if f in names else min(names) for f, names in folds.items() if len(names) > 1}
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
        elif d.tick < tick and pruned is not None and (why := pruned(d.tick)) is not None:
            quarantined.append(Quarantined(a, why, d))
        elif d.agent not in cfg.agents:
            quarantined.append(Quarantined(a, f"agent {d.agent!r} is not in state/config.json agents", d))
        elif d.id in ledger(d):
            quarantined.append(Quarantined(a, f"delta id {d.id} was applied in tick {d.tick} with different content", d))
        elif stands.get(d.worker.casefold(), d.worker) != d.worker:
            quarantined.append(Quarantined(a, f"worker {d.worker!r} differs from worker "
                                              f"{stands[d.worker.casefold()]!r} only by case, whose deltas came too: "
                                              "a clone on Windows or macOS would hold one ledger file for both", d))
        elif (why := misnamed(d, a.path) or portable.problem(d)) is not None:
            quarantined.append(Quarantined(a, why, d))
        elif (first := turns.first(d)) is not None:
            quarantined.append(Quarantined(a, f"agent {d.agent} already took its turn of tick {d.tick} in stream "
                                              f"{d.stream} (delta {first}): one turn a stream a tick", d))
        else:
            candidates.append(d)
            arrival_of[d.id] = a  # the copy that stands, not a later duplicate
            portable.add(d)
            turns.add(d)
    return out


class _Turns:
    """One turn an agent's stream a tick: the delta of (tick, agent, stream) that
    stands, of those applied before (the ledger of that tick, every worker's) and
    those arriving now, in delta order. A second one (a worker's outbox merged with
    another run's, a rerun with another worker count) is quarantined, never applied
    as a second turn."""

    def __init__(self, base: Snapshot, tick: int) -> None:
        self.base, self.tick = base, tick
        self.taken: dict[tuple[int, str, str], str] = {}
        self.read: set[int] = set()

    def first(self, d: Delta) -> str | None:
        if d.tick < self.tick and d.tick not in self.read:  # late: what its tick applied stands first
            self.read.add(d.tick)
            for path in self.base.under(f"{LEDGER_DIR}/{d.tick}"):
                for line in (self.base.read(path) or b"").splitlines():
                    body = canonical.parse_trusted(line)
                    if isinstance(body, dict):
                        self.taken.setdefault((d.tick, str(body.get("agent")), str(body.get("stream"))),
                                              str(body.get("id")))
        return self.taken.get((d.tick, d.agent, d.stream))

    def add(self, d: Delta) -> None:
        self.taken.setdefault((d.tick, d.agent, d.stream), d.id)


class _Portable:
    """Names the merge would write that a clone on Windows or macOS cannot hold: a
    document or ledger file named as a Windows device (``CON.json``), or one that
    differs only by case from another in its folder (``C1.json`` beside ``c1.json``:
    one file on a case-insensitive disk). A delta that would write one is
    quarantined, so main checks out everywhere. (Decisions, not application: replay
    applies what the ledger recorded, so history made before this rule replays as it was.)"""

    def __init__(self, base: Snapshot) -> None:
        self.base = base
        self.folded: dict[str, dict[str, str]] = {}  # folder -> casefolded name -> the name there

    def _folder(self, folder: str) -> dict[str, str]:
        found = self.folded.get(folder)
        if found is None:
            found = self.folded[folder] = {}
            for p in self.base.files_in(folder):
                name = p.rsplit("/", 1)[1]
                found.setdefault(name.casefold(), name)
        return found

    def _names(self, d: Delta) -> list[str]:
        """The files ``d`` would make: its worker's ledger file of its tick, the documents it creates."""
        cfg = self.base.config
        out = [f"{LEDGER_DIR}/{d.tick}/{d.worker}.jsonl"]
        for op in d.ops:
            coll = cfg.collections.get(op.collection)
            if op.op == "create" and coll is not None:
                out.append(coll.doc_path(op.id))
        return out

    def problem(self, d: Delta) -> str | None:
        for path in self._names(d):
            folder, _, name = path.rpartition("/")
            if device_name(name):
                return (f"{path}: '{name.split('.', 1)[0]}' is a device name on Windows: a clone there could not "
                        "check main out")
            there = self._folder(folder).get(name.casefold())
            if there is not None and there != name:
                return (f"{path}: differs from {folder}/{there} only by case: a clone on Windows or macOS would "
                        "hold one file for both")
        return None

    def add(self, d: Delta) -> None:
        """``d`` stands: the files it makes are there for the deltas after it."""
        for path in self._names(d):
            folder, _, name = path.rpartition("/")
            self._folder(folder).setdefault(name.casefold(), name)


class _LazyRefused:
    """Keys of the quarantine records still in the tree, read when first needed."""

    def __init__(self, base: Snapshot) -> None:
        self.base = base

    @cached_property
    def keys(self) -> set[Any]:
        """(delta id, digest) of each quarantined delta, ``raw_key`` of each unparseable file."""
        out: set[Any] = set()
        paths = self.base.under(QUARANTINE_DIR)
        for path, data in self.base.read_many(paths).items():
            for line in (data or b"").splitlines():
                rec = canonical.load(line, path)
                if isinstance(rec.get("delta"), dict):
                    out.add((rec["delta"].get("id"), canonical.digest(rec["delta"])))
                else:
                    out.add(raw_key(rec))
        return out


def raw_key(rec: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies an unparseable file across merges: where it was and what it held."""
    return ("raw", rec.get("path"), rec.get("size"), rec.get("raw"))


def refuse_now(candidates: list[Delta], outcome: Outcome) -> dict[str, str]:
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
