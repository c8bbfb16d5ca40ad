"""A person's commit pushed to the fleet's REMOTE main, where fleet cannot refuse the push.

A local main is judged before it is adopted (fleet.outside.check_adoption).
A main that moved on the remote is judged where it is read: `fleet run` and
`fleet merge` stop on a change fleet refuses, in one line naming the commit,
the file, the rule and how to undo it, and write nothing; `fleet status`
names it under "needs you" and shows the fleet where the engine left it;
`fleet replay --check` fails naming it; `fleet log` lists the person's change.

The refused changes are generated: names that are not UTF-8 at any place
under state/ and schemas/, Fleet-Tick trailers with any tick number, and the
merge engine's own files (the clock, the ledger, the quarantine, the held
conflicts) damaged in any way. Every case starts from a copy of one fleet
that `fleet run` took to tick 1, with its embedded origin as the remote.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Fleet, fleet_cli, run
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from fleet import canonical
from fleet.commands.init import init
from fleet.ids import printable
from fleet.outside import FORGED, NOT_UTF8

# Each example copies a fleet and runs a dozen commands: a few examples, not shrunk for minutes.
SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck),
                    phases=[Phase.explicit, Phase.reuse, Phase.generate])


# -- the fleet and the person ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ticked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fleet at tick 1, run by `fleet run` (its main in .git/fleet/origin.git)."""
    path = tmp_path_factory.mktemp("ticked") / "fleet"
    init(path)
    p = fleet_cli(path, "run", "--ticks", "1", "--workers", "1")
    assert p.returncode == 0, p.stderr
    return path


@pytest.fixture
def copies(ticked: Path, tmp_path: Path) -> Iterator[Any]:
    """A fresh copy of the ticked fleet for each call (one per hypothesis example)."""
    made: list[Path] = []

    def copy() -> Fleet:
        dest = tmp_path / f"copy{len(made)}"
        shutil.copytree(ticked, dest, symlinks=True)
        made.append(dest)
        return Fleet(dest)

    yield copy
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


def origin(f: Fleet) -> Path:
    return f.path / ".git" / "fleet" / "origin.git"


def git(where: Path, *args: str, input: bytes | None = None) -> bytes:
    return subprocess.run(["git", *args], cwd=where, input=input, check=True, capture_output=True).stdout


def refs(f: Fleet) -> bytes:
    """Every ref of the remote, with its commit: what "nothing was written" means there."""
    return git(origin(f), "for-each-ref", "--format=%(refname) %(objectname)")


def remote_main(f: Fleet) -> str:
    return git(origin(f), "rev-parse", "refs/heads/main").decode().strip()


def push_commit(f: Fleet, files: dict[bytes, bytes | None], message: bytes, who: bytes = b"Pat") -> str:
    """A person's commit on the remote's main, as a push from a clone would put it there:
    files written (or deleted, for None), any bytes in names, message and author."""
    parent = remote_main(f)
    stream = [b"commit refs/heads/main\n", b"author " + who + b" <pat@example.com> 1767000000 +0000\n",
              b"committer Pat <pat@example.com> 1767000000 +0000\n", b"data %d\n" % len(message), message, b"\n",
              b"from " + parent.encode() + b"\n"]
    for path, data in files.items():
        if data is None:
            stream.append(b"D " + path + b"\n")
        else:
            stream += [b"M 100644 inline " + path + b"\n", b"data %d\n" % len(data), data, b"\n"]
    git(origin(f), "fast-import", "--quiet", input=b"".join(stream))
    sha = remote_main(f)
    assert sha != parent
    return sha


def read_remote(f: Fleet, rel: str) -> bytes:
    return git(origin(f), "show", f"main:{rel}")


