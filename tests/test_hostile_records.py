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
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleet import bus as bus_mod
from fleet import canonical
from fleet import config as config_mod
from fleet.bus import Bus, parse_stamp, stamp, status_of
from fleet.errors import FleetError
from fleet.repo import FleetRepo
from fleet.store import now
from fleet.tasks import MAX_FENCE
from tests.conftest import Fleet, run
from tests.test_bus import _template

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
    import os
    import tempfile

    git = bus.git
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        for path, (mode, data) in files.items():
            if mode == "160000":
                sha = str(data)
            else:
                sha = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=git.path, input=data, env=env,
                                     capture_output=True, check=True).stdout.decode().strip()
            subprocess.run(["git", "update-index", "--add", "--cacheinfo", f"{mode},{sha},{path}"], cwd=git.path,
                           env=env, check=True)
        tree = subprocess.run(["git", "write-tree"], cwd=git.path, env=env, capture_output=True,
                              check=True).stdout.decode().strip()
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
