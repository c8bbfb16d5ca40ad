"""The fleet's pace: whether a tick is due, and the record of who started it.

``run.every`` cuts time into slots counted from the Unix epoch, UTC: slot(t) =
floor(t / every). A tick belongs to the slot in which it *started*, and a tick
is due at time t when no tick started in t's slot; a run that comes late
finds one tick due, not one for every slot it missed, and a second run in the
same slot finds none. With no ``run.every`` a tick is always due.

A tick's start is recorded on the ``fleet/clock`` branch, beside main (main
has one writer, the merge engine, and nothing the wall clock says may enter
state that ``fleet replay`` rebuilds): ``clock/start.json`` names the tick, when
it started, by whom, and a lease. The plan that starts a tick (``fleet plan
--start``) writes it with a compare-and-swap push, so of two runs that find
the same tick due (a scheduled run and the run the last tick dispatched, or
two dispatches of one chain) exactly one starts it; the other exits 3. While
the lease holds, no other run starts that tick and no merge without
``--tick`` takes it over; once it ran out (the run died), the tick may start
again. A tick that was merged without a start record (``fleet run``, a merge
of late deltas) counts from its commit's time on main.

Budgets over time (``fleet.spend``) come first: a spent day or month makes
the tick not due until the budget resumes, whatever the pace.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
from dataclasses import dataclass
from typing import Any

from fleet import schemas
from fleet.config import Config, format_duration
from fleet.errors import FleetError
from fleet.ids import printable
from fleet.repo import FleetRepo
from fleet.spend import Spending, stamp, utc
from fleet.store import BranchStore, Change, Kind, Records

BRANCH = "fleet/clock"
FOLDER = "clock"
START = f"{FOLDER}/start.json"
# A run dispatched by the last tick waits for its tick at most this long: a GitHub
# job ends after 6 hours, and the plan job's timeout (360 minutes) must cover the wait.
MAX_WAIT = 350 * 60
_OFF = ("", "0", "false", "no", "off")


def parse_stamp(text: str) -> float:
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC).timestamp()


def check_start(doc: Any, where: str) -> dict[str, Any]:
    """The store's check of the start record: its schema, and times fleet can read."""
    problem = schemas.first_error(schemas.protocol("clock"), doc)
    if problem:
        raise FleetError(f"{where}: {problem} (schemas/clock.schema.json)")
    at = {}
    for key in ("started", "lease_until"):
        try:
            at[key] = parse_stamp(doc[key])
        except ValueError:
            raise FleetError(f"{where}: {key}: {doc[key]!r} is not a UTC time such as 2026-05-01T10:00:00Z "
                             "(schemas/clock.schema.json)") from None
    if "lease_until" in at and not 0 <= at["lease_until"] - at["started"] <= MAX_LEASE:
        # a start fleet writes holds twice the longest deadline and half an hour; one that
        # holds longer (a record written by hand: year 9999) would stop every tick till then
        raise FleetError(f"{where}: lease_until {doc['lease_until']!r} is not within {MAX_LEASE // 86400:.0f} days "
                         f"after started {doc['started']!r}: no start fleet writes holds a tick so long "
                         "(schemas/clock.schema.json); fix or delete the record on fleet/clock")
    return dict(doc)


MAX_LEASE = 2 * 604800 + 1800  # seconds: twice run.deadline_seconds' maximum, and half an hour for the merge


RELAY = "relay/chain.json"


def check_relay(doc: Any, where: str) -> dict[str, Any]:
    """The store's check of the relay record: its schema, and a time fleet can read."""
    problem = schemas.first_error(schemas.protocol("relay"), doc)
    if problem:
        raise FleetError(f"{where}: {problem} (schemas/relay.schema.json)")
    try:
        parse_stamp(doc["at"])
    except ValueError:
        raise FleetError(f"{where}: at: {doc['at']!r} is not a UTC time such as 2026-05-01T10:00:00Z "
                         "(schemas/relay.schema.json)") from None
    return dict(doc)


KINDS = (Kind(FOLDER, "id", "clock", check_start), Kind("relay", "id", "relay", check_relay))


@dataclass(frozen=True)
class Start:
    """Who started which tick, when, and until when that holds off another start."""

    tick: int
    started: float
    lease_until: float
    by: str
    how: str

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Start:
        return cls(doc["tick"], parse_stamp(doc["started"]), parse_stamp(doc["lease_until"]), doc["by"], doc["how"])

    def to_json(self) -> dict[str, Any]:
        return {"id": "start", "tick": self.tick, "started": stamp(utc(self.started)),
                "lease_until": stamp(utc(self.lease_until)), "by": self.by, "how": self.how}


