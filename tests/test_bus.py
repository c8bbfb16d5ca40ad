"""The message bus (fleet.bus) on real git: clones sending at once through one
origin served by git daemon, acks racing, a bus in another repository, and
hostile files in inboxes, generated."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import hand_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet import canonical, schemas, tick_messages
from fleet import delta as delta_mod
from fleet.bus import Bus, message_path
from fleet.commands.init import init
from fleet.config import Config, Limits
from fleet.config import parse as config_parse
from fleet.delta import Arrival, Delta, from_body
from fleet.errors import FleetError
from fleet.git import Git
from fleet.repo import FleetRepo
from fleet.tools import ToolCall, to_ops
from tests.test_claim_contention import GitDaemon

SENDER = r"""
import json, sys
from pathlib import Path
from fleet.bus import Bus
from fleet.repo import FleetRepo
clone, n, tag = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
bus = Bus(FleetRepo(clone))
agents = sorted(bus.cfg.agents)
print("ready", flush=True)
sys.stdin.readline()
sent = []
for i in range(n):
    s = bus.send(tag, agents[i % len(agents)], "note", f"{tag} says {i}")
    sent += [m["id"] for m in s.messages]
print(json.dumps(sent), flush=True)
"""

ACKER = r"""
import json, sys
from pathlib import Path
from fleet.bus import Bus
from fleet.repo import FleetRepo
clone = Path(sys.argv[1])
bus = Bus(FleetRepo(clone))
print("ready", flush=True)
sys.stdin.readline()
acked = {}
for agent in sorted(bus.cfg.agents):
    acked[agent] = bus.ack(agent, None).acked
print(json.dumps(acked), flush=True)
"""


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _race(scripts: list[list[str]]) -> list[object]:
    """Start every process, wait until each is ready, let them all go at once."""
    procs = [subprocess.Popen([sys.executable, "-c", *s], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in scripts]
    for p in procs:
        line = p.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == "ready", p.stderr.read()  # type: ignore[union-attr]
    for p in procs:
        p.stdin.write("go\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A fleet whose origin is served by git daemon on 127.0.0.1, and two clones of it."""
    seed = tmp_path / "seed"
    init(seed)
    base = tmp_path / "served"
    base.mkdir()
    _git(tmp_path, "clone", "-q", "--bare", str(seed), str(base / "fleet.git"))
    daemon = GitDaemon(base)
    clones = []
    for name in ("one", "two"):
        _git(tmp_path, "clone", "-q", daemon.url("fleet.git"), str(tmp_path / name))
        clones.append(tmp_path / name)
    try:
        yield clones, base / "fleet.git"
    finally:
        daemon.stop()


@pytest.mark.slow
def test_two_clones_send_200_each_at_once_each_delivered_acked_and_archived_once(served) -> None:  # type: ignore[no-untyped-def]
    (one, two), origin = served
    sent = _race([[SENDER, str(one), "200", "one"], [SENDER, str(two), "200", "two"]])
    ids = [i for s in sent for i in s]  # type: ignore[union-attr]
    assert len(ids) == 400 and len(set(ids)) == 400
    # every message is in exactly one inbox, once, as sent, whichever clone reads
    for clone in (one, two):
        bus = Bus(FleetRepo(clone))
        boxes = bus.inboxes(sorted(bus.cfg.agents))
        seen = Counter(m.id for box in boxes.values() for m in box.messages)
        assert set(seen) == set(ids) and set(seen.values()) == {1}
        assert not any(box.quarantined for box in boxes.values())
        for box in boxes.values():
            for m in box.messages:
                sender, _, n = m.body.partition(" says ")
                assert m.from_ == sender and sorted(bus.cfg.agents)[int(n) % 6] == m.to == box.agent
    # both clones ack every inbox at once: each message is moved to its archive once
    acked = _race([[ACKER, str(one)], [ACKER, str(two)]])
    by_both = Counter(i for a in acked for ids_ in a.values() for i in ids_)  # type: ignore[union-attr]
    assert set(by_both) == set(ids) and set(by_both.values()) == {1}
    bus = Bus(FleetRepo(one))
    boxes = bus.inboxes(sorted(bus.cfg.agents))
    assert all(not b.messages for b in boxes.values())
    archived = Counter()
    for agent in bus.cfg.agents:
        msgs, _, bad = bus.archive(agent, fetch=False)
        assert not bad
        archived.update(m.id for m in msgs)
        assert all(m.to == agent and m.acked_at for m in msgs)
        # the archive's history adds each message's file exactly once
        added = Git(origin).text("log", "--format=", "--name-only", "--diff-filter=A", f"refs/heads/fleet-bus/box/{agent}")
        names = [n for n in added.splitlines() if n]
        assert len(names) == len(set(names)) == len(msgs)
    assert set(archived) == set(ids) and set(archived.values()) == {1}
    # two outboxes, one per clone; main was never written
    lanes = Git(origin).text("for-each-ref", "--format=%(refname)", "refs/heads/fleet-bus/out/").split()
    assert len(lanes) == 2
    assert Git(origin).text("rev-list", "--count", "refs/heads/main") == "1"


