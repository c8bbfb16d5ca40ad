"""Records fleet reads from branches anyone can push to (bus lanes, the task queue),
treated as hostile bytes: a stamp that matches the pattern but is no real time, one
from the far future, an integer at and past its bound, a name with a control
character. Each is named (quarantined) where it is read, the rest goes on, and no
command crashes; what fleet writes back it can read again. Plus names a person
gives that fleet would write as a file name Windows cannot hold (CON, nul.txt).

Generated where inputs vary (hypothesis), on real git where a command reads them."""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleet import bus as bus_mod
from fleet import canonical, schemas
from fleet import config as config_mod
from fleet.bus import Bus, lane_of, parse_stamp, stamp, status_of
from fleet.commands.task import _task_line
from fleet.errors import FleetError
from fleet.ids import WINDOWS_DEVICES, printable
from fleet.repo import FleetRepo
from fleet.store import now
from fleet.tasks import BRANCH, MAX_FENCE, Queue, Task, claim, new_task, returned, task_path
from fleet.tasks import parse_stamp as task_stamp
from tests.commands.test_task import add
from tests.conftest import Fleet, hand_tree, run
from tests.test_bus import _template
from tests.test_task_defects import doc_of, hand_edit

ROOT = Path(__file__).resolve().parents[1]
CFG = config_mod.parse((ROOT / "state/config.json").read_bytes())
AT = _dt.datetime(2026, 11, 22, 12, 0, tzinfo=_dt.UTC)
MAX_AHEAD = 300  # fleet.bus.MAX_AHEAD: how far ahead of the reader's clock a heartbeat may be
MAX_COUNT = MAX_FENCE  # fleet.tasks.MAX_COUNT: the schema's bound of attempts and failures

# Characters that would forge a line or hide a name: every ASCII control, C1 controls,
# bidirectional overrides, line and paragraph separators.
HIDDEN = st.one_of(st.characters(min_codepoint=0, max_codepoint=0x1F), st.just("\x7f"),
                   st.characters(min_codepoint=0x80, max_codepoint=0x9F),
                   st.sampled_from(["\u202e", "\u2066", "\u2028", "\u2029", "\ufeff"]))
NAME = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}[a-z0-9]\Z")


@st.composite
def hostile_names(draw: st.DrawFn) -> str:
    name = draw(NAME)
    at = draw(st.integers(0, len(name)))
    return name[:at] + draw(HIDDEN) + name[at:]


def _digits(n: int) -> st.SearchStrategy[str]:
    return st.integers(0, 10**n - 1).map(lambda v: f"{v:0{n}d}")


@st.composite
def pattern_stamps(draw: st.DrawFn, fraction: int = 6, zone: bool = False) -> str:
    """Any string the schemas' stamp pattern lets through: real dates, and
    2026-02-30, 9999-99-99T99:99:99, year 0000 among them."""
    year = draw(st.one_of(st.sampled_from(["0000", "0001", "2026", "9999"]), _digits(4)))
    fields = [draw(st.one_of(st.sampled_from(["00", "01", "12", "13", "28", "29", "30", "31", "59", "60", "99"]),
                             _digits(2))) for _ in range(5)]
    text = f"{year}-{fields[0]}-{fields[1]}T{fields[2]}:{fields[3]}:{fields[4]}"
    if fraction:
        text += "." + draw(_digits(fraction))
    if zone and draw(st.booleans()):
        sign = draw(st.sampled_from("+-"))
        return text + f"{sign}{draw(st.sampled_from(['00', '14', '23', '99']))}:{draw(_digits(2))}"
    return text + "Z"


def _real(ts: str) -> _dt.datetime | None:
    try:
        return _dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.UTC)
    except ValueError:
        return None


# -- stamps on the bus (#3) ----------------------------------------------------------
@settings(max_examples=500, deadline=None)
@given(text=st.one_of(pattern_stamps(), st.text(max_size=40)))
@example("2026-02-30T00:00:00.000000Z")
@example("9999-99-99T99:99:99.000000Z")
def test_a_bus_stamp_is_a_real_time_or_a_one_line_refusal_never_a_crash(text: str) -> None:
    try:
        when = parse_stamp(text)
    except FleetError as e:
        assert _real(text) is None and "\n" not in str(e)
    else:
        assert when == _real(text)