def stop_switch(env: dict[str, str] | None = None, cfg: Config | None = None) -> str | None:
    """Why the chain of dispatched runs is stopped (the repository variable FLEET_STOP, handed to the
    job as an environment variable, or run.self_dispatch false), or None."""
    value = (os.environ if env is None else env).get("FLEET_STOP", "").strip()
    if value.lower() not in _OFF:
        return f"the stop switch is on (FLEET_STOP={printable(value, 40)}); ticks start by cron and by hand only"
    if cfg is not None and not cfg.run.self_dispatch:
        return "run.self_dispatch is false in state/config.json; ticks start by cron and by hand only"
    return None


def runner() -> str:
    """Who is starting a tick: the GitHub Actions run, else this machine and process."""
    run_id = os.environ.get("GITHUB_RUN_ID")
    if run_id and os.environ.get("GITHUB_ACTIONS") == "true":
        return f"run {run_id} attempt {os.environ.get('GITHUB_RUN_ATTEMPT', '1')}"
    return f"{socket.gethostname()} pid {os.getpid()}"


# -- is a tick due? ----------------------------------------------------------------


@dataclass
class Due:
    """Whether tick ``tick`` may start at ``at``, and why (or why not)."""

    due: bool
    reason: str  # due, by-hand | paced-out, in-progress, merged, superseded, budget, stopped
    why: str
    tick: int
    at: float
    every: int | None = None
    slot_start: float | None = None  # the slot ``at`` falls in
    late_seconds: float | None = None  # how long after its slot began this start comes
    next_due: float | None = None  # when it is due (not due), or when the tick after it is (due)
    last_start: float | None = None  # when the last tick started (by the record, or its commit)

    def to_json(self) -> dict[str, Any]:
        return {"due": self.due, "reason": self.reason, "why": self.why, "every": format_duration(self.every)
                if self.every else None, "at": stamp(utc(self.at)),
                "slot": stamp(utc(self.slot_start)) if self.slot_start is not None else None,
                "late_seconds": round(self.late_seconds, 3) if self.late_seconds is not None else None,
                "next_due": stamp(utc(self.next_due)) if self.next_due is not None else None,
                "last_start": stamp(utc(self.last_start)) if self.last_start is not None else None}


