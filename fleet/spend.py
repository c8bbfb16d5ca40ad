"""Budgets over time: what the fleet spent this UTC day and month, from its own records.

``state/fleet.json`` on main carries the fleet's running totals
(``totals.usage``), which every tick commit raises by what that tick spent
(``last.usage``: every delta it applied or quarantined, ``meta.usage``). What
a day spent is the totals at main's head less the totals as the day began:
those of the newest first-parent commit made before midnight UTC. A tick
counts in the day (and month) its commit was made, by its committer time.

Finding that commit is one ``git log --first-parent`` of main, read as it
streams and stopped at the first commit older than the month, and one
``cat-file --batch`` of the two or three ``state/fleet.json`` files. In a
shallow clone (a GitHub checkout) the walk can end before the month began;
history is then deepened to the month's start (``git fetch
--shallow-since``) once, and a walk that still ends early takes the totals
as they were before its oldest commit (a tick commit's totals less its
``last``), which is exact.

Budgets (``budgets.day``, ``budgets.month``, tokens and dollars) stop new
ticks, never work under way: a tick that started before the budget was
spent finishes and is kept, so a day can end over its budget by at most
what one tick spends (``budgets.tick`` bounds that).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

from fleet import canonical
from fleet.config import FLEET_PATH, Budget, Config
from fleet.errors import FleetError
from fleet.git import Git, git_reason
from fleet.ids import printable
from fleet.records import Usage
from fleet.repo import TRACKING, FleetRepo

# One line a commit: its sha, committer time, and the tick its Fleet-Tick trailer names (if any).
LOG_FORMAT = "--format=%H %ct %(trailers:key=Fleet-Tick,valueonly,separator=%x2C)"


def stamp(at: _dt.datetime | None) -> str | None:
    """A UTC time as fleet writes it: ``2026-05-01T10:00:00Z`` (whole seconds)."""
    return at.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at is not None else None


def utc(seconds: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(seconds, _dt.UTC)


# -- main's history, newest first ---------------------------------------------------


@dataclass(frozen=True)
class Mark:
    """One first-parent commit of main: when it was made and the tick it merged (None: a person's)."""

    sha: str
    time: int
    tick: int | None


@dataclass
class History:
    """Main's first-parent commits from ``head`` back to the first one made before ``since``."""

    marks: list[Mark]
    complete: bool  # the walk reached a commit before ``since``, or the root; else it ran out of history

    def base(self, start: int) -> tuple[Mark, bool]:
        """The commit whose totals were the fleet's as ``start`` began: the newest made
        before it (False), or, when the walk ran out first, the oldest commit seen,
        whose own tick is to be taken off (True)."""
        for m in self.marks:
            if m.time < start:
                return m, False
        return self.marks[-1], True

    def last_tick(self, tick: int) -> Mark | None:
        """The commit that merged ``tick``, if the walk saw it."""
        return next((m for m in self.marks if m.tick == tick), None)


def _walk(git: Git, head: str, since: int, tick: int | None) -> History:
    marks: list[Mark] = []
    with git.stream("log", "--first-parent", LOG_FORMAT, head) as out:
        for raw in out:
            sha, _, rest = raw.decode("utf-8", "replace").rstrip("\n").partition(" ")
            when, _, trailer = rest.partition(" ")
            try:
                merged: int | None = int(trailer.split(",")[-1]) if trailer else None
            except ValueError:
                merged = None
            marks.append(Mark(sha, int(when), merged))
            found_tick = tick is None or tick == 0 or any(m.tick == tick for m in marks)
            if int(when) < since and found_tick:
                return History(marks, True)
    if not marks:
        raise FleetError(f"{head}: not a commit of {git.path}")
    return History(marks, not _is_shallow(git, marks[-1].sha))


def _is_shallow(git: Git, sha: str) -> bool:
    """Whether ``sha`` is where a shallow clone's history is cut (its parents were not fetched)."""
    path = git.text("rev-parse", "--git-path", "shallow")
    try:
        cut = (git.path / path).read_text().split()
    except OSError:
        return False
    return sha in cut


def history(repo: FleetRepo, head: str, since: int, tick: int | None = None) -> History:
    """Main's first-parent commits, newest first, back to the first one made
    before ``since`` (and back to the commit of ``tick``, if given). A shallow
    clone is deepened to ``since`` once when the walk runs out first."""
    h = _walk(repo.git, head, since, tick)
    if h.complete or not repo.remote:
        return h
    err = repo.git.proc("fetch", "--quiet", "--no-tags", "--refmap=", f"--shallow-since={stamp(utc(since))}",
                        repo.remote, f"+refs/heads/main:{TRACKING}main")
    if err.returncode:  # best effort: the walk we have is taken as it is, and its oldest tick is taken off
        if "shallow" not in err.stderr.decode(errors="replace"):
            raise FleetError(f"git fetch --shallow-since from {repo.remote} failed: "
                             f"{git_reason(err.stderr.decode(errors='replace'), 'no reason given')}")
        return h
    return _walk(repo.git, head, since, tick)


# -- what a day and a month spent ---------------------------------------------------


def day_start(at: _dt.datetime) -> _dt.datetime:
    return at.astimezone(_dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(at: _dt.datetime) -> _dt.datetime:
    return day_start(at).replace(day=1)


def next_month(start: _dt.datetime) -> _dt.datetime:
    return (start + _dt.timedelta(days=32)).replace(day=1)


@dataclass
class Period:
    """What the fleet spent from ``start`` (midnight, or the first of the month) to
    now, against its budget; ``until``: when the next period (and its budget) begins."""

    name: str  # "day" or "month"
    start: _dt.datetime
    until: _dt.datetime
    usage: Usage
    budget: Budget
    # a tick of this period whose spend cannot be counted (:class:`Unknown`): ``usage`` is then what
    # is known, at least what it spent, and what is left of the budget is not known (unless it is spent)
    uncounted: int | None = None

    @property
    def spent(self) -> str | None:
        """Why the budget is spent (its figure against the limit), or None."""
        b, u = self.budget, self.usage
        if b.tokens is not None and u.tokens >= b.tokens:
            return f"{u.tokens:,} of {b.tokens:,} tokens"
        if b.usd is not None and u.micro_usd >= round(b.usd * 1_000_000):
            return f"${u.cost_usd:.4f} of ${b.usd:.2f}"
        return None

    def left(self) -> dict[str, Any] | None:
        """What is left of each figure of the budget (None: the budget has no such figure);
        None when a tick's spend cannot be counted and what is known does not spend it."""
        b, u = self.budget, self.usage
        if self.uncounted is not None and self.spent is None:
            return None
        return {"tokens": None if b.tokens is None else max(0, b.tokens - u.tokens),
                "usd": None if b.usd is None else max(0, round(b.usd * 1_000_000) - u.micro_usd) / 1_000_000}

    def said(self) -> str:
        """What the period spent, in words: "at least" while a tick of it cannot be counted."""
        figures = f"${self.usage.cost_usd:.4f} and {self.usage.tokens:,} tokens spent"
        return figures if self.uncounted is None else f"at least {figures}"

    def why(self) -> str:
        """The sentence a plan, a run and a dispatch give when this budget stops a tick."""
        when = "midnight UTC" if self.name == "day" else "the first of the month (UTC)"
        return f"budgets.{self.name} is spent ({self.spent} since {stamp(self.start)}); ticks resume at " \
               f"{stamp(self.until)}, {when}"

    def to_json(self) -> dict[str, Any]:
        b = self.budget
        return {"since": stamp(self.start), "until": stamp(self.until), "tokens": self.usage.tokens,
                "cost_usd": self.usage.cost_usd, "usage": self.usage.to_json(),
                "budget": None if b.tokens is None and b.usd is None else {"tokens": b.tokens, "usd": b.usd},
                "left": self.left(), "spent": self.spent is not None, "uncounted": self.uncounted,
                "said": self.said()}


@dataclass
class Unknown:
    """A budget that cannot be counted: main's newest commit is a tick, made in the
    budget's period, whose deltas were all quarantined unread (an unsigned branch, a
    symbolic link, a file over the size limit or not JSON), so what it spent is
    unknown. It stops new ticks as a spent budget does, until a commit on main (a
    person's fix) or the next period: at most one such tick a period goes uncounted."""

    name: str  # "day" or "month": the budget it stops
    tick: int
    deltas: int
    first: str  # the first refusal's reason, as recorded
    until: _dt.datetime

    def why(self) -> str:
        return (f"budgets.{self.name} cannot be counted: tick {self.tick} spent an unknown amount, all its "
                f"{self.deltas} delta(s) quarantined unread (first: {printable(self.first, 300)}); no tick starts "
                f"until a commit on main (one that fixes this) or {stamp(self.until)}, when the next "
                f"{'day' if self.name == 'day' else 'month'} begins")

    def to_json(self) -> dict[str, Any]:
        return {"budget": self.name, "tick": self.tick, "deltas": self.deltas, "why": self.why()}


@dataclass
class Spending:
    day: Period
    month: Period
    history: History
    unknown: Unknown | None = None  # the newest tick's spend cannot be read, and a budget is set

    def stop(self) -> Period | Unknown | None:
        """What stops new ticks now (of several, the one that lasts longer): a spent
        budget, or one that cannot be counted; or None."""
        stops: list[Period | Unknown] = [p for p in (self.month, self.day) if p.spent]
        stops += [self.unknown] if self.unknown is not None else []
        return max(stops, key=lambda p: p.until) if stops else None

    def to_json(self) -> dict[str, Any]:
        stop = self.stop()
        return {"day": self.day.to_json(), "month": self.month.to_json(),
                "unknown": self.unknown.to_json() if self.unknown is not None else None,
                "stopped": stop.why() if stop else None, "resumes": stamp(stop.until) if stop else None}


def _fleet_doc(data: bytes | None, where: str) -> dict[str, Any]:
    """A state/fleet.json; empty for a commit without one."""
    if data is None:
        return {}
    doc = canonical.load(data, where)
    if not isinstance(doc, dict):
        raise FleetError(f"{where}: must be a JSON object")
    return doc


def _totals(data: bytes | None, where: str) -> tuple[Usage, Usage]:
    """(totals, last) usage in a state/fleet.json; zero for a commit without one."""
    doc = _fleet_doc(data, where)
    totals, last = doc.get("totals"), doc.get("last")
    return (Usage.parse(totals.get("usage") if isinstance(totals, dict) else None),
            Usage.parse(last.get("usage") if isinstance(last, dict) else None))


def _unread(repo: FleetRepo, head: Mark, fleet: dict[str, Any]) -> tuple[int, str] | None:
    """(how many, the first refusal) when main's newest commit is a tick whose deltas were
    all quarantined and none of them could be read (``fleet.engine.write.spent_by``), so
    what it spent is unknown; None when head is a person's commit or the tick applied or
    read anything."""
    last = fleet.get("last")
    if head.tick is None or not isinstance(last, dict) or last.get("applied") != 0 or not last.get("quarantined"):
        return None
    from fleet.engine.write import spent_by
    from fleet.state import QUARANTINE_DIR

    folder = f"{QUARANTINE_DIR}/{head.tick}/"
    paths = repo.git.text("ls-tree", "-r", "--name-only", head.sha, "--", folder).split()
    names = [f"{head.sha}:{p}" for p in paths]
    records = [canonical.load(line, name) for name, data in repo.git.cat_maybe(names).items()
               for line in (data or b"").splitlines() if line.strip()]
    if not records or any(not isinstance(r, dict) or spent_by(r) is not None for r in records):
        return None
    first = min(records, key=lambda r: (str(r.get("path")), str(r.get("source"))))
    return len(records), f"{first.get('path')}: {first.get('reason')}"


def _unknown(repo: FleetRepo, head: Mark, fleet: dict[str, Any], periods: dict[str, Period]) -> Unknown | None:
    """The budget main's newest tick cannot be counted against (:func:`_unread`), or None
    (also when no day or month budget is set that the tick counts in). Each period the
    tick counts in, with a budget or not, is marked ``uncounted``: what it spent is at least
    what is known."""
    within = [p for p in (periods["day"], periods["month"]) if head.time >= p.start.timestamp()]
    unread = _unread(repo, head, fleet) if within else None
    if unread is None:
        return None
    for p in within:
        p.uncounted = head.tick
    counted = [p for p in within if p.budget.tokens is not None or p.budget.usd is not None]
    if not counted:
        return None
    p = counted[0]  # the day's, if a day budget is set: the sooner it resumes
    return Unknown(p.name, head.tick or 0, unread[0], unread[1], p.until)


def spending(repo: FleetRepo, head: str, cfg: Config, at: _dt.datetime, tick: int | None = None) -> Spending:
    """What the fleet spent this UTC day and month as of ``at``, with main at ``head``
    (``tick``: also walk back to that tick's commit, for the clock)."""
    day, month = day_start(at), month_start(at)
    h = history(repo, head, int(month.timestamp()), tick)
    bases = {name: h.base(int(start.timestamp())) for name, start in (("day", day), ("month", month))}
    names = [f"{head}:{FLEET_PATH}"] + [f"{m.sha}:{FLEET_PATH}" for m, _ in bases.values()]
    blobs = repo.git.cat_maybe(names)
    now_totals, _ = _totals(blobs[names[0]], f"{head[:12]}:{FLEET_PATH}")
    now = _fleet_doc(blobs[names[0]], f"{head[:12]}:{FLEET_PATH}")
    periods = {}
    for name, (mark, take_off) in bases.items():
        totals, last = _totals(blobs[f"{mark.sha}:{FLEET_PATH}"], f"{mark.sha[:12]}:{FLEET_PATH}")
        before = totals - last if take_off and mark.tick is not None else totals
        start = day if name == "day" else month
        until = start + _dt.timedelta(days=1) if name == "day" else next_month(start)
        periods[name] = Period(name, start, until, now_totals - before,
                               cfg.day_budget if name == "day" else cfg.month_budget)
    return Spending(periods["day"], periods["month"], h, _unknown(repo, h.marks[0], now, periods))