def _lane(bus: Bus, name: str, files: dict[str, tuple[str, bytes | str]]) -> None:
    """A lane written by hand: path -> (git mode, content; for a submodule, the commit it names)."""
    git = bus.git
    tree = hand_tree(git, files)
    commit = git.text("commit-tree", tree, "-m", "by hand")
    assert git.update_ref(f"refs/heads/fleet-bus/out/{name}", commit, None)


_BEAT = st.fixed_dictionaries({
    "name": st.one_of(NAME, hostile_names()),
    "kind": st.one_of(st.sampled_from(["worker", "agent", "machine"]), st.just("mach\x1bine")),
    "ts": st.one_of(st.just("RECENT"), st.just("AHEAD"), pattern_stamps(), st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
})


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(beats=st.lists(_BEAT, min_size=1, max_size=5))
def test_every_heartbeat_file_is_read_or_named_and_status_never_crashes(
        tmp_path_factory: pytest.TempPathFactory, beats: list[dict[str, Any]]) -> None:
    root = tmp_path_factory.mktemp("beats")
    shutil.copytree(_template(tmp_path_factory), root / "f", symlinks=True)
    repo = FleetRepo(root / "f")
    bus = Bus(repo)
    bus.beat("good-one", "machine", lane="good")
    at = now()
    files = {}
    for i, b in enumerate(beats):
        b = dict(b, ts={"RECENT": stamp(at), "AHEAD": stamp(at + _dt.timedelta(seconds=MAX_AHEAD + 60))}.get(
            b["ts"], b["ts"]) if isinstance(b["ts"], str) else b["ts"])
        beats[i] = b
        doc = {**b, "name": f"h{i}"} if b["name"].isprintable() and b["name"].isascii() else b
        files[f"beat/h{i}.json"] = ("100644", json.dumps(doc).encode())  # any integer: hand-written bytes
    _lane(bus, "hostile", files)
    newest, bad = bus.heartbeats(at=at)
    named = {q.where: q.reason for q in bad}
    for i, b in enumerate(beats):
        where = f"fleet-bus/out/hostile:beat/h{i}.json"
        when = _real(b["ts"]) if isinstance(b["ts"], str) else None
        fine = (b["name"].isprintable() and b["name"].isascii() and b["kind"] != "mach\x1bine" and when is not None
                and (when - at).total_seconds() <= MAX_AHEAD)
        assert (f"h{i}" in newest) == fine and (where in named) != fine, (b, named)
        assert all("\n" not in r and r.isprintable() for r in named.values())
    assert "good-one" in newest and bus_mod.MAX_AHEAD == MAX_AHEAD
    s = status_of(repo, bus.cfg, at)  # the walkthrough's crash: ValueError from a stamp that is no date
    assert s["error"] is None and {w["name"] for w in s["who"]} >= {"good-one"}
    assert len(s["quarantined"]) == len(bad)


def test_fleet_status_names_each_bad_heartbeat_and_goes_on(fleet: Fleet) -> None:
    """The walkthrough's lane: a beat on 2026-02-30, one from year 9999, one whose ts is a number."""
    bus = Bus(FleetRepo(fleet.path))
    bus.beat("lap-ok", "machine", lane="good")
    _lane(bus, "evil", {
        "beat/lap.json": ("100644", b'{"kind":"machine","name":"lap","ts":"2026-02-30T00:00:00.000000Z"}'),
        "beat/far.json": ("100644", b'{"kind":"machine","name":"far","ts":"9999-12-31T23:59:59.000000Z"}'),
        "beat/num.json": ("100644", b'{"kind":"machine","name":"num","ts":12}'),
    })
    out = run(fleet, "status").output
    assert "heartbeats: lap-ok alive" in out
    for name, why in (("lap", "is not a UTC time"), ("far", "a heartbeat from the future"), ("num", "ts: 12")):
        [line] = [x for x in out.splitlines() if f"fleet-bus/out/evil:beat/{name}.json" in x]
        assert line.startswith("heartbeat quarantined: ") and why in line, line
    who = json.loads(run(fleet, "status", "--json").stdout)["heartbeats"]
    assert [w["name"] for w in who["who"]] == ["lap-ok"] and len(who["quarantined"]) == 3


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stamps=st.lists(pattern_stamps(), min_size=1, max_size=4))
def test_a_message_whose_ts_is_no_real_time_is_quarantined_not_delivered(
        tmp_path_factory: pytest.TempPathFactory, stamps: list[str]) -> None:
    root = tmp_path_factory.mktemp("msgts")
    shutil.copytree(_template(tmp_path_factory), root / "f", symlinks=True)
    bus = Bus(FleetRepo(root / "f"))
    bus.send("ada", "basil", "note", "hi", lane="good", msg_id="m-good")
    _lane(bus, "hostile", {f"to/basil/m-h{i}.json": ("100644", canonical.dumps(
        {"id": f"m-h{i}", "ts": ts, "from": "eve", "to": "basil", "type": "note", "body": "x"}))
        for i, ts in enumerate(stamps)})
    box = bus.inbox("basil")
    got = {m.id for m in box.messages}
    named = {q.where for q in box.quarantined}
    assert "m-good" in got
    for i, ts in enumerate(stamps):
        assert (f"m-h{i}" in got) == (_real(ts) is not None)
        assert (f"fleet-bus/out/hostile:to/basil/m-h{i}.json" in named) == (_real(ts) is None)


