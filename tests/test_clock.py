"""The fleet's pace (fleet/clock.py): a tick is due, or it is not.

The due-check is a pure function (``decide``), proven by property over any
sequence of run start times; the start record on fleet/clock is a
compare-and-swap push, proven on real git with runs that race."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Fleet, run
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet import canonical
from fleet.clock import BRANCH, Start, decide, may_start
from fleet.commands.merge import merge
from fleet.commands.plan import plan
from fleet.errors import NothingToDo
from fleet.git import Git

EVERY = 600
T0 = 1_800_000_000  # a slot boundary: 1_800_000_000 / 600 is whole


# -- decide: the due-check as a pure function ------------------------------------------


def test_without_a_pace_a_tick_is_always_due() -> None:
    d = decide(T0 + 5, 3, None, T0 + 1, None)
    assert d.due and d.reason == "due" and d.why == "tick 3 is due (no run.every: no pace)"
    assert d.late_seconds is None and d.next_due is None


def test_a_tick_started_in_this_slot_holds_the_next_back_until_the_next_slot() -> None:
    d = decide(T0 + 300, 5, EVERY, T0 + 10, None)
    assert not d.due and d.reason == "paced-out" and d.next_due == T0 + EVERY
    assert d.why == ("tick 5 is not due: tick 4 started at 2027-01-15T08:00:10Z, in this slot of run.every 10m; "
                     "the next is due at 2027-01-15T08:10:00Z")
    d = decide(T0 + EVERY, 5, EVERY, T0 + 10, None)
    assert d.due and d.late_seconds == 0 and d.next_due == T0 + 2 * EVERY


def test_a_late_run_ticks_once_and_says_how_late() -> None:
    at = T0 + 7 * EVERY + 95  # seven slots went by with no tick
    d = decide(at, 2, EVERY, T0, None)
    assert d.due and d.late_seconds == 95 and d.slot_start == T0 + 7 * EVERY
    assert "this start is 1m35s after it" in d.why
    # the run ticks (its start is recorded): a second run in the same slot finds nothing due
    assert not decide(at + 1, 3, EVERY, at, None).due


def test_by_hand_the_pace_does_not_hold_a_tick_back_but_budgets_and_a_tick_under_way_do() -> None:
    d = decide(T0 + 30, 5, EVERY, T0 + 10, None, by_hand=True)
    assert d.due and d.reason == "by-hand"
    spent = decide(T0 + 30, 5, EVERY, T0 + 10, None, stop="budgets.day is spent (...)", resumes=T0 + 9999,
                   by_hand=True)
    assert not spent.due and spent.reason == "budget" and spent.next_due == T0 + 9999
    assert spent.why == "tick 5 is not due: budgets.day is spent (...)"
    held = Start(5, T0 + 20, T0 + 3600, "run 7", "schedule")
    busy = decide(T0 + 30, 5, EVERY, T0 + 10, held, by_hand=True, me="run 8")
    assert not busy.due and busy.reason == "in-progress" and busy.next_due == T0 + 3600
    assert busy.why.startswith("tick 5 is under way: run 7 started it at ")


def test_a_tick_under_way_holds_until_its_lease_ends_and_never_holds_its_own_run() -> None:
    held = Start(5, T0 + 20, T0 + 3600, "run 7", "dispatched")
    assert not decide(T0 + 40, 5, None, None, held, me="run 8").due
    assert decide(T0 + 3600, 5, None, None, held, me="run 8").due  # the lease ran out: the run died
    assert decide(T0 + 40, 5, None, None, held, me="run 7").due  # a rerun of the same run
    assert decide(T0 + 40, 6, None, None, held, me="run 8").due  # a record of an older tick holds nothing


def test_may_start_only_the_next_tick_and_only_if_no_other_run_holds_it() -> None:
    held = Start(5, T0, T0 + 100, "a", "schedule")
    assert may_start(None, 5, T0, "b", 4) and not may_start(None, 5, T0, "b", 5)
    assert not may_start(held, 5, T0 + 50, "b", 4) and may_start(held, 5, T0 + 50, "a", 4)
    assert may_start(held, 5, T0 + 100, "b", 4) and may_start(held, 6, T0 + 50, "b", 5)


# -- the property: any sequence of run start times ------------------------------------


@dataclasses.dataclass
class World:
    """Main, the start record and the merged ticks, as the runs of the model see them."""

    every: int
    lease: float
    main: int = 0
    record: Start | None = None
    merged: list[tuple[int, float, str]] = dataclasses.field(default_factory=list)  # (tick, its start, run)
    starts: list[Start] = dataclasses.field(default_factory=list)

    def last_start(self) -> float | None:
        if self.record is not None and self.record.tick == self.main:
            return self.record.started
        return self.merged[-1][1] if self.merged else None


runs = st.lists(st.tuples(st.integers(0, 40 * EVERY),  # when the run starts
                          st.integers(0, 30),  # seconds between its look (fetch) and its push of the start
                          st.integers(1, 3 * EVERY)),  # how long its tick takes, start to merge
                min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(runs, st.sampled_from([60, 600, 3600]), st.sampled_from([900, 3600]))
def test_any_sequence_of_run_start_times_ticks_at_most_once_per_slot_and_never_a_tick_twice(
        plan_: list[tuple[int, int, int]], every: int, lease: int) -> None:
    """Each run looks (the due-check on what it fetched), pushes its start record
    (compare-and-swap: it lands only if no other run holds the tick and main did
    not move), works, and merges with --tick (only if that tick is still next).
    Events are taken in time order, so runs overlap and race as they would."""
    w = World(every, lease)
    events: list[tuple[float, int, str, int, Any]] = []  # (time, order, kind, run, payload)
    for i, (at, gap, took) in enumerate(plan_):
        events.append((at, 0, "look", i, (gap, took)))
    events.sort()
    while events:
        at, _, kind, i, payload = events.pop(0)
        me = f"run {i}"
        if kind == "look":
            d = decide(at, w.main + 1, w.every, w.last_start(), w.record, me=me)
            if d.due:
                gap, took = payload
                events.append((at + gap, 1, "push", i, (w.main + 1, took)))
        elif kind == "push":
            tick, took = payload
            if may_start(w.record, tick, at, me, w.main):
                w.record = Start(tick, at, at + w.lease, me, "schedule")
                w.starts.append(w.record)
                events.append((at + took, 2, "merge", i, (tick, w.record)))
        else:
            tick, mine = payload
            if w.main == tick - 1:  # fleet merge --tick: a tick already merged exits 3
                w.main = tick
                w.merged.append((tick, mine.started, me))
        events.sort(key=lambda e: (e[0], e[1], e[3]))
    ticks = [t for t, _, _ in w.merged]
    assert ticks == list(range(1, len(ticks) + 1))  # every tick once, in order: never a tick twice
    slots = [int(start // every) for _, start, _ in w.merged]
    assert len(slots) == len(set(slots))  # at most one tick per slot
    for a, b in zip(w.starts, w.starts[1:]):
        if a.tick == b.tick:  # a tick started again only once the first start's lease ran out
            assert b.started >= a.lease_until
    assert w.merged  # someone always ticks: the first run finds the first tick due


# -- on real git: plan --start, the record, and merges ------------------------------------


class Clockwork:
    """A fake clock for plan(): now() and sleep() that moves it."""

    def __init__(self, t: float) -> None:
        self.t = t
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def paced(fleet: Fleet, bare: Path, every: str = "10m", **run_: Any) -> None:
    """Set run.every on the origin's main, as a merged pull request would."""
    git = Git(bare)
    raw = json.loads(git.show("refs/heads/main", "state/config.json"))
    raw["run"] = {**raw.get("run", {}), "every": every, **run_}
    commit = git.write_commit(git.rev_parse("refs/heads/main"), "pace\n",
                              {"state/config.json": canonical.dumps(raw)}, [])
    git.run("update-ref", "refs/heads/main", commit)