def refused_everywhere(f: Fleet, commit: str, named: str, rule: str) -> None:
    """The commands a person runs, each in turn: run and merge stop in one line that
    names the commit, the file and the rule and says how to undo it; status names it
    under "needs you"; replay --check fails naming it; log and the others do not break.
    The remote's refs are the same after each."""
    before = refs(f)
    for args in (("merge",), ("merge", "--allow-empty"), ("run", "--ticks", "1", "--workers", "1")):
        r = run(f, *args, code=1)
        assert r.stdout == "", (args, r.stdout)
        [line] = r.stderr.splitlines()
        assert named in line and rule in line and commit[:12] in line, (args, line)
        assert f"git revert {commit[:12]}" in line, line
        assert refs(f) == before, args
    s = run(f, "status")
    needs = [ln for ln in s.stdout.splitlines() if ln.startswith("needs you: ")]
    assert len(needs) == 1 and named in needs[0] and commit[:12] in needs[0] and rule in needs[0], s.stdout
    data = json.loads(run(f, "status", "--json").stdout)
    assert data["refused"]["commit"] == commit and data["tick"] == 1  # the fleet where the engine left it
    r = run(f, "replay", "--check", code=1)
    assert commit[:12] in r.stdout and "refused" in r.stdout, r.stdout
    r = f.fleet("plan")  # the plan job starts no worker on it (a workflow's plan decides the tick)
    assert r.exit_code == 1 and commit[:12] in r.output and "no tick starts on it" in r.output, r.output
    assert len(r.output.splitlines()) == 1, r.output
    for args in (("log",), ("plan",), ("watchdog",), ("validate",), ("task", "list")):
        r = f.fleet(*args)
        assert "Traceback" not in r.output and "internal error" not in r.output, (args, r.output)
        assert r.exit_code in (0, 1, 3), (args, r.output)
    assert refs(f) == before


# -- 1. names that are not UTF-8 ------------------------------------------------------------------


def _not_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


_BAD_NAMES = st.binary(min_size=1, max_size=16).filter(
    lambda b: _not_utf8(b) and b"/" not in b and b"\0" not in b and b"\n" not in b and not b.startswith(b'"'))
_PLACES = st.sampled_from([b"state/posts/", b"state/", b"state/newfolder/", b"state/posts/ab/", b"schemas/",
                           b"state/resolutions/", b"state/ledger/1/", b"state/conflicts/", b"state/quarantine/1/"])


@given(place=_PLACES, name=_BAD_NAMES, suffix=st.sampled_from([b".json", b"", b".jsonl"]),
       content=st.sampled_from([b"{}", b'{"id": "x"}\n', b"", b"\xff\xfe"]))
@SETTINGS
def test_a_name_that_is_not_utf8_on_the_remote_main_is_refused_by_name(
        copies: Any, place: bytes, name: bytes, suffix: bytes, content: bytes) -> None:
    f = copies()
    raw = place + name + suffix
    commit = push_commit(f, {raw: content}, b"oops\n")
    shown = printable(raw.decode("utf-8", "surrogateescape"))
    rule = "not UTF-8" if not raw.startswith((b"state/ledger/", b"state/conflicts/", b"state/quarantine/")) \
        else "only by the merge engine"
    refused_everywhere(f, commit, shown, rule)
    if rule == "not UTF-8":
        assert NOT_UTF8.startswith("its name is not UTF-8")


def test_a_name_that_is_not_utf8_and_then_removed_is_named_but_no_longer_stops_anything(copies: Any) -> None:
    f = copies()
    raw = b"state/posts/\xff.json"
    bad = push_commit(f, {raw: b"{}"}, b"oops\n")
    run(f, "merge", code=1)
    push_commit(f, {raw: None}, b"take it out\n")
    run(f, "merge", "--allow-empty")  # the tick is built: what the commits left is fine
    assert json.loads(read_remote(f, "state/fleet.json"))["tick"] == 2
    r = run(f, "replay", "--check")
    assert bad[:12] in r.stdout and "state/posts/\\udcff.json" in r.stdout
    entries = json.loads(run(f, "log", "--json").stdout)
    assert any(e["status"] == "outside" and e["commit"] == bad for e in entries)