def test_a_submodule_on_a_lane_is_named_as_a_link_is(fleet: Fleet) -> None:
    """(a gitlink has no content git lists: it was passed over without a word)"""
    bus = Bus(FleetRepo(fleet.path))
    bus.send("ada", "basil", "note", "hi", lane="good", msg_id="m-good")
    head = bus.git.text("rev-parse", "HEAD")
    _lane(bus, "evil", {"to/basil/m-sub.json": ("160000", head), "beat/w9.json": ("160000", head)})
    box = bus.inbox("basil")
    assert [m.id for m in box.messages] == ["m-good"]
    assert [(q.where, "submodule" in q.reason) for q in box.quarantined] == [("fleet-bus/out/evil:to/basil/m-sub.json",
                                                                               True)]
    _, bad = bus.heartbeats()
    assert [(q.where, "submodule" in q.reason) for q in bad] == [("fleet-bus/out/evil:beat/w9.json", True)]


# -- integers of a task record (#4) ----------------------------------------------------
BOUNDS = {"priority": 4, "fence": MAX_FENCE, "attempts": MAX_COUNT, "failures": MAX_COUNT}
NEAR = st.one_of(*(st.integers(b - 2, b + 2) for b in (0, 4, MAX_FENCE, 2**63, 2**64 - 1)),
                 st.integers(-(2**70), 2**70))


def _doc(**kw: Any) -> dict[str, Any]:
    return {"id": "tk-x", "title": "t", "status": "pending", "priority": 2, "deps": [], "for": None, "fence": 0,
            "attempts": 0, "failures": 0, "claimed_by": None, "claimed_at": None, "lease_until": None,
            "not_before": None, "created_at": "2026-11-22T10:00:00.000Z", "updated_at": "2026-11-22T10:00:00.000Z",
            **kw}


@settings(max_examples=600, deadline=None)
@given(key=st.sampled_from(sorted(BOUNDS)), value=NEAR, held=st.booleans())
def test_every_integer_of_a_task_is_read_only_within_its_bound_and_written_back_readable(
        key: str, value: int, held: bool) -> None:
    """A task fleet reads is one it can count on: each step that adds one (a claim, a
    failure, a watchdog's return) writes a record the queue reads back."""
    doc = _doc(**{key: value})
    if held:
        doc.update(status="in-progress", fence=max(doc["fence"], 1) if key != "fence" else value, claimed_by="ada",
                   claimed_at="2026-11-22T11:00:00.000Z", lease_until="2026-11-22T11:30:00.000Z")
    try:
        t = Task.parse(doc, "tk-x.json")
    except FleetError as e:
        assert not 0 <= value <= BOUNDS[key] or (held and key == "fence" and value == 0), (key, value)
        assert f"at /{key}" in str(e) or (held and key == "fence")
        return
    assert 0 <= value <= BOUNDS[key]
    steps = [returned(t, CFG, AT, "lease ran out")[0]] if held else []
    if not held and t.fence < MAX_FENCE:
        steps.append(claim(Queue("tip", {t.id: t}), CFG, AT, "ada", task_id=t.id).task)
    for new in steps:
        data = canonical.dumps(new.to_json())  # the crash: "Integer exceeds 64-bit range"
        Task.parse(canonical.load(data, "back"), "back")