def refs(bare: Path) -> dict[str, str]:
    return Git(bare).ref_tips(*[r.name for r in Git(bare).refs("refs/heads/")])


def tick_now(fleet: Fleet, tick: int) -> None:
    merge(fleet.path, allow_empty=True, tick=tick)


def test_a_second_run_in_the_same_slot_exits_3_and_writes_nothing(origin_fleet: tuple[Fleet, Path]) -> None:
    fleet, bare = origin_fleet
    paced(fleet, bare)
    c = Clockwork(T0 + 42)
    p = plan(fleet.path, start=True, now=c.now, by="run 1")
    assert p["due"] and p["tick"] == 1 and p["late_seconds"] == 42 and p["slot"] == "2027-01-15T08:00:00Z"
    assert p["start"] == {"id": "start", "tick": 1, "started": "2027-01-15T08:00:42Z", "by": "run 1",
                          "how": "schedule", "lease_until": "2027-01-15T09:00:42Z"}
    assert Git(bare).text("log", "-1", "--format=%s", f"refs/heads/{BRANCH}") == \
        "clock: tick 1 starts (schedule, run 1, 42s into its slot)"
    tick_now(fleet, 1)
    before = refs(bare)
    c.t += 300
    again = plan(fleet.path, start=True, hand_out=True, now=c.now, by="run 2")
    assert not again["due"] and again["reason"] == "paced-out" and again["next_due"] == "2027-01-15T08:10:00Z"
    assert again["start"] is None and refs(bare) == before  # wrote nothing
    c.t = T0 + 7 * EVERY + 5  # a late run: seven slots later, it ticks once
    late = plan(fleet.path, start=True, now=c.now, by="run 3")
    assert late["due"] and late["tick"] == 2 and late["late_seconds"] == 5
    tick_now(fleet, 2)
    c.t += 1
    assert not plan(fleet.path, start=True, now=c.now, by="run 4")["due"]