@given(message=st.binary(min_size=1, max_size=30).filter(_not_utf8),
       who=st.binary(min_size=1, max_size=12).filter(lambda b: _not_utf8(b) and not set(b) & set(b"<>\n\0")))
@example(message=b"\xae\x97\x11\xb8\r\x1e\x86", who=b"G\x81")  # a record separator: git log's records split there
@example(message=b"\xff one\x00two\x1e\n\nthree", who=b"P\xe9")  # a NUL, a separator, paragraphs
@SETTINGS
def test_a_message_or_author_that_is_not_utf8_is_read_and_named(copies: Any, message: bytes, who: bytes) -> None:
    """A valid change (an input, not refused) whose commit message and author are not UTF-8."""
    f = copies()
    doc = json.loads(read_remote(f, "state/posts/ada-1.json"))
    doc["title"] = "retitled"
    commit = push_commit(f, {b"state/posts/ada-1.json": canonical.dumps(doc)}, message, who)
    s = json.loads(run(f, "status", "--json").stdout)
    assert s["refused"] is None and [o["commit"] for o in s["outside"]] == [commit]
    assert commit[:12] in run(f, "replay", "--check").stdout
    assert commit[:12] in run(f, "status").stdout and commit[:12] in run(f, "log").stdout
    assert any(e["commit"] == commit for e in json.loads(run(f, "log", "posts/ada-1", "--json").stdout))
    run(f, "merge", "--allow-empty")  # an input: the next tick is built on it
    assert json.loads(read_remote(f, "state/fleet.json"))["tick"] == 2


def test_a_local_commit_with_a_name_that_is_not_utf8_is_not_adopted(copies: Any) -> None:
    """The same on the person's own main: `fleet run` names it instead of crashing."""
    f = copies()
    git(f.path, "reset", "-q", "--hard", remote_main(f))
    (f.path / "state" / "posts").joinpath(b"\xfe.json".decode("utf-8", "surrogateescape")).write_bytes(b"{}")
    git(f.path, "add", "-A")
    git(f.path, "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qm", "mine")
    before = refs(f)
    r = run(f, "run", "--ticks", "1", code=1)
    [line] = r.stderr.splitlines()
    assert "state/posts/\\udcfe.json" in line and "not UTF-8" in line and "not adopted" in line
    assert refs(f) == before


# -- 3. a forged Fleet-Tick trailer -----------------------------------------------------------------


_TRAILERS = st.one_of(
    st.integers(0, 10**9).map(lambda n: (n, f"Fleet-Tick: {n}\n".encode())),
    st.integers(0, 10**6).map(lambda n: (n, f"Fleet-Tick: {n}\nFleet-Applied: 3\n".encode())),
    st.integers(0, 10**6).map(lambda n: (None, f"Fleet-Tick: {n}\nFleet-Tick: {n}\n".encode())),  # no trailer
)


@given(trailer=_TRAILERS, seeds=st.booleans())
@SETTINGS
def test_a_forged_tick_trailer_on_the_remote_main_is_a_persons_commit_and_refused(
        copies: Any, trailer: tuple[int | None, bytes], seeds: bool) -> None:
    f = copies()
    tick, lines = trailer
    files: dict[bytes, bytes | None] = {}
    if seeds:  # a valid document, as a person seeding the world would add it
        doc = json.loads(read_remote(f, "state/posts/ada-1.json"))
        doc["id"] = "seed"
        files[b"state/posts/seed.json"] = canonical.dumps(doc)
    commit = push_commit(f, files, b"seed\n\n" + lines)
    said = f"Fleet-Tick: {tick}" if tick is not None else "a Fleet-Tick line"
    refused_everywhere(f, commit, said, FORGED.split(",")[0])
    if seeds:  # the person's change is in the document's trail, as theirs
        [entry] = json.loads(run(f, "log", "posts/seed", "--json").stdout)
        assert entry["status"] == "outside" and entry["commit"] == commit and entry["author"] == "Pat <pat@example.com>"