@pytest.mark.parametrize("key", ["failures", "attempts"])
@pytest.mark.parametrize("value", [MAX_COUNT + 1, 2**64 - 1])
def test_a_counter_past_its_bound_is_quarantined_and_the_queue_goes_on(
        origin_fleet: tuple[Fleet, Path], tmp_path: Path, key: str, value: int) -> None:
    """The walkthrough: two expired leases, one task's failures at 2^64-1; the watchdog
    crashed on writing it back (+1) and returned neither."""
    f, bare = origin_fleet
    a, b = add(f, "a", "--id", "tk-a"), add(f, "b", "--id", "tk-b")
    c = add(f, "c", "--id", "tk-c")
    held = {"status": "in-progress", "fence": 1, "attempts": 1, "claimed_by": "ada",
            "claimed_at": "2000-01-01T00:00:00.000Z", "lease_until": "2000-01-01T00:00:00.000Z"}
    hand_edit(f, bare, {a: {**doc_of(bare, a), **held, key: value}, b: {**doc_of(bare, b), **held}},
              tmp_path / "person")
    where = f"{BRANCH}:{task_path(a)}"
    r = run(f, "watchdog")
    assert f"returned {b}: lease of ada" in r.output
    assert f"{where}: at /{key}: {value} is greater than the maximum of {MAX_COUNT}" in r.output
    got = json.loads(run(f, "task", "claim", "--as", "ada", "--json").stdout)
    assert got["id"] == c
    assert doc_of(bare, a)[key] == value  # left in place, not read


def test_a_task_fleet_writes_after_a_claim_at_the_counter_bound_stays_readable() -> None:
    t = Task.parse(_doc(attempts=MAX_COUNT, failures=MAX_COUNT), "tk-x.json")
    step = claim(Queue("tip", {t.id: t}), CFG, AT, "ada", task_id=t.id)
    assert step.task.attempts == MAX_COUNT
    back, _ = returned(replace(step.task), CFG, AT, "x")
    assert back.failures == MAX_COUNT
    Task.parse(back.to_json(), "back")


_RECORDS = {
    "task": _doc(),
    "worker": {"worker": "w1", "status": "alive", "last_tick": 1, "since": 1, "reason": "x",
               "updated_at": "2026-11-22T10:00:00.000Z"},
    "heartbeat": {"name": "h1", "kind": "machine", "ts": "2026-11-22T10:00:00.000000Z", "tick": 1},
    "clock": {"id": "start", "tick": 1, "started": "2026-11-22T10:00:00Z", "lease_until": "2026-11-22T10:10:00Z",
              "by": "x", "how": "by hand"},
    "relay": {"id": "chain", "after": 0, "seq": 1, "by": "x", "at": "2026-11-22T10:00:00Z"},
}
INTEGERS = [("task", "priority", 0, 4), ("task", "fence", 0, MAX_FENCE), ("task", "attempts", 0, MAX_COUNT),
            ("task", "failures", 0, MAX_COUNT), ("worker", "last_tick", 0, MAX_FENCE), ("worker", "since", 0, MAX_FENCE),
            ("heartbeat", "tick", 0, MAX_FENCE), ("clock", "tick", 1, MAX_FENCE), ("relay", "after", 0, MAX_FENCE),
            ("relay", "seq", 1, MAX_FENCE)]


@settings(max_examples=300, deadline=None)
@given(case=st.sampled_from(INTEGERS), value=NEAR)
def test_every_integer_of_every_record_fleet_reads_is_bounded_by_its_schema(case: tuple[str, str, int, int],
                                                                            value: int) -> None:
    """The queue's, the bus's and the clock's records: no integer past what any JSON
    reader holds exactly (and fleet adds one to without passing what it writes)."""
    schema, key, low, high = case
    found = schemas.first_error(schemas.protocol(schema), {**_RECORDS[schema], key: value})
    assert (found is None) == (low <= value <= high), (schema, key, value, found)


# -- names shown to a person (#5) --------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(key=st.sampled_from(["claimed_by", "for"]), name=hostile_names(), held=st.booleans())
def test_a_name_of_a_task_with_a_hidden_character_is_refused_and_never_printed_raw(
        key: str, name: str, held: bool) -> None:
    doc = _doc(**{key: name})
    if held:
        doc.update(status="in-progress", fence=1, claimed_at="2026-11-22T11:00:00.000Z",
                   lease_until="2026-11-22T11:30:00.000Z", claimed_by=doc["claimed_by"] or "ada")
    with pytest.raises(FleetError, match=f"at /{key}"):
        Task.parse(doc, "tk-x.json")
    # and were one read all the same (a queue from before the rule), its line is still one line
    t = Task.of(doc)
    line = _task_line(dict(t.to_json(), wave=0))
    assert "\n" not in line and printable(name, 130) in line and line.isprintable()