def slot(t: float, every: int) -> int:
    return int(t // every)


def decide(at: float, tick: int, every: int | None, last_start: float | None, start: Start | None,
           stop: str | None = None, resumes: float | None = None, by_hand: bool = False,
           me: str | None = None) -> Due:
    """Whether tick ``tick`` (main's tick + 1) is due at ``at``: a pure function of
    the pace, when the last tick started, the start record and the budgets.

    ``start``: the record on fleet/clock, if any; ``last_start``: when main's last
    tick started (its record, else its commit's time; None: never, or unknown);
    ``stop``: why a budget stops new ticks, resuming at ``resumes``; ``by_hand``:
    a person asked for this tick now, so the pace does not hold it back (the
    budgets and a tick under way still do); ``me``: who asks (a record of its
    own is no rival)."""
    s = slot(at, every) if every else None
    base = Due(False, "", "", tick, at, every, s * every if s is not None and every else None, None, None, last_start)
    if stop is not None:
        base.reason, base.why, base.next_due = "budget", f"tick {tick} is not due: {stop}", resumes
        return base
    if start is not None and start.tick == tick and start.lease_until > at and start.by != me:
        base.reason = "in-progress"
        base.why = (f"tick {tick} is under way: {start.by} started it at {stamp(utc(start.started))} ({start.how}); "
                    f"its own merge publishes it, and another run may start it only after "
                    f"{stamp(utc(start.lease_until))}")
        base.next_due = start.lease_until
        return base
    if every and s is not None and not by_hand and last_start is not None and slot(last_start, every) >= s:
        base.reason = "paced-out"
        nxt = (slot(last_start, every) + 1) * every
        base.why = (f"tick {tick} is not due: tick {tick - 1} started at {stamp(utc(last_start))}, in this slot of "
                    f"run.every {format_duration(every)}; the next is due at {stamp(utc(nxt))}")
        base.next_due = nxt
        return base
    base.due = True
    if every and s is not None:
        base.late_seconds = at - s * every
        base.next_due = (s + 1) * every
        if by_hand:
            base.reason, base.why = "by-hand", f"tick {tick} starts now, by hand (the pace, run.every " \
                                               f"{format_duration(every)}, does not hold back a run started by hand)"
        else:
            base.reason = "due"
            base.why = (f"tick {tick} is due: no tick started in the slot that began at "
                        f"{stamp(utc(s * every))} (run.every {format_duration(every)}); this start is "
                        f"{format_duration(base.late_seconds)} after it")
    else:
        base.reason, base.why = ("by-hand" if by_hand else "due"), f"tick {tick} is due (no run.every: no pace)"
    return base


# -- the start record on fleet/clock ---------------------------------------------------


class Clock:
    """The start record of one fleet repository and its remote."""

    def __init__(self, repo: FleetRepo) -> None:
        self.repo = repo
        self.store = BranchStore(repo, BRANCH, KINDS, what="clock", cache="clock", fault="clock")

    def read(self) -> Start | None:
        """The record as last fetched (``FleetRepo.fetch`` fetches fleet/* with main)."""
        doc = self.store.read().docs.get(START)
        return Start.of(doc) if doc else None

    def start(self, tick: int, at: float, cfg: Config, by: str, how: str) -> tuple[bool, Start | None]:
        """Record that ``by`` starts ``tick`` at ``at``, unless another run holds it or
        main moved on: (True, ours) when this start landed, (False, what stands)
        when it did not. Fetches main and the record first, and decides again on
        a lost compare-and-swap."""
        lease = 2 * cfg.run.deadline_seconds + 1800  # the workers' deadline, twice, and half an hour for the merge
        mine = Start(tick, float(int(at)), float(int(at + lease)), by, how)

        def decide_(records: Records, _cfg: Config, _now: _dt.datetime) -> Change:
            doc = records.docs.get(START)
            held = Start.of(doc) if doc else None
            merged = self.repo.snapshot(self.repo.main()).tick
            if not may_start(held, tick, at, by, merged):
                return Change([], held)
            late = f", {format_duration(at - (at // cfg.run.every) * cfg.run.every)} into its slot" \
                if cfg.run.every else ""
            return Change([(f"clock: tick {tick} starts ({how}, {by}{late})\n", {START: mine.to_json()})], mine)

        ch, _ = self.store.change(decide_)
        won: Start | None = ch.result
        return won == mine, won

    def release(self, tick: int, at: float, by: str, why: str) -> bool:
        """End ``by``'s hold on ``tick`` at ``at`` (its lease runs out now): a run that
        started the tick and then failed before anything of it was delivered, so that
        another run (another clone, the workflow) may start it at once, not after
        the lease, and `fleet status` stops calling it under way. True if released;
        a record that is not this run's hold of that tick is left as it is."""

        def decide_(records: Records, _cfg: Config, _now: _dt.datetime) -> Change:
            doc = records.docs.get(START)
            held = Start.of(doc) if doc else None
            if held is None or held.tick != tick or held.by != by or held.lease_until <= at:
                return Change([], False)
            ended = Start(held.tick, held.started, max(held.started, float(int(at))), held.by, held.how)
            return Change([(f"clock: tick {tick} released ({by}: {why[:200]})\n", {START: ended.to_json()})], True)

        ch, _ = self.store.change(decide_)
        return bool(ch.result)


    def relay(self, after: int, seq: int, at: float, by: str) -> bool:
        """Record the ``seq``-th relay of the chain that tick ``after``'s merge started:
        True when this run passes the chain on, False when another run of the same
        chain did already (a run GitHub started twice), or the chain moved on."""

        def decide_(records: Records, _cfg: Config, _now: _dt.datetime) -> Change:
            doc = records.docs.get(RELAY)
            if doc is not None and (doc["after"], doc["seq"]) >= (after, seq):
                return Change([], False)
            merged = self.repo.snapshot(self.repo.main()).tick
            if merged != after:  # a tick was merged meanwhile: its merge passed the chain on
                return Change([], False)
            record = {"id": "chain", "after": after, "seq": seq, "by": by, "at": stamp(utc(at))}
            return Change([(f"clock: relay {seq} of the chain after tick {after} ({by})\n", {RELAY: record})], True)

        ch, _ = self.store.change(decide_)
        return bool(ch.result)


def may_start(held: Start | None, tick: int, at: float, by: str, merged: int) -> bool:
    """Whether ``by`` may start ``tick`` at ``at``, with main at tick ``merged`` and
    ``held`` the start record: the tick must be the next one, and no other run
    may hold it (or a later one) with a lease that still runs."""
    if merged != tick - 1:
        return False
    if held is None or held.by == by or held.tick < tick:
        return True
    return held.tick == tick and held.lease_until <= at


def due_now(repo: FleetRepo, cfg: Config, tick: int, spending: Spending, at: float, *, by_hand: bool = False,
            stopped: str | None = None, me: str | None = None) -> tuple[Due, Start | None]:
    """The due-check on what this clone last fetched: main's tick and its history
    (in ``spending``), the start record, the budgets and the stop switch."""
    start = Clock(repo).read()
    last_start: float | None = None
    if start is not None and start.tick == tick - 1:
        last_start = start.started
    elif tick > 1:
        mark = spending.history.last_tick(tick - 1)
        last_start = float(mark.time) if mark is not None else None
    stop = spending.stop()
    if stopped is not None:
        d = Due(False, "stopped", f"tick {tick} is not started: {stopped}", tick, at, cfg.run.every,
                last_start=last_start)
        return d, start
    return decide(at, tick, cfg.run.every, last_start, start, stop.why() if stop else None,
                  stop.until.timestamp() if stop else None, by_hand, me), start