@pytest.mark.parametrize("seeds", [True, False])
def test_a_forged_tick_reverted_on_main_is_named_and_the_fleet_goes_on(copies: Any, seeds: bool) -> None:
    f = copies()
    files: dict[bytes, bytes | None] = {b"state/posts/seed.json": b'{"id": "seed"}'} if seeds else {}
    forged = push_commit(f, files, b"seed\n\nFleet-Tick: 2\n")
    run(f, "merge", code=1)
    undo = {b"state/posts/seed.json": None} if seeds else {}
    push_commit(f, undo, f'Revert "seed"\n\nThis reverts commit {forged}.\n'.encode())
    assert "needs you: nothing" in run(f, "status").stdout
    run(f, "merge", "--allow-empty")
    assert json.loads(read_remote(f, "state/fleet.json"))["tick"] == 2
    r = run(f, "replay", "--check")  # one tick 2 (the engine's), the forged one named
    assert f"{forged[:12]}" in r.stdout and "reverted since" in r.stdout
    assert json.loads(run(f, "replay", "--json").stdout)["ticks"] == 2


def test_a_forgery_that_moves_the_clock_too_fails_replay_at_its_tick(copies: Any) -> None:
    """A trailer and a clock that agree pass for a tick commit: replay recomputes that
    tick from its ledger, and the document it changed by hand is the difference."""
    f = copies()
    clock = json.loads(read_remote(f, "state/fleet.json"))
    clock["tick"] = 2
    doc = json.loads(read_remote(f, "state/posts/ada-1.json"))
    doc["score"] = 1000
    commit = push_commit(f, {b"state/fleet.json": canonical.dumps(clock),
                             b"state/posts/ada-1.json": canonical.dumps(doc)}, b"fleet: tick 2\n\nFleet-Tick: 2\n")
    r = run(f, "replay", "--check", code=1)
    assert f"first at tick 2 (commit {commit[:12]})" in r.stdout and "state/posts/ada-1.json" in r.stdout


# -- 4. the merge engine's own files ---------------------------------------------------------------


def _clock_moved(f: Fleet, n: int) -> bytes:
    clock = json.loads(read_remote(f, "state/fleet.json"))
    clock["tick"] = n
    return canonical.dumps(clock)


@given(target=st.sampled_from(["clock", "clock-tick", "ledger", "quarantine", "conflict", "conflict-new"]),
       junk=st.one_of(st.binary(max_size=40), st.sampled_from([b"{bad", b"[]", b"{}", b'{"tick": "x"}', b"\xef\xbb\xbf{}"])),
       n=st.integers(0, 10**6))
@SETTINGS
def test_a_change_to_the_engines_own_files_on_the_remote_main_is_refused(
        copies: Any, target: str, junk: bytes, n: int) -> None:
    f = copies()
    ledger = git(origin(f), "ls-tree", "-r", "--name-only", "main", "state/ledger/1/").decode().split()
    rel = {"clock": "state/fleet.json", "clock-tick": "state/fleet.json", "ledger": ledger[0],
           "quarantine": "state/quarantine/1/w1.jsonl", "conflict": "state/conflicts/c-0000000000000000.json",
           "conflict-new": f"state/conflicts/c-{n:016x}.json"}[target]
    data = _clock_moved(f, n) if target == "clock-tick" else junk
    if target == "clock-tick" and n == 1:
        data = data.replace(b'"tick": 1', b'"tick":  1')  # a change all the same
    commit = push_commit(f, {rel.encode(): data}, b"by hand\n")
    refused_everywhere(f, commit, rel, "written only by the merge engine")
    r = run(f, "report", "--out", str(f.path.parent / f"report-{f.path.name}"))
    assert "Traceback" not in r.output