def test_a_forged_holder_is_quarantined_not_printed_as_a_line_of_its_own(origin_fleet: tuple[Fleet, Path],
                                                                         tmp_path: Path) -> None:
    f, bare = origin_fleet
    a, b = add(f, "a", "--id", "tk-a"), add(f, "b", "--id", "tk-b")
    forged = "ada\ntk-zz          P0 W0 done        bob  paid"
    hand_edit(f, bare, {a: dict(doc_of(bare, a), status="in-progress", fence=1, attempts=1, claimed_by=forged,
                                claimed_at="2000-01-01T00:00:00.000Z", lease_until="2000-01-01T00:00:00.000Z"),
                        b: dict(doc_of(bare, b), **{"for": "ada\x1b[2J"})}, tmp_path / "person")
    for args, code in ((("task", "list"), 0), (("watchdog",), 3)):  # (3: the watchdog found nothing to do)
        out = run(f, *args, code=code).output
        assert not any(x.startswith("tk-zz") for x in out.splitlines()) and "\x1b" not in out
        assert f"{BRANCH}:{task_path(a)}: at /claimed_by" in out and f"{BRANCH}:{task_path(b)}: at /for" in out


# -- stamps of a task (#3: every parse of a stamp from hostile data) ------------------------
@settings(max_examples=500, deadline=None)
@given(key=st.sampled_from(["created_at", "updated_at", "not_before", "done_at", "escalated_at"]),
       ts=pattern_stamps(fraction=3, zone=True))
@example(key="created_at", ts="9999-12-31T23:59:59.000-14:00")
@example(key="not_before", ts="0001-01-01T00:00:00.000+14:00")
def test_a_task_stamp_fleet_reads_is_one_it_can_compute_with(key: str, ts: str) -> None:
    """The pattern lets offsets through: 9999-12-31T23:59:59-14:00 is a real time, but
    past year 9999 in UTC, where a report buckets it by day."""
    try:
        t = Task.parse(_doc(**{key: ts}), "tk-x.json")
    except FleetError as e:
        assert f"at /{key}" in str(e)
        return
    when = task_stamp(getattr(t, key))
    when.astimezone(_dt.UTC)
    assert (when < AT) or (when >= AT)


# -- names fleet writes as a file name (#6b) -------------------------------------------------
DEVICES = st.tuples(st.sampled_from(sorted(WINDOWS_DEVICES)), st.sampled_from(["", ".json", ".x", ".tar.gz"]),
                    st.booleans()).map(lambda t: (t[0].lower() if t[2] else t[0]) + t[1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=DEVICES)
def test_a_device_name_is_refused_wherever_a_person_names_a_file(tmp_path_factory: pytest.TempPathFactory,
                                                                  name: str) -> None:
    root = tmp_path_factory.mktemp("dev")
    shutil.copytree(_template(tmp_path_factory), root / "f", symlinks=True)
    repo = FleetRepo(root / "f")
    bus = Bus(repo)
    before = bus.lanes()
    with pytest.raises(FleetError, match="device"):
        bus.send("ada", "basil", "note", "hi", lane="good", msg_id=name)
    with pytest.raises(FleetError, match="device"):
        bus.beat(name, "machine", lane="good")
    with pytest.raises(FleetError, match="device"):
        lane_of(repo, name)
    with pytest.raises(FleetError, match="device"):
        new_task({"title": "x", "id": name}, "tasks.jsonl:1", CFG, AT)
    assert bus.lanes() == before  # nothing was pushed
    new_task({"title": "x", "id": f"x{name}"}, "tasks.jsonl:1", CFG, AT)  # a name that only ends so is fine


def test_msg_send_with_a_device_id_is_one_line_and_sends_nothing(fleet: Fleet) -> None:
    r = run(fleet, "msg", "send", "--id", "CON", "--from", "ada", "--to", "basil", "--body", "hi", code=1)
    assert r.output.count("\n") == 1 and "'CON'" in r.output and "device" in r.output
    assert Bus(FleetRepo(fleet.path)).inbox("basil").messages == []