def test_local_fleet_without_remote_sends_reads_and_acks(tmp_path: Path) -> None:
    init(tmp_path / "f")
    bus = Bus(FleetRepo(tmp_path / "f"))
    a = bus.send("ada", "basil", "note", "one", lane="here")
    b = bus.send("cleo", "basil", "state", "two", lane="there")
    assert a.commit and b.commit and a.remote is None
    box = bus.inbox("basil")
    assert [m.body for m in box.messages] == ["one", "two"]
    assert set(box.read) == {"fleet-bus/out/here", "fleet-bus/out/there"}
    r = bus.ack("basil", [a.messages[0]["id"]])
    assert r.acked == [a.messages[0]["id"]] and r.commit
    assert bus.ack("basil", [a.messages[0]["id"]]).already == [a.messages[0]["id"]]  # acked once, however often
    assert [m.body for m in bus.inbox("basil").messages] == ["two"]
    assert [m.body for m in bus.archive("basil")[0]] == ["one"]


def test_bus_in_another_repository_syncs_only_its_branches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bus.remote puts the bus elsewhere; only bus branches go there, made from
    the records alone: sessions, caches, credentials and .git/fleet/ stay here."""
    seed = tmp_path / "seed"
    init(seed)
    bus_repo = tmp_path / "bus.git"
    _git(tmp_path, "init", "-q", "--bare", str(bus_repo))
    cfg_path = seed / "state" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["bus"] = {"remote": str(bus_repo), "types": ["question"]}
    cfg_path.write_bytes(canonical.dumps(cfg))
    _git(seed, "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qam", "bus elsewhere")
    origin = tmp_path / "origin.git"
    _git(tmp_path, "clone", "-q", "--bare", str(seed), str(origin))
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(origin), str(clone))
    # runtime state of this machine: a session, a cache, a credential
    secret = "sk-ant-test-0123456789abcdef-SECRET"
    runtime = clone / ".git" / "fleet"
    (runtime / "sessions").mkdir(parents=True)
    (runtime / "sessions" / "ada.json").write_text(json.dumps({"session": "SESSION-MARKER-42"}))
    (runtime / "credentials").write_text(secret)
    (clone / ".fleet-cache").write_text("CACHE-MARKER-77")
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    bus = Bus(FleetRepo(clone))
    with pytest.raises(FleetError, match="message body: holds the value of ANTHROPIC_API_KEY"):
        bus.send("ada", "basil", "question", f"what is the key? {secret}")  # refused, not stored masked
    sent = bus.send("ada", "basil", "question", "what is the key?")
    bus.beat("laptop", "machine")
    assert sent.remote == str(bus_repo) and sent.commit
    assert bus.ack("basil", None).acked == [sent.messages[0]["id"]]
    # the bus repository has bus branches only, and none of the runtime state
    refs = Git(bus_repo).text("for-each-ref", "--format=%(refname)").split()
    assert refs and all(r.startswith("refs/heads/fleet-bus/") for r in refs)
    objects = Git(bus_repo).text("cat-file", "--batch-all-objects", "--batch-check=%(objectname)").split()
    everything = b"".join(Git(bus_repo).run("cat-file", "-p", o) for o in objects)
    for marker in (b"SESSION-MARKER-42", b"CACHE-MARKER-77", secret.encode()):
        assert marker not in everything
    paths = set(Git(bus_repo).text("log", "--all", "--format=", "--name-only").split())
    assert paths and all(p.startswith(("to/", "beat/", "archive/")) for p in paths)
    # the fleet's origin got no bus branch, and main is untouched
    assert not Git(origin).text("for-each-ref", "refs/heads/fleet-bus/")
    # a second clone reads the same bus
    other = tmp_path / "other"
    _git(tmp_path, "clone", "-q", str(origin), str(other))
    assert [m.id for m in Bus(FleetRepo(other)).archive("basil")[0]] == [sent.messages[0]["id"]]


def test_a_bus_remote_that_cannot_be_fetched_is_one_clear_error(tmp_path: Path) -> None:
    init(tmp_path / "f")
    cfg_path = tmp_path / "f" / "state" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["bus"] = {"remote": str(tmp_path / "no-such-bus.git")}
    cfg_path.write_bytes(canonical.dumps(cfg))
    _git(tmp_path / "f", "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qam", "bus gone")
    bus = Bus(FleetRepo(tmp_path / "f"))
    with pytest.raises(FleetError, match=r"message bus: git fetch from .*no-such-bus\.git failed"):
        bus.inbox("ada")


# -- hostile files in an inbox, generated ----------------------------------------

GOOD = {"id": "m-good", "ts": "2026-12-01T00:00:00.000000Z", "from": "ada", "to": "basil", "type": "note", "body": "hi"}

_json = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
                     max_leaves=8)
_broken_field = st.sampled_from(["id", "ts", "from", "to", "type", "body"]).flatmap(
    lambda k: st.tuples(st.just(k), _json.filter(lambda v: not isinstance(v, str) or k in ("ts", "type", "to"))))
_bad_file = st.one_of(
    st.binary(max_size=200).map(lambda b: ("raw", b)),
    _json.map(lambda v: ("json", canonical.dumps(v) if not isinstance(v, dict) else canonical.dumps({**v, "x": 1}))),
    _broken_field.map(lambda kv: ("field", canonical.dumps({**GOOD, "id": "m-bad", kv[0]: kv[1]}))),
    st.integers(16385, 40000).map(lambda n: ("big", canonical.dumps({**GOOD, "id": "m-bad", "body": "a" * n}))),
    st.text(min_size=1, max_size=30).map(lambda t: ("reuse", canonical.dumps({**GOOD, "body": GOOD["body"] + t}))),
)


_TEMPLATE: list[Path] = []


def _template(factory: pytest.TempPathFactory) -> Path:
    """One fleet made by init, copied for each example (init is the slow part)."""
    if not _TEMPLATE:
        _TEMPLATE.append(factory.mktemp("template") / "f")
        init(_TEMPLATE[0])
    return _TEMPLATE[0]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.lists(_bad_file, min_size=1, max_size=4))
def test_hostile_inbox_files_are_quarantined_and_nothing_else_is_lost(tmp_path_factory: pytest.TempPathFactory,
                                                                    bad: list[tuple[str, bytes]]) -> None:
    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(_template(tmp_path_factory), root / "f", symlinks=True)
    bus = Bus(FleetRepo(root / "f"))
    good = bus.send("ada", "basil", "note", "hi", lane="good", msg_id="m-good")
    also = bus.send("cleo", "basil", "note", "still here", lane="good")
    git = bus.git
    writes: dict[str, bytes] = {}
    kinds: dict[str, str] = {}
    for n, (kind, data) in enumerate(bad):
        path = "to/basil/" + ("m-good.json" if kind == "reuse" else "m-bad.json" if kind == "field" else f"m-bad{n}.json")
        writes[path], kinds[path] = data, kind
    # a hostile lane: written by someone else, not through fleet
    commit = git.write_commit(None, "hostile\n", writes, [])
    assert git.update_ref("refs/heads/fleet-bus/out/hostile", commit, None)
    box = bus.inbox("basil")
    got = {m.id: m for m in box.messages}
    # the good messages are there, exactly as sent, unless a hostile file reused the id with other content:
    # then every copy is quarantined, none delivered
    reused = any(kinds[p] == "reuse" and d != canonical.dumps(GOOD) for p, d in writes.items())
    if reused:
        assert "m-good" not in got
        assert any(q.where.startswith("fleet-bus/out/good:") and "reused" in q.reason for q in box.quarantined)
    else:
        assert got["m-good"].body == "hi" and got["m-good"].from_ == "ada"
    assert got[also.messages[0]["id"]].body == "still here"
    quarantined = {q.where.split(":", 1)[1]: q.reason for q in box.quarantined}
    assert all(q.where.startswith(("fleet-bus/out/hostile:to/basil/", "fleet-bus/out/good:to/basil/m-good.json"))
               and q.reason for q in box.quarantined)
    quarantined = {k: v for k, v in quarantined.items() if k in writes and any(
        q.where == f"fleet-bus/out/hostile:{k}" for q in box.quarantined)}
    shown = {m.where.split(":", 1)[1] for m in box.messages if m.where.startswith("fleet-bus/out/hostile:")}
    for path, data in writes.items():
        # every file is accounted for: shown as a valid message, or quarantined with a reason; never both
        assert (path in shown) != (path in quarantined), (path, data)
        if kinds[path] in ("raw", "json", "big"):
            assert path in quarantined
        if kinds[path] == "reuse" and data != canonical.dumps(GOOD):
            assert "reused with other content" in quarantined[path]
        if path in shown:  # what is shown passes the schema, checked here on its own
            assert schemas.first_error(schemas.protocol("message"), canonical.load(data, path)) is None
    assert good.commit


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.one_of(st.sampled_from(["note", "ack", "state", "heartbeat", "evil", "Note", "notes"]),
                      st.from_regex(r"[a-z][a-z0-9_-]{0,31}", fullmatch=True)))
def test_a_lane_file_of_a_type_the_fleet_does_not_know_is_quarantined_as_send_refuses_it(
        tmp_path_factory: pytest.TempPathFactory, kind: str) -> None:
    """`fleet msg send --type evil` is refused; a lane written by hand delivered a message
    of type evil to the inbox and the prompts. Now the reader refuses what the sender does."""
    root = tmp_path_factory.mktemp("types")
    shutil.copytree(_template(tmp_path_factory), root / "f", symlinks=True)
    bus = Bus(FleetRepo(root / "f"))
    git = bus.git
    commit = git.write_commit(None, "hand\n", {"to/basil/m-t.json": canonical.dumps({**GOOD, "id": "m-t",
                                                                                     "type": kind})}, [])
    assert git.update_ref("refs/heads/fleet-bus/out/hand", commit, None)
    box = bus.inbox("basil")
    known = kind in tick_messages.message_types(bus.cfg)
    assert [m.id for m in box.messages] == (["m-t"] if known else [])
    assert bool(box.quarantined) == (not known)
    if not known and kind.islower():  # (one the schema's pattern refuses first is named by that rule)
        assert any("is not a message type of this fleet" in q.reason for q in box.quarantined), box.quarantined


def test_send_refuses_what_no_inbox_may_hold(tmp_path: Path) -> None:
    init(tmp_path / "f")
    bus = Bus(FleetRepo(tmp_path / "f"))
    with pytest.raises(FleetError, match="unknown agent 'nobody'"):
        bus.send("ada", "nobody", "note", "x", lane="l")
    with pytest.raises(FleetError, match="unknown message type 'gossip'"):
        bus.send("ada", "basil", "gossip", "x", lane="l")
    with pytest.raises(FleetError, match=r"message body is 16385 bytes, over bus.max_body_bytes \(16384\)"):
        bus.send("ada", "basil", "note", "a" * 16385, lane="l")
    bus.send("ada", "basil", "note", "x", lane="l", msg_id="k1")
    assert bus.send("ada", "basil", "note", "x", lane="l", msg_id="k1").already == ["k1"]
    with pytest.raises(FleetError, match="message id k1 is already used in fleet-bus/out/l .* with other content"):
        bus.send("ada", "basil", "note", "y", lane="l", msg_id="k1")
    assert [m.body for m in bus.inbox("basil").messages] == ["x"]  # nothing else lost
    assert message_path("basil", "k1") in bus.git.text("ls-tree", "-r", "--name-only", "refs/heads/fleet-bus/out/l")


# -- delivery at the merge, and the tools' checks ------------------------------------------

def _delta(agent: str, worker: str, messages: list[dict[str, str]], acks: list[str] | None = None) -> Delta:
    meta: dict[str, object] = {"messages": messages}
    if acks:
        meta["acks"] = acks
    body = delta_mod.make(tick=1, worker=worker, stream="s1", agent=agent, meta=meta)
    return from_body(body, Arrival("refs/heads/fleet/t1/" + worker, delta_mod.file_path(body), b""), Limits())


def test_merge_delivery_is_once_refuses_unknown_recipients_and_keeps_the_rest(tmp_path: Path) -> None:
    init(tmp_path / "f")
    repo = FleetRepo(tmp_path / "f")
    cfg = repo.snapshot().config
    hello = Bus(repo, cfg).send("person", "ada", "note", "hi ada", lane="desk").messages[0]["id"]
    applied = [_delta("ada", "w1", [{"to": "basil", "type": "note", "body": "one"},
                                    {"to": "ghost", "type": "note", "body": "to an agent that left"}], acks=[hello, "m-gone"]),
               _delta("basil", "w2", [{"to": "ada", "type": "state", "body": "two"}])]
    first = tick_messages.deliver(repo, cfg, 1, applied)
    assert first is not None and first.error is None
    assert len(first.delivered) == 2 and first.acked == [hello] and first.heartbeats == 4
    assert [(r["to"], r["from"]) for r in first.refused] == [("ghost", "ada")] and "unknown agent" in first.refused[0]["why"]
    assert any("Message refused: ada to ghost" in line for line in first.lines())
    again = tick_messages.deliver(repo, cfg, 1, applied)  # the same tick merged again
    assert again is not None and again.delivered == [] and sorted(again.already) == sorted(first.delivered)
    assert again.acked == [] and again.pushed is None  # nothing new: no push at all
    bus = Bus(repo, cfg)
    assert [m.body for m in bus.inbox("basil").messages] == ["one"]
    assert [(m.body, m.from_, m.type) for m in bus.inbox("ada").messages] == [("two", "basil", "state")]
    assert [m.id for m in bus.archive("ada")[0]] == [hello]


_agents = st.sampled_from(["ada", "basil", "ghost", "", "../x", "a" * 200])
_calls = st.one_of(
    st.fixed_dictionaries({"to": _agents, "body": st.text(min_size=0, max_size=50)},
                          optional={"type": st.sampled_from(["note", "state", "gossip", "X"])}).map(lambda d: ("send_message", d)),
    st.fixed_dictionaries({"id": st.sampled_from(["m-1", "m-2", "nope", ""])}).map(lambda d: ("ack_message", d)),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3).map(lambda d: ("send_message", d)),
)


@settings(max_examples=200, deadline=None)
@given(calls=st.lists(_calls, max_size=20))  # at most 20 rejections are recorded one by one
def test_message_tool_calls_become_checked_entries_or_are_rejected(calls: list[tuple[str, dict[str, object]]]) -> None:
    cfg = _CFG
    conv = to_ops("ada", 1, [ToolCall(n, i) for n, i in calls], None, {}, message_tools=("send_message", "ack_message"),
                  inbox_ids={"m-1", "m-2"}, cfg=cfg)  # type: ignore[arg-type]
    assert not conv.ops
    assert len(conv.messages) + len(conv.acks) + len([r for r in conv.rejected if r["tool"]]) == len(calls)
    for m in conv.messages:
        assert m["to"] in cfg.agents and m["type"] in ("note", "state") and m["body"]
    assert len(conv.messages) <= tick_messages.MAX_SENT and set(conv.acks) <= {"m-1", "m-2"}
    assert len(conv.acks) == len(set(conv.acks))
    if not conv.messages and not conv.acks:
        assert conv.noop is not None  # nothing done is said, never silent
    body = delta_mod.make(tick=1, worker="w1", stream="s1", agent="ada", meta={
        k: v for k, v in (("messages", conv.messages), ("acks", conv.acks), ("noop", conv.noop)) if v})
    assert schemas.first_error(schemas.protocol("delta"), body) is None


def _config() -> Config:
    from fleet.template import root

    return config_parse((root() / "state" / "config.json").read_bytes())


_CFG = _config()


def test_a_lane_with_a_file_name_that_is_not_utf8_costs_only_itself(tmp_path: Path) -> None:
    init(tmp_path / "f")
    bus = Bus(FleetRepo(tmp_path / "f"))
    kept = bus.send("ada", "basil", "note", "kept", lane="good").messages[0]["id"]
    git = bus.git
    blob = git.run("hash-object", "-w", "--stdin", input=canonical.dumps(GOOD)).decode().strip()
    inner = git.run("mktree", input=b"100644 blob " + blob.encode() + b"\t\xff\xfe.json\n").decode().strip()
    to = git.run("mktree", input=f"040000 tree {inner}\tbasil\n".encode()).decode().strip()
    root = git.run("mktree", input=f"040000 tree {to}\tto\n".encode()).decode().strip()
    commit = git.run("commit-tree", root, "-m", "hostile", input=b"").decode().strip()
    assert git.update_ref("refs/heads/fleet-bus/out/bad", commit, None)
    box = bus.inbox("basil")
    assert [m.id for m in box.messages] == [kept]
    assert [q.where for q in box.quarantined] == ["fleet-bus/out/bad:to/basil/\\udcff\\udcfe.json"]  # escaped
    assert "not UTF-8" in box.quarantined[0].reason


def test_bus_remote_may_name_a_git_remote_of_the_clone(tmp_path: Path) -> None:
    init(tmp_path / "f")
    cfg_path = tmp_path / "f" / "state" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["bus"] = {"remote": "messages", "branch": "talk"}
    cfg_path.write_bytes(canonical.dumps(cfg))
    _git(tmp_path / "f", "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qam", "bus on a named remote")
    _git(tmp_path, "init", "-q", "--bare", str(tmp_path / "messages.git"))
    _git(tmp_path / "f", "remote", "add", "messages", str(tmp_path / "messages.git"))
    bus = Bus(FleetRepo(tmp_path / "f"))
    sent = bus.send("ada", "basil", "note", "over there", lane="l1")
    assert sent.remote == "messages" and sent.branch == "talk/out/l1"
    assert Git(tmp_path / "messages.git").rev_parse("refs/heads/talk/out/l1") == sent.commit
    assert [m.body for m in Bus(FleetRepo(tmp_path / "f")).inbox("basil").messages] == ["over there"]


def test_send_refuses_a_body_holding_a_secret_rather_than_storing_it_masked(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "ghp_" + "x1" * 10
    monkeypatch.setenv("GITHUB_TOKEN", secret)
    init(tmp_path / "f")
    bus = Bus(FleetRepo(tmp_path / "f"))
    for body in (secret, f"my token is {secret}\nthanks", "clone https://me:pw123@example.com/x"):
        with pytest.raises(FleetError, match=r"^message body: holds .*refused, nothing written$") as e:
            bus.send("ada", "basil", "note", body, lane="l")
        assert secret not in str(e.value) and "pw123" not in str(e.value)
    assert bus.inbox("basil").messages == []
    bus.send("ada", "basil", "note", "a plain note", lane="l")
    assert [m.body for m in bus.inbox("basil").messages] == ["a plain note"]


def _commit_links(git: Git, files: dict[str, tuple[str, bytes]], parent: str | None = None) -> str:
    """A commit holding ``files`` (path -> (git mode, content)) as git stores them: a
    symbolic link is mode 120000 whose content is its target. Made with git's own
    plumbing in a scratch index, as someone else's tool would."""
    tree = hand_tree(git, dict(files))
    return git.text("commit-tree", tree, *(["-p", parent] if parent else []), "-m", "links")