def test_an_engine_file_change_reverted_on_main_lets_the_fleet_go_on(copies: Any) -> None:
    f = copies()
    rel = "state/fleet.json"
    before = read_remote(f, rel)
    bad = push_commit(f, {rel.encode(): _clock_moved(f, 50)}, b"jump ahead\n")
    r = run(f, "merge", code=1)
    assert "state/fleet.json: the clock and totals are written only by the merge engine" in r.stderr
    s = json.loads(run(f, "status", "--json").stdout)
    assert s["tick"] == 1 and not [w for w in s["workers"] if w["status"] == "dead"]  # not "missed 49 ticks"
    push_commit(f, {rel.encode(): before}, f"Revert\n\nThis reverts commit {bad}.\n".encode())
    run(f, "merge", "--allow-empty")
    assert json.loads(read_remote(f, rel))["tick"] == 2


def test_setup_before_the_first_tick_may_lay_down_the_engines_files(tmp_path: Path) -> None:
    """A world's design: a person's commit at tick 0 is not judged as a change around the engine."""
    init(tmp_path / "w")
    f = Fleet(tmp_path / "w")
    clock = json.loads(f.read("state/fleet.json"))
    clock["totals"]["applied"] = 7
    (f.path / "state/fleet.json").write_bytes(canonical.dumps(clock))
    git(f.path, "add", "-A")
    git(f.path, "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qm", "design")
    run(f, "merge", "--allow-empty")
    assert json.loads(f.read("state/fleet.json"))["tick"] == 1


# -- 4. a person's commit that breaks the config: the queue, the bus and the history go on ---------


_BROKEN_CONFIGS = st.one_of(
    st.binary(max_size=40),  # not JSON, mostly
    st.sampled_from([b"{bad", b"[]", b"{}", b'{"agents": 7}', b"\xef\xbb\xbf{}", b'{"agents": {}, "agents": {}}']),
    st.just(None),  # deleted
)


@given(data=_BROKEN_CONFIGS)
@SETTINGS
def test_a_config_a_person_broke_on_main_leaves_the_queue_the_bus_and_the_log_working(
        copies: Any, data: bytes | None) -> None:
    """Run and merge stop on it (as on every refused change); the task queue, the message
    bus, `fleet log` and the watchdog work under the config of the last tick commit, and
    each says so once in a line naming the commit and how to undo it."""
    f = copies()
    rel = "state/config.json"
    commit = push_commit(f, {rel.encode(): data}, b"edit the config by hand\n")
    r = run(f, "merge", code=1)
    assert commit[:12] in r.stderr and f"git revert {commit[:12]}" in r.stderr, r.stderr
    agent = sorted(json.loads(git(f.path, "show", f"{remote_main(f)}~1:{rel}"))["agents"])[0]

    def works(*args: str, code: int = 0, warns: bool = True) -> Any:
        """The command succeeds; one that reads the config says once which it used (in
        its own process, as a person runs it: a warning is given once a process)."""
        r = fleet_cli(f.path, *args)
        assert r.returncode == code and "internal error" not in r.stderr, (args, r.returncode, r.stderr)
        warned = [ln for ln in r.stderr.splitlines() if "warning:" in ln]
        assert len(warned) == (1 if warns else len(warned)) <= 1, (args, r.stderr)
        for line in warned:
            assert commit[:12] in line and f"git revert {commit[:12]}" in line and rel in line, line
            assert "config of the last tick commit" in line, line
        return r

    works("task", "add", "write the summary", warns=False)  # (adding a task asks nothing of the config)
    assert "claimed" in works("task", "claim", "--as", agent).stdout  # the agent: of the last tick's config
    assert json.loads(works("task", "list", "--json", warns=False).stdout)["counts"]["in-progress"] == 1
    works("msg", "send", "--from", agent, "--to", agent, "--body", "hello")
    works("log")
    works("watchdog", code=3)