def test_the_cli_prints_the_plan_and_exits_3_when_not_due(origin_fleet: tuple[Fleet, Path]) -> None:
    fleet, bare = origin_fleet
    paced(fleet, bare, "1d")
    tick_now(fleet, 1)  # merged now, in today's slot, without a start record: its commit's time counts
    r = run(fleet, "plan", "--json", code=3)
    p = json.loads(r.stdout)
    assert p["due"] is False and p["reason"] == "paced-out" and p["every"] == "1d"
    assert p["matrix"]["include"] and p["tick"] == 2  # the whole plan, for a workflow to read
    assert "tick 2 is not due: tick 1 started at " in r.stderr
    assert json.loads(run(fleet, "plan", "--json", "--now").stdout)["reason"] == "by-hand"
    assert "--now and --wait" in run(fleet, "plan", "--now", "--wait", code=2).output


def test_two_runs_racing_for_one_tick_start_it_once(origin_fleet: tuple[Fleet, Path], tmp_path: Path) -> None:
    """Four runs, each on its own runner (its own clone and process), find the tick
    due at once: one records its start and goes on; the others exit 3, writing nothing."""
    fleet, bare = origin_fleet
    paced(fleet, bare)
    runs_ = []
    for i in range(4):
        subprocess.run(["git", "clone", "-q", str(bare), str(tmp_path / f"run{i}")], check=True)
        runs_.append(subprocess.Popen([sys.executable, "-m", "fleet", "plan", "--start", "--json"],
                                      cwd=tmp_path / f"run{i}", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    codes = [p.wait(timeout=120) for p in runs_]
    plans = [json.loads(p.stdout.read()) for p in runs_]
    assert sorted(codes) == [0, 3, 3, 3]
    [winner] = [p for p in plans if p["due"]]
    for p in plans:
        if p is not winner:
            assert p["reason"] == "in-progress" and p["start"] is None
            assert p["why"].startswith(f"tick 1 is under way: {winner['start']['by']} started it")
    log = Git(bare).text("log", "--format=%s", f"refs/heads/{BRANCH}").splitlines()
    assert len(log) == 1 and log[0].startswith("clock: tick 1 starts (schedule, ")  # one start, one commit


def test_a_merge_without_tick_leaves_a_tick_under_way_to_its_own_run(origin_fleet: tuple[Fleet, Path]) -> None:
    fleet, bare = origin_fleet
    assert plan(fleet.path, start=True, by="run 9")["due"]  # no pace: due, and now under way
    with pytest.raises(NothingToDo, match=r"tick 1 is under way: run 9 started it \(schedule\)"):
        merge(fleet.path, allow_empty=True)
    assert merge(fleet.path, allow_empty=True, tick=1).published  # the run's own merge names its tick


def test_fleet_run_starts_no_tick_another_run_started(tmp_path: Path) -> None:
    """A workflow's plan job recorded the start of tick 2 (`fleet plan --start`):
    a `fleet run` against the same origin merged tick 2 anyway, racing that run.
    It stops before any worker, says who holds the tick and until when, exits 3."""
    from conftest import fleet_cli

    from fleet.commands.init import init

    repo = tmp_path / "x"
    init(repo)
    assert fleet_cli(repo, "run", "--ticks", "1", "--workers", "1").returncode == 0
    assert fleet_cli(repo, "plan", "--start").returncode == 0
    head = Git(repo).rev_parse("refs/fleet/origin/main")
    p = fleet_cli(repo, "run", "--ticks", "2", "--workers", "1")
    assert p.returncode == 3 and "tick 2 did not start: it is under way" in p.stdout + p.stderr
    assert Git(repo).rev_parse("refs/fleet/origin/main") == head


def test_a_dispatched_run_waits_until_its_tick_is_due(origin_fleet: tuple[Fleet, Path]) -> None:
    fleet, bare = origin_fleet
    paced(fleet, bare)
    c = Clockwork(T0 + 100)
    assert plan(fleet.path, start=True, now=c.now, by="run 1")["due"]
    tick_now(fleet, 1)
    said: list[str] = []
    p = plan(fleet.path, start=True, mode="dispatched", wait=True, now=c.now, sleep=c.sleep, say=said.append,
             by="run 2")
    assert p["due"] and p["tick"] == 2 and p["mode"] == "dispatched" and c.slept and c.t >= T0 + EVERY
    assert 499 < p["waited_seconds"] < 501 and p["late_seconds"] < 1
    assert said == ["tick 2 is not due: tick 1 started at 2027-01-15T08:01:40Z, in this slot of run.every 10m; "
                    "the next is due at 2027-01-15T08:10:00Z; waiting 8m20s for it"]


def test_a_dispatched_run_starts_nothing_when_the_stop_switch_is_on(origin_fleet: tuple[Fleet, Path]) -> None:
    fleet, bare = origin_fleet
    paced(fleet, bare)
    p = plan(fleet.path, start=True, mode="dispatched", wait=True, stopped="the stop switch is on (FLEET_STOP=1)")
    assert not p["due"] and p["reason"] == "stopped" and "FLEET_STOP" in p["why"]
    assert Git(bare).rev_parse(f"refs/heads/{BRANCH}") is None
    paced(fleet, bare, self_dispatch=False)
    p = plan(fleet.path, start=True, mode="dispatched", wait=True)
    assert not p["due"] and "run.self_dispatch is false" in p["why"]
    assert plan(fleet.path, start=True, mode="schedule", by="cron")["due"]  # cron still ticks


def test_status_says_when_the_next_tick_is_due(origin_fleet: tuple[Fleet, Path]) -> None:
    fleet, bare = origin_fleet
    paced(fleet, bare, "1d")
    assert plan(fleet.path, start=True)["due"]
    tick_now(fleet, 1)
    s = json.loads(run(fleet, "status", "--json").output)
    assert s["clock"]["due"] is False and s["clock"]["reason"] == "paced-out" and s["clock"]["every"] == "1d"
    assert s["clock"]["started"]["tick"] == 1
    assert "next tick: tick 2 is not due: tick 1 started at " in run(fleet, "status").output


def test_a_malformed_pace_or_budget_on_main_is_one_line_naming_the_file_and_the_key(fleet: Fleet) -> None:
    for change, line in (({"run": {"every": "ten minutes"}},
                          "fleet: state/config.json: run.every: 'ten minutes' is not a duration (a number and a unit: "
                          "90s, 10m, 1h, 1d, or 1h30m)\n"),
                         ({"budgets": {"day": {"usd": -5}}},
                          "fleet: state/config.json: at /budgets/day/usd: -5 is less than the minimum of 0 "
                          "(schemas/config.schema.json)\n")):
        raw = json.loads(fleet.read("state/config.json"))
        raw.update(change)
        before = fleet.main()
        fleet.git.run("update-ref", "refs/heads/main", fleet.git.write_commit(
            before, "a bad config\n", {"state/config.json": canonical.dumps(raw)}, []))
        for args in (("plan",), ("status",), ("run", "--ticks", "1")):
            r = fleet.fleet(*args)
            assert r.exit_code == 1 and r.output.startswith(line.rstrip("\n")) and r.output.count("\n") == 1, \
                (args, r.output)
        fleet.git.run("update-ref", "refs/heads/main", before)


def test_the_plan_writes_how_late_its_tick_started_to_the_job_summary(origin_fleet: tuple[Fleet, Path],
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fleet, bare = origin_fleet
    paced(fleet, bare, "1d")
    page = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(page))
    r = run(fleet, "plan", "--start", "--json")
    p = json.loads(r.stdout)
    text = page.read_text()
    assert "### fleet plan: tick 1 starts" in text
    assert "| due | how | every | slot | started | late | next due | spent today | left today |" in text
    row = text.splitlines()[4]
    assert row.startswith(f"| yes | schedule | 1d | {p['slot']} | {p['at']} | ") and "no budget" in row
    assert p["why"] in text
    tick_now(fleet, 1)
    page.write_text("")
    run(fleet, "plan", "--start", code=3)
    assert "### fleet plan: tick 2 is not started" in page.read_text() and "| no | schedule | 1d |" in page.read_text()


# -- durations: run.every and duration flags have a documented maximum -----------------------

@settings(max_examples=300, deadline=None)
@given(st.tuples(*[st.one_of(st.none(), st.integers(0, 10**6), st.integers(0, 10**20)) for _ in "dhms"]),
       st.floats(0, 4 * 366 * 86400), st.sampled_from([None, 0.0, 1.0, 365 * 86400.0]))
def test_every_duration_config_accepts_can_be_planned_and_any_other_is_one_line(
        parts: tuple[int | None, ...], offset: float, last: float | None) -> None:
    """A run.every that config parse accepts is planned and rendered without error (no
    OverflowError or year out of range); any other is refused, naming the file and key."""
    from fleet.config import MAX_DURATION, parse
    from fleet.errors import FleetError

    text = "".join(f"{n}{u}" for n, u in zip(parts, "dhms", strict=True) if n is not None)
    seconds = sum(n * u for n, u in zip(parts, (86400, 3600, 60, 1), strict=True) if n is not None)
    raw = json.loads((Path(__file__).resolve().parents[1] / "state" / "config.json").read_bytes())
    raw["run"] = {"every": text}
    try:
        cfg = parse(canonical.dumps(raw), "state/config.json")
    except FleetError as e:
        msg = str(e)
        assert msg.startswith("state/config.json: run.every: ") and "\n" not in msg
        assert not text or len(text) > 32 or seconds < 1 or seconds > MAX_DURATION, msg
        if text and len(text) <= 32 and seconds > MAX_DURATION:
            assert "longer than the longest pace, 366d" in msg
        return
    assert 1 <= seconds <= MAX_DURATION and cfg.run.every == seconds
    at = T0 + offset
    d = decide(at, 2, cfg.run.every, None if last is None else at - last, None)
    assert json.dumps(d.to_json()) and d.why


def test_a_pace_over_the_maximum_is_refused_by_validate_plan_and_status(fleet: Fleet) -> None:
    for every in ("99999999999999999999d", "3000000d", "367d", "366d1s"):
        raw = json.loads(fleet.read("state/config.json"))
        raw["run"] = {"every": every}
        before = fleet.main()
        fleet.git.run("update-ref", "refs/heads/main", fleet.git.write_commit(
            before, "a long pace\n", {"state/config.json": canonical.dumps(raw)}, []))
        (fleet.path / "state/config.json").write_bytes(canonical.dumps(raw))
        for args in (("validate",), ("plan",), ("plan", "--start"), ("plan", "--wait"), ("status",)):
            r = run(fleet, *args, code=1)
            assert r.output.startswith(f"fleet: state/config.json: run.every: '{every}' is longer than the longest "
                                       "pace, 366d") and r.output.count("\n") == 1, (args, r.output)
        fleet.git.run("update-ref", "refs/heads/main", before)
        fleet.git.run("checkout", "--", "state/config.json")


@pytest.mark.parametrize("args, says", [
    (["run", "--deadline", "nan"], "--deadline: nan is not a number of seconds"),
    (["run", "--deadline", "inf"], "--deadline: inf is not a number of seconds"),
    (["run", "--deadline", "1e300"], "--deadline: 1e+300 is not a number of seconds"),
    (["run", "--deadline", "-1"], "--deadline: -1.0 is not a number of seconds"),
    (["run", "--deadline", "0"], "--deadline: 0.0 is not a number of seconds"),
    (["watchdog", "--grace", "nan"], "--grace: nan is not a number of seconds"),
])
def test_a_duration_flag_out_of_range_is_a_usage_error_naming_it(fleet: Fleet, args: list[str], says: str) -> None:
    head = fleet.main()
    r = run(fleet, *args, code=2)
    assert says in r.output and r.output.count("\n") == 1, r.output
    assert fleet.main() == head


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 3), st.integers(1, 2**53 - 3))  # (beyond 2**53, --after is out of its range: exit 2 too)
def test_after_beyond_mains_tick_is_refused_naming_it(tmp_path_factory: pytest.TempPathFactory, merged: int,
                                                       beyond: int) -> None:
    """`plan --wait --after N` with main at tick < N said 'tick M is due', exit 0: no
    merge of a tick main has not reached dispatched it."""
    from fleet.commands.init import init

    path = tmp_path_factory.mktemp("f") / "f"
    init(path)
    for t in range(1, merged + 1):
        merge(path, allow_empty=True, tick=t)
    f = Fleet(path)
    r = run(f, "plan", "--wait", "--after", str(merged + beyond), code=2)
    assert r.output.startswith(f"fleet: --after {merged + beyond}: beyond the fleet's main, which is at tick "
                               f"{merged}") and r.output.count("\n") == 1, r.output
    assert Git(path).rev_parse(f"refs/heads/{BRANCH}") is None  # nothing started
    assert json.loads(run(f, "plan", "--wait", "--after", str(merged), "--json").output)["tick"] == merged + 1


@settings(max_examples=60, deadline=None)
@given(started=st.integers(0, 253402300799), hold=st.integers(-10**9, 10**10))
def test_a_start_record_that_would_hold_a_tick_past_what_fleet_writes_is_refused(started: int, hold: int) -> None:
    """A start record written by hand with lease_until in year 9999 held every tick off
    until then, silently. A record is taken only if its lease is within what fleet writes
    (twice the longest deadline and half an hour) after its start; else it is named in
    one line, as any record fleet cannot take."""
    from fleet.clock import MAX_LEASE, check_start
    from fleet.errors import FleetError

    fmt = "%Y-%m-%dT%H:%M:%SZ"
    until = started + hold
    if not 0 <= until <= 253402300799:
        return
    doc = {"id": "start", "tick": 5, "by": "x", "how": "by hand",
           "started": time.strftime(fmt, time.gmtime(started)), "lease_until": time.strftime(fmt, time.gmtime(until))}
    ok = 0 <= hold <= MAX_LEASE
    try:
        check_start(doc, "fleet/clock:clock/start.json")
        assert ok, doc
    except FleetError as e:
        assert not ok, (doc, e)
        assert str(e).startswith("fleet/clock:clock/start.json: ") and "\n" not in str(e)
