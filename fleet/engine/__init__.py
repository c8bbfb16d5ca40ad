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
the tick just merged and the ``limits.window`` ticks before it; older ones live
in history, where replay reads them.

Where each part lives: ``order`` parses, orders and de-duplicates the
arrivals; ``apply`` applies ops to documents; ``fleet.authority`` says who may do
what; ``conflicts`` holds competing changes and applies the policies;
``write`` turns the decisions into files. The records it reads and writes
(conflicts, quarantine, usage) are types in ``fleet.records``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fleet import resolve
from fleet.delta import Arrival, Delta
from fleet.engine.apply import Applier
from fleet.engine.conflicts import conflict_id
from fleet.engine.order import refuse_now, triage
from fleet.engine.write import TickResult, finish
from fleet.errors import FleetError
from fleet.profile_merge import by_conflict
from fleet.records import Quarantined
from fleet.state import Snapshot

__all__ = ["Quarantined", "TickResult", "conflict_id", "merge_tick", "replay_tick"]


def merge_tick(base: Snapshot, arrivals: list[Arrival], outside: Sequence[dict[str, Any]] = (),
               meanings: Sequence[dict[str, Any]] = (),
               pruned: Callable[[int], str | None] | None = None) -> TickResult:
    """Decide the next tick: which deltas apply, which are held, which are quarantined.

    Decisions on held conflicts (resolution files on main, and ``outside``
    fallbacks for pull requests closed unmerged) are applied first.
    ``meanings``: the model's answers for fields under the ``meaning`` policy
    (fleet.profile_merge), inputs like the deltas: recorded in the ledger.
    ``pruned``: which late deltas' ledgers an earlier, lower window deleted
    (fleet.ledger.pruned_ledgers): such a delta is quarantined, never applied twice.
    """
    base, decided = resolve.apply(base, list(outside))
    cfg = base.config
    tick = base.tick + 1
    # every schema a document's check may need, in one request (not one git process a collection)
    base.read_many(sorted({f"schemas/{c.schema}" for c in cfg.collections.values()}))
    found = triage(base, arrivals, tick, pruned)
    candidates, quarantined = found.candidates, found.quarantined

    def split_off(refused: dict[str, str]) -> list[Delta]:
        """Quarantine the refused deltas; the rest go on."""
        for d in candidates:
            if d.id in refused:
                quarantined.append(Quarantined(found.arrival_of[d.id], refused[d.id], d))
        return [d for d in candidates if d.id not in refused]

    # The fast path applies everything at once. If anything is refused, the
    # tick is decided delta by delta in delta order; the loop after that is a
    # safety net whose set only shrinks, so it ends.
    apply = Applier(base, cfg, tick, by_conflict(meanings))
    outcome = apply.run(candidates)
    if outcome.culprits:
        candidates = split_off(apply.sequential(candidates))
        outcome = apply.run(candidates)
        while outcome.culprits:
            candidates = split_off(refuse_now(candidates, outcome))
            outcome = apply.run(candidates)

    records = [q.record(tick, cfg.limits.max_delta_bytes) for q in quarantined]
    result = finish(base, tick, candidates, records, outcome, decided, meanings)
    result.duplicates = found.duplicates
    return result


def replay_tick(base: Snapshot, applied: list[Delta], quarantined: list[dict[str, Any]],
                outside: Sequence[dict[str, Any]] = (), meanings: Sequence[dict[str, Any]] = ()) -> TickResult:
    """Recompute a tick from the deltas its commit applied, the records it
    quarantined, and the fallback decisions it was handed."""
    base, decided = resolve.apply(base, list(outside))
    tick = base.tick + 1
    applied = sorted(applied, key=lambda d: d.key)
    outcome = Applier(base, base.config, tick, by_conflict(meanings), replaying=True).run(applied)
    if outcome.culprits:
        delta_id, reason = sorted(outcome.culprits.items())[0]
        raise FleetError(f"replay of tick {tick}: ledger delta {delta_id} does not apply: {reason}")
    return finish(base, tick, applied, quarantined, outcome, decided, meanings)