@pytest.mark.parametrize("target", [b"/etc/passwd", b"../../../state/config.json", b"x" * 300, b"GOOD"])
def test_a_symbolic_link_in_a_lane_is_quarantined_as_one_never_read_as_json(
        tmp_path_factory: pytest.TempPathFactory, target: bytes) -> None:
    """The link's content is its target's name: it was judged as JSON ('malformed JSON'),
    and a target that happens to be a valid message would have been delivered."""
    root = tmp_path_factory.mktemp("links")
    shutil.copytree(_template(tmp_path_factory), root / "f", symlinks=True)
    bus = Bus(FleetRepo(root / "f"))
    bus.send("ada", "basil", "note", "hi", lane="good", msg_id="m-good")
    bus.beat("w1", "worker", lane="good")
    git = bus.git
    if target == b"GOOD":
        target = canonical.dumps({"id": "m-link", "ts": "2026-11-22T10:00:00.000000Z", "from": "ada", "to": "basil",
                                  "type": "note", "body": "a link"})
    commit = _commit_links(git, {"to/basil/m-link.json": ("120000", target),
                                 "beat/w2.json": ("120000", target)})
    assert git.update_ref("refs/heads/fleet-bus/out/hostile", commit, None)
    box = bus.inbox("basil")
    assert [m.id for m in box.messages] == ["m-good"]
    assert [(q.where, q.reason) for q in box.quarantined] == [
        ("fleet-bus/out/hostile:to/basil/m-link.json", "is a symbolic link; a bus file is a regular file (git mode 100644)")]
    beats, bad = bus.heartbeats()
    assert set(beats) == {"w1"}
    assert [(q.where, q.reason) for q in bad] == [
        ("fleet-bus/out/hostile:beat/w2.json", "is a symbolic link; a bus file is a regular file (git mode 100644)")]
