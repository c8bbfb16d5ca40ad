"""Hostile input at the merge: an inbox and worker branches that hold anything.

Each test here is one defect a hostile or careless sender found (issue "Nothing a
careless person or a hostile model sends can crash, brick or leak the fleet") and
fails without its fix. The generated corpus in test_hostile_corpus.py tries the
same kinds of input with cases these never saw.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Fleet, run
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from test_bad_input import good, ledger_ids, score

from fleet import canonical
from fleet.commands.init import init
from fleet.delta import Op, file_path
from fleet.ids import is_safe_id, printable
from fleet.ledger import tick_of

TOKEN = "ghs_" + "S3cr3tT0kenValue" * 3


def git(path: Path, *args: str, input: bytes | None = None) -> bytes:
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, input=input).stdout


def records(f: Fleet) -> list[dict[str, Any]]:
    out = []
    for path in git(f.path, "ls-tree", "-r", "--name-only", "main", "state/quarantine/").decode().split():
        out += [json.loads(line) for line in f.read(path).splitlines()]
    return out


def history(f: Fleet) -> bytes:
    """Every commit message and every blob reachable from any ref."""
    return git(f.path, "log", "--all", "-p", "--format=%B", "--text")


def raw_tree_branch(f: Fleet, worker_ref: str, entries: list[tuple[bytes, str, bytes]]) -> None:
    """A worker branch whose tree holds ``entries`` (path, mode, content), made
    with git's plumbing so that any name and any mode (a symlink, a submodule)
    can be in it, as a hostile worker could push."""

    def tree(items: dict[bytes, Any]) -> str:
        lines = []
        for name, value in sorted(items.items()):
            if isinstance(value, dict):
                lines.append(b"040000 tree " + tree(value).encode() + b"\t" + name)
            else:
                mode, content = value
                if mode == "160000":
                    sha = content.decode()
                else:
                    sha = git(f.path, "hash-object", "-w", "--stdin", input=content).decode().strip()
                kind = b"commit" if mode == "160000" else b"blob"
                lines.append(mode.encode() + b" " + kind + b" " + sha.encode() + b"\t" + name)
        return git(f.path, "mktree", "-z", input=b"".join(ln + b"\0" for ln in lines)).decode().strip()

    root: dict[bytes, Any] = {}
    for path, mode, content in entries:
        parts = path.split(b"/")
        here = root
        for p in parts[:-1]:
            here = here.setdefault(p, {})
        here[parts[-1]] = (mode, content)
    sha = tree(root)
    env = dict(os.environ, GIT_AUTHOR_NAME="w", GIT_AUTHOR_EMAIL="w@x", GIT_COMMITTER_NAME="w", GIT_COMMITTER_EMAIL="w@x")
    commit = subprocess.run(["git", "commit-tree", sha, "-p", f.main(), "-m", "raw"], cwd=f.path, env=env,
                            check=True, capture_output=True).stdout.decode().strip()
    git(f.path, "update-ref", worker_ref, commit)


def body_bytes(f: Fleet, agent: str = "ada", worker: str = "w1", tick: int = 1, **over: Any) -> tuple[dict[str, Any], bytes]:
    d = f.delta(agent, Op("incr", "posts", "ada-1", ("score",), 1), tick=tick, worker=worker)
    d.update(over)
    return d, canonical.dumps(d)


def still_merges(f: Fleet) -> None:
    """The fleet is not bricked: another tick merges, and replay agrees."""
    g = good(f, tick=json.loads(f.read("state/fleet.json"))["tick"] + 1, worker="wlater")
    run(f, "merge")
    assert g["id"] in ledger_ids(f)
    run(f, "replay", "--check")


# -- 1, 2, 10: the inbox is read as files of ours, nothing else ---------------------------


def test_inbox_links_fifos_devices_and_folders_are_quarantined_by_name_unread(
        fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    inbox = tmp_path / "inbox"
    outside = tmp_path / "outside"
    outside.mkdir()
    # a valid delta outside the inbox, reached through a link: must not apply
    lured, data = body_bytes(fleet, worker="w1")
    (outside / "valid.json").write_bytes(data)
    wdir = inbox / "deltas" / "w1" / "s1"
    wdir.mkdir(parents=True)
    (wdir / "link.json").symlink_to(outside / "valid.json")
    (wdir / "environ.json").symlink_to("/proc/self/environ")
    (wdir / "dangling.json").symlink_to(tmp_path / "nowhere.json")
    os.mkfifo(wdir / "fifo.json")
    (wdir / "folder.json").mkdir()
    (wdir / "notes.txt").write_bytes(b"not a delta")
    (inbox / "deltas" / "w2").symlink_to(outside, target_is_directory=True)  # a linked folder is not walked
    ok = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 1), worker="w1")
    (inbox / file_path(ok)).write_bytes(canonical.dumps(ok))

    r = run(fleet, "merge", "--inbox", str(inbox))
    why = {q["path"]: q for q in records(fleet)}
    assert ledger_ids(fleet) == {ok["id"]}  # the linked delta never applied
    base = "deltas/w1/s1/"
    assert "symbolic link" in why[base + "link.json"]["reason"] and "raw" not in why[base + "link.json"]
    assert "symbolic link (to /proc/self/environ)" in why[base + "environ.json"]["reason"]
    assert "symbolic link" in why[base + "dangling.json"]["reason"]
    assert "FIFO" in why[base + "fifo.json"]["reason"]
    assert "folder" in why[base + "folder.json"]["reason"]
    assert base + "notes.txt" not in why  # no delta file: named, not quarantined, and kept
    assert "symbolic link" in why["deltas/w2"]["reason"]
    for rec in why.values():
        assert "raw" not in rec and "delta" not in rec  # content never read
        assert rec["path"] in r.output
    assert "notes.txt: is not a delta file (a delta file's name ends in .json)" in r.output
    assert TOKEN.encode() not in history(fleet)
    assert (outside / "valid.json").read_bytes() == data  # the link's target is left alone
    # every entry decided and taken out of the inbox, but the file that is no delta file
    assert [p.relative_to(inbox).as_posix() for p in inbox.rglob("*")] == ["deltas", "deltas/w1", "deltas/w1/s1",
                                                                          "deltas/w1/s1/notes.txt"]
    assert (wdir / "notes.txt").read_bytes() == b"not a delta"
    still_merges(fleet)


def _good_beside(fleet: Fleet, inbox: Path) -> None:
    """A good delta of worker w2 in ``inbox``, beside what a test puts there."""
    ok = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 1), worker="w2")
    (inbox / file_path(ok)).parent.mkdir(parents=True, exist_ok=True)
    (inbox / file_path(ok)).write_bytes(canonical.dumps(ok))


def test_a_device_in_the_inbox_is_refused_unread(fleet: Fleet, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "deltas" / "w1" / "s1").mkdir(parents=True)
    os.symlink("/dev/zero", inbox / "deltas/w1/s1/zero.json")
    _good_beside(fleet, inbox)  # an outbox has a delta; a folder of only such entries is no inbox
    sock_dir = inbox / "deltas/w1/s1"
    import socket
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(sock_dir / "sock.json"))
    except OSError:
        pytest.skip("no unix sockets here")
    try:
        run(fleet, "merge", "--inbox", str(inbox))
    finally:
        s.close()
    why = {q["path"]: q["reason"] for q in records(fleet)}
    assert "socket" in why["deltas/w1/s1/sock.json"]
    assert "symbolic link" in why["deltas/w1/s1/zero.json"]


def test_a_file_over_the_limit_is_not_read_whole(fleet: Fleet, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "deltas/w1/s1").mkdir(parents=True)
    big = inbox / "deltas/w1/s1/big.json"
    with big.open("wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: a reader that reads it all takes 64 MB
    ok = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 1), worker="w2")
    (inbox / file_path(ok)).parent.mkdir(parents=True)
    (inbox / file_path(ok)).write_bytes(canonical.dumps(ok))  # beside a worker's delta: an inbox
    run(fleet, "merge", "--inbox", str(inbox))
    [rec] = records(fleet)
    assert "over limits.max_delta_bytes" in rec["reason"] and rec["size"] == 64 * 1024 * 1024
    assert len(rec["raw"]) <= 65536


# -- 1 (worker branches): symlink and submodule entries --------------------------------


def test_symlink_and_submodule_entries_of_a_worker_branch_are_refused(fleet: Fleet) -> None:
    body, data = body_bytes(fleet, worker="w1")
    raw_tree_branch(fleet, "refs/heads/fleet/t1/w1", [
        (b"deltas/w1/s1/link.json", "120000", b"/proc/self/environ"),
        (b"deltas/w1/s1/sub.json", "160000", fleet.main().encode()),
        (file_path(body).encode(), "100644", data),
    ])
    run(fleet, "merge")
    why = {q["path"]: q for q in records(fleet)}
    assert "symbolic link" in why["deltas/w1/s1/link.json"]["reason"]
    assert "submodule" in why["deltas/w1/s1/sub.json"]["reason"]
    assert "raw" not in why["deltas/w1/s1/link.json"]
    assert len(ledger_ids(fleet)) == 1 and fleet.branches() == []
    still_merges(fleet)


# -- 2: every secret the process can see is redacted -----------------------------------


@pytest.mark.parametrize("name", ["GITHUB_TOKEN", "GH_TOKEN", "ANTHROPIC_API_KEY", "MY_SERVICE_API_KEY", "CONFIGURED"])
def test_a_delta_holding_a_secret_is_quarantined_masked(fleet: Fleet, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    if name == "CONFIGURED":  # a variable no rule would guess: the config names it
        cfg = json.loads(fleet.read("state/config.json"))
        cfg["redact"] = ["CONFIGURED"]
        (fleet.path / "state/config.json").write_bytes(canonical.dumps(cfg))
        git(fleet.path, "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qam", "config: redact")
    g = good(fleet)
    leak = fleet.delta("ada", Op("set", "agents", "ada", ("bio",), f"my key is {TOKEN}"))
    fleet.push(leak)  # (before the key is set: fleet's own writer would mask it on the way)
    monkeypatch.setenv(name, TOKEN)
    r = run(fleet, "merge")
    assert ledger_ids(fleet) == {g["id"]}
    [rec] = records(fleet)
    assert f"holds the value of the secret {name}" in rec["reason"] and "[REDACTED]" in rec["raw"]
    assert TOKEN.encode() not in history(fleet) and TOKEN not in r.output


# -- 3, 9: names are full matches, the folder names the worker --------------------------


@pytest.mark.parametrize("folder", [b"w9\n", b"..w9", b"w9\r", b"w 9", b"\xff\xfe", b"-w9", "w\u202e9".encode()])
def test_an_unsafe_worker_folder_is_quarantined_and_never_bricks_the_merge(fleet: Fleet, folder: bytes) -> None:
    worker = "w9"
    _, data = body_bytes(fleet, worker=worker)
    raw_tree_branch(fleet, "refs/heads/fleet/t1/w9", [(b"deltas/" + folder + b"/s1/d.json", "100644", data)])
    run(fleet, "merge")
    [rec] = records(fleet)
    assert rec["worker"] == "_unknown"  # the folder names no worker: recorded under a safe name
    assert "another worker's directory" in rec["reason"]
    assert rec["path"] == printable(os.fsdecode(b"deltas/" + folder + b"/s1/d.json"))
    assert "\n" not in rec["path"] and ledger_ids(fleet) == set()
    still_merges(fleet)


def test_is_safe_id_is_a_full_match() -> None:
    assert is_safe_id("w9") and not is_safe_id("w9\n") and not is_safe_id("w9\n\n") and not is_safe_id("..")


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="ab.-_9L", min_size=1, max_size=12).map(lambda s: s.replace("L", ".lock")))
def test_a_name_fleet_accepts_is_one_git_takes_in_a_branch_and_the_schemas_agree(name: str) -> None:
    """An agent's, a task's, a lane's or a worker's name is part of a branch's name
    (fleet-bus/box/<agent>, fleet/tasks-claims/<id>, fleet-bus/out/<lane>,
    fleet/t<tick>/<worker>): a name fleet accepts is one git accepts there, and the
    config's and the task's schemas say the same as the code."""
    import jsonschema_rs

    from fleet.ids import ID_PATTERN
    git_ok = subprocess.run(["git", "check-ref-format", f"refs/heads/fleet-bus/box/{name}"]).returncode == 0
    if is_safe_id(name):
        assert git_ok, name
    schema = json.loads((Path(__file__).parent.parent / "schemas" / "config.schema.json").read_text())
    assert schema["$defs"]["id"]["pattern"] == ID_PATTERN
    task = json.loads((Path(__file__).parent.parent / "schemas" / "task.schema.json").read_text())
    id_schema = {"type": "string", "pattern": ID_PATTERN}
    assert jsonschema_rs.validator_for(id_schema).is_valid(name) == is_safe_id(name), name
    assert json.dumps(task).count(json.dumps(ID_PATTERN)) >= 1


def test_an_unparseable_file_in_an_unsafe_folder_goes_to_the_unknown_record(fleet: Fleet) -> None:
    raw_tree_branch(fleet, "refs/heads/fleet/t1/w9", [(b"deltas/w9\n/s1/d.json", "100644", b"{oops")])
    run(fleet, "merge")
    paths = git(fleet.path, "ls-tree", "-r", "--name-only", "main", "state/quarantine/").decode().split()
    assert paths == ["state/quarantine/1/_unknown.jsonl"]
    still_merges(fleet)


# -- 4: no input text reaches a commit message unescaped ---------------------------------


def test_a_forged_trailer_in_a_file_name_is_not_read(fleet: Fleet) -> None:
    g = good(fleet)
    raw_tree_branch(fleet, "refs/heads/fleet/t1/w1", [(b"deltas/w1/s1/x\nFleet-Tick: 99\n.json", "100644", b"{")])
    run(fleet, "merge")
    message = git(fleet.path, "log", "-1", "--format=%B", "main").decode()
    assert "\nFleet-Tick: 99" not in message and "x\\x0aFleet-Tick: 99\\x0a.json" in message
    assert tick_of(message) == 1 and g["id"] in ledger_ids(fleet)
    run(fleet, "replay", "--check")
    still_merges(fleet)


def test_tick_of_reads_only_fleets_own_trailers() -> None:
    ok = "fleet: tick 3\n\nApplied:\n  a\n\nFleet-Tick: 3\nFleet-Applied: 1\nFleet-Late: 0\n"
    assert tick_of(ok) == 3
    assert tick_of("x\nFleet-Tick: 99\n\nFleet-Tick: 3\n") == 3  # only the last paragraph
    assert tick_of("fleet: tick 3\n\nFleet-Tick: 99\n\nQuarantined:\n  y\n") is None
    assert tick_of("t\n\nFleet-Tick: 3\nFleet-Tick: 4\n") is None  # each key once
    assert tick_of("t\n\nSigned-off-by: a\nFleet-Tick: 4\n") is None  # known keys alone
    assert tick_of("t\n\nFleet-Tick: 4 \n") is None and tick_of("t\n\nFleet-Tick: -4\n") is None


def test_control_characters_in_a_conflict_path_stay_on_one_line(fleet: Fleet) -> None:
    from fleet.ids import printable as p
    assert p("a\nb") == "a\\x0ab" and p("bidi\u202e") == "bidi\\u202e" and p("\udcff") == "\\udcff"
    assert p("plain/é.json") == "plain/é.json" and p(p("a\nb")) == p("a\nb")


# -- 5, 6, 7, 8: numbers, depth, duplicate keys -------------------------------------------


def _merge_bad_text(f: Fleet, text: bytes, rule: str) -> None:
    g = good(f)
    raw_tree_branch(f, "refs/heads/fleet/t1/w9", [(b"deltas/w9/s1/bad.json", "100644", text)])
    r = run(f, "merge")
    [rec] = records(f)
    assert rule in rec["reason"], rec
    assert rule in r.output
    assert g["id"] in ledger_ids(f) and score(f) == 1
    still_merges(f)


def _delta_text(f: Fleet, tick: str = "1", ops: str | None = None, extra: str = "") -> bytes:
    ops = ops if ops is not None else '[{"op": "incr", "collection": "posts", "id": "ada-1", "path": ["score"], "by": 1}]'
    return (f'{{"id": "t{tick}-w9-s1-x", "tick": {tick}, "utc": "2026-01-01T00:00:00.000000Z", "worker": "w9", '
            f'"stream": "s1", "agent": "ada"{extra}, "ops": {ops}, "meta": {{}}}}').encode()


def test_a_tick_of_2_0_is_refused_and_never_bricks(fleet: Fleet) -> None:
    _merge_bad_text(fleet, _delta_text(fleet, tick="1.0"), "not an integer in the JSON text")
    assert not git(fleet.path, "ls-tree", "-r", "--name-only", "main", "state/ledger/1.0/")


@pytest.mark.parametrize("number,rule", [
    (str(2**70 + 1), "beyond 64 bits"),
    ("9" * 5000, "beyond 64 bits"),
    ("NaN", "NaN"),
    ("Infinity", "Infinity"),
    ("-Infinity", "Infinity"),
    ("1e400", "not finite"),
])
def test_numbers_json_cannot_hold_are_refused(fleet: Fleet, number: str, rule: str) -> None:
    ops = f'[{{"op": "set", "collection": "agents", "id": "ada", "path": ["bio"], "value": {number}}}]'
    _merge_bad_text(fleet, _delta_text(fleet, ops=ops), rule)


def test_a_float_increment_that_overflows_is_refused_not_written_as_null(fleet: Fleet) -> None:
    # a score that may hold any number (where the schema says integer, a float is refused anyway)
    schema = json.loads(fleet.read("schemas/post.schema.json"))
    schema["properties"]["score"]["type"] = "number"
    (fleet.path / "schemas/post.schema.json").write_bytes(canonical.dumps(schema))
    git(fleet.path, "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qam", "schema: a score of any number")
    ds = [fleet.delta(a, Op("incr", "posts", "ada-1", ("score",), 1.7e308), worker="w1") for a in ("basil", "cleo")]
    fleet.push(*ds)
    run(fleet, "merge")
    assert score(fleet) == 1.7e308 and len(ledger_ids(fleet)) == 1
    [rec] = records(fleet)
    assert "which JSON cannot hold" in rec["reason"]


@pytest.mark.parametrize("depth", [65, 300, 5000, 200_000])
def test_deep_nesting_is_refused_at_parse(fleet: Fleet, depth: int) -> None:
    value = "[" * depth + "]" * depth
    ops = f'[{{"op": "set", "collection": "agents", "id": "ada", "path": ["bio"], "value": {value}}}]'
    cfg = json.loads(fleet.read("state/config.json"))
    if len(_delta_text(fleet, ops=ops)) > cfg["limits"]["max_delta_bytes"]:
        cfg["limits"]["max_delta_bytes"] = 1_000_000
        (fleet.path / "state/config.json").write_bytes(canonical.dumps(cfg))
        git(fleet.path, "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qam", "config: limits")
    _merge_bad_text(fleet, _delta_text(fleet, ops=ops), "nested deeper than 64 levels")


def test_duplicate_keys_are_refused(fleet: Fleet) -> None:
    _merge_bad_text(fleet, _delta_text(fleet, extra=', "agent": "basil"'), "duplicate key 'agent'")


# -- 10: one bad entry never stops a tick ------------------------------------------------


def test_every_inbox_entry_is_decided_and_the_good_ones_apply(fleet: Fleet, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    ok = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 1), worker="w1")
    (inbox / "deltas/w1/s1").mkdir(parents=True)
    (inbox / file_path(ok)).write_bytes(canonical.dumps(ok))
    (inbox / "deltas/w1/s1/d.json").mkdir()
    (inbox / "deltas/w1/s1/d.json/inner.json").write_bytes(b"{")
    (inbox / "deltas/w1/s1/gone.json").symlink_to(tmp_path / "missing")
    (inbox / "top.json").write_bytes(canonical.dumps(ok))  # not in a worker folder
    run(fleet, "merge", "--inbox", str(inbox))
    why = {q["path"]: q["reason"] for q in records(fleet)}
    assert set(why) == {"deltas/w1/s1/d.json", "deltas/w1/s1/d.json/inner.json", "deltas/w1/s1/gone.json"}
    assert ledger_ids(fleet) == {ok["id"]}
    assert [p.name for p in inbox.iterdir()] == ["top.json"]  # not in a worker's folder: no delta, kept


def test_an_inbox_given_by_mistake_loses_nothing_fleet_did_not_read(fleet: Fleet, tmp_path: Path) -> None:
    """A downloads folder, a source folder, the repository's own folders: the
    merge never takes out a file it did not read and keep (a delta's bytes are in
    the ledger or the quarantine), and refuses any folder inside the repository."""
    dl = tmp_path / "downloads"
    (dl / "photos" / "2026").mkdir(parents=True)
    keep = {dl / "thesis.docx": b"precious", dl / "photos" / "2026" / "a.jpg": b"\xff\xd8",
            dl / "notes.json": b"{}", dl / "photos" / "album.json": b"[]"}
    for path, data in keep.items():
        path.write_bytes(data)
    head = fleet.main()
    r = run(fleet, "merge", "--inbox", str(dl), code=3)
    assert "no pending deltas" in r.output and "4 file(s) in the inbox are no delta files, left there unread" in r.output
    assert fleet.main() == head and all(path.read_bytes() == data for path, data in keep.items())
    for inside in ("state", ".git", "state/posts", "schemas"):
        listed = sorted(p for p in (fleet.path / inside).rglob("*"))
        r = run(fleet, "merge", "--inbox", str(fleet.path / inside), code=1)
        assert "is inside the repository" in r.output and len(r.output.strip().splitlines()) == 1
        assert sorted(p for p in (fleet.path / inside).rglob("*")) == listed


# -- 11, 12, 13: a model's output ----------------------------------------------------------


def _convert(calls: list[Any]) -> Any:
    from test_tools import convert
    return convert("ada", calls, tick=1)


def _nested(n: int) -> Any:
    value: Any = []
    for _ in range(n):
        value = [value]
    return value


@pytest.mark.parametrize("bad", [
    {"bio": 2**70},                                                   # 11: beyond 64 bits
    {"bio": "x" * 1_000_000},                                         # 12: a megabyte
    {"bio": _nested(300)},                                            # 13: 300 deep
    {"bio": float("nan")},
    {"bio": "\udcff"},
])
def test_a_bad_tool_input_is_rejected_alone_and_compactly(bad: dict[str, Any]) -> None:
    from fleet.tools import ToolCall
    calls = [ToolCall("update_bio", bad), ToolCall("comment", {"post": "ada-1", "body": "fine"})] * 30
    conv = _convert(calls)
    assert len(conv.ops) == 30 * 2  # every valid call kept: a comment is a create and a counter
    assert len(conv.rejected) == 21 and "20" in conv.rejected[-1]["reason"]  # at most 20, then a count
    line = canonical.dumps_line(conv.rejected)  # what the delta will hold can be written...
    assert len(line) < 20_000  # ...and stays small, whatever the model sent


def test_a_turn_that_cannot_be_written_becomes_that_agents_empty_delta() -> None:
    from fleet import delta as delta_mod
    from fleet.commands.work import _writable
    good = delta_mod.make(tick=1, worker="w1", stream="s1", agent="ada", meta={"noop": "x"})
    bad = delta_mod.make(tick=1, worker="w1", stream="s1", agent="basil", meta={"noop": "x", "usage": {"input_tokens": 2**70}})
    assert _writable(good, "offline") is good
    fixed = _writable(bad, "offline")
    assert fixed["agent"] == "basil" and fixed["ops"] == [] and "beyond 64 bits" in fixed["meta"]["error"]
    canonical.dumps(fixed)


@pytest.mark.parametrize("value", [2**70, -1, 1.5, "12", None])
def test_usage_from_the_api_must_be_token_counts(value: Any) -> None:
    from types import SimpleNamespace

    from fleet.providers.anthropic import _count
    if value is None:
        assert _count(SimpleNamespace(input_tokens=None), "input_tokens") == 0
        return
    with pytest.raises(ValueError, match="not a token count"):
        _count(SimpleNamespace(input_tokens=value), "input_tokens")


# -- found by an adversarial review after the first round ------------------------------


@pytest.mark.parametrize("where", ["repo", "git-inside", "home"])
def test_an_inbox_that_holds_a_repository_or_home_is_refused_and_nothing_removed(
        fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    if where == "repo":
        inbox = fleet.path
    elif where == "git-inside":
        inbox = tmp_path / "inbox"
        git(tmp_path, "init", "-q", str(inbox / "deltas" / "project"))
        (inbox / "deltas/project/notes.json").write_bytes(b"{}")
    else:
        inbox = tmp_path / "home"
        (inbox / "Documents").mkdir(parents=True)
        (inbox / "Documents/thesis.json").write_bytes(b"{}")
        monkeypatch.setenv("HOME", str(inbox / "Documents"))  # the inbox holds the home folder
    before = sorted(p for p in inbox.rglob("*"))
    head = fleet.main()
    r = run(fleet, "merge", "--inbox", str(inbox), code=1)
    assert "an inbox is a folder of delta files only" in r.output
    assert sorted(p for p in inbox.rglob("*")) == before and fleet.main() == head


def test_json_outside_the_worker_layout_and_hard_links_are_not_read(fleet: Fleet, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "deltas/w1/s1").mkdir(parents=True)
    (inbox / ".docker").mkdir()
    (inbox / ".docker/config.json").write_bytes(b'{"auths": {"x": {"auth": "c2VjcmV0"}}}')
    creds = tmp_path / "creds.json"
    creds.write_bytes(b'{"url": "https://bob:ghp_notinenv@github.com"}')
    os.link(creds, inbox / "deltas/w1/s1/h.json")
    _good_beside(fleet, inbox)
    r = run(fleet, "merge", "--inbox", str(inbox))
    why = {q["path"]: q for q in records(fleet)}
    assert "deltas/.docker/config.json" not in why  # no delta file: named, kept, never read
    assert ".docker/config.json: is not in a worker's folder" in r.output
    assert (inbox / ".docker/config.json").exists()
    assert "hard links" in why["deltas/w1/s1/h.json"]["reason"]
    assert all("raw" not in q for q in why.values())
    assert b"c2VjcmV0" not in history(fleet) and b"ghp_notinenv" not in history(fleet)
    assert creds.exists()


def test_a_deep_inbox_folder_does_not_stop_the_merge(fleet: Fleet, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    inbox = tmp_path / "inbox"
    deep = inbox / "w1"
    deep.mkdir(parents=True)
    made = []
    for _ in range(1100):  # (os.makedirs itself recurses too deep for this)
        deep = deep / "d"
        deep.mkdir()
        made.append(deep)
    request.addfinalizer(lambda: [d.rmdir() for d in reversed(made) if d.exists()])  # rmtree recurses too
    ok = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 1), worker="w1")
    (inbox / file_path(ok)).parent.mkdir(parents=True)
    (inbox / file_path(ok)).write_bytes(canonical.dumps(ok))
    r = run(fleet, "merge", "--inbox", str(inbox))
    assert ok["id"] in ledger_ids(fleet) and "deeper than 32 levels" in r.output


def test_records_that_wrap_deep_input_can_always_be_read_back(fleet: Fleet) -> None:
    """A delta nested 64 deep is accepted input; its quarantine record (one level
    deeper) and a conflict holding its value as an op (more levels) must not
    make status, merge or replay fail ever after."""
    deep = _nested(60)
    quarantined = fleet.delta("nobody", Op("set", "agents", "ada", ("bio",), _nested(58)), worker="w1")
    mixed = [fleet.delta("ada", Op("set", "agents", "ada", ("bio",), deep), worker="w2"),
             fleet.delta("ada", Op("incr", "agents", "ada", ("bio",), 1), worker="w3")]
    fleet.push(quarantined, *mixed)
    run(fleet, "merge")
    assert len(records(fleet)) == 1
    run(fleet, "status")
    run(fleet, "replay", "--check")
    still_merges(fleet)


@pytest.mark.parametrize("usage", [{"cost_usd": 1e303}, {"input_tokens": 2**64 - 1}, {"output_tokens": 10**12}])
def test_usage_beyond_any_real_turn_is_quarantined_not_a_crash(fleet: Fleet, usage: dict[str, Any]) -> None:
    g = good(fleet)
    bad = fleet.delta("ada", meta={"noop": "x", "usage": usage}, worker="w1")
    fleet.push(bad)
    run(fleet, "merge")
    [rec] = records(fleet)
    assert "maximum" in rec["reason"] and g["id"] in ledger_ids(fleet)
    still_merges(fleet)


def test_credentials_in_a_remote_url_are_never_printed(fleet: Fleet) -> None:
    r = run(fleet, "merge", "--remote", "https://bob:ghp_UrlTokenNotInEnv999@127.0.0.1:9/x.git", code=1)
    assert "ghp_UrlTokenNotInEnv999" not in r.output and "[REDACTED]@127.0.0.1" in r.output


@pytest.mark.parametrize("ref", ["file:///etc/hostname", "http://127.0.0.1:9/s.json", "file:///dev/zero"])
def test_a_schema_ref_never_leaves_the_schema(fleet: Fleet, ref: str) -> None:
    schema = json.loads(fleet.read("schemas/post.schema.json"))
    schema["properties"]["title"] = {"$ref": ref}
    (fleet.path / "schemas/post.schema.json").write_bytes(canonical.dumps(schema))
    r = run(fleet, "validate", code=1)
    assert "points outside the schema" in r.output


def test_a_symlink_or_submodule_in_state_is_refused(fleet: Fleet) -> None:
    from fleet.outside import refused_left
    base = fleet.main()
    (fleet.path / "state/posts/link.json").symlink_to("ada-1.json")
    git(fleet.path, "add", "state/posts/link.json")
    git(fleet.path, "update-index", "--add", "--cacheinfo", f"160000,{base},state/posts/sub.json")
    git(fleet.path, "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qm", "odd entries")
    found = refused_left(fleet.git, base, fleet.main())
    assert "symbolic link" in found["state/posts/link.json"] and "submodule" in found["state/posts/sub.json"]


@given(value=st.text(min_size=1, max_size=40), key=st.text(min_size=1, max_size=12))
@settings(max_examples=150, deadline=None)
def test_a_schema_error_quotes_hostile_text_as_one_printable_line(value: str, key: str) -> None:
    """Whatever a document holds (bidi overrides, escapes, newlines, surrogates),
    the rule it broke is told in one line with every hiding character escaped,
    as the merge tells it."""
    import jsonschema_rs

    from fleet import schemas

    v = jsonschema_rs.validator_for({"type": "object", "properties": {key: {"type": "string", "maxLength": 0}},
                                     "additionalProperties": False, "required": ["x"] if key != "x" else []})
    msg = schemas.first_error(v, {key: value})
    assert msg is not None and msg.startswith("at /")
    from fleet.ids import printable

    assert "\n" not in msg and printable(msg, 10_000) == msg, msg  # nothing left that could hide or forge


@pytest.mark.parametrize("rel", ["schemas/post.schema.json", "state/tools.json", "state/prompt.json"])
def test_validate_never_reads_a_declaration_file_through_a_link(fleet: Fleet, tmp_path: Path, rel: str) -> None:
    """A schema linked to a file outside the fleet was named as a link and then
    used: documents were judged by the link's target."""
    outside = tmp_path / "outside.json"
    target = {"type": "object", "required": ["zzz_marker"], "properties": {"zzz_marker": {"type": "string"}}}
    if rel != "schemas/post.schema.json":
        target = {"zzz_marker": {"description": "x"}} if rel == "state/tools.json" else {"rules": "{zzz_marker}"}
    outside.write_text(json.dumps(target))
    (fleet.path / rel).unlink()
    (fleet.path / rel).symlink_to(outside)
    r = run(fleet, "validate", code=1)
    assert f"{rel}: a symbolic link" in r.output and "zzz_marker" not in r.output, r.output


@pytest.mark.parametrize("kind", ["folder", "link", "fifo"])
@pytest.mark.parametrize("rel", ["state/config.json", "schemas/post.schema.json"])
def test_a_folder_or_link_where_validate_wants_a_file_is_named_as_what_it_is(fleet: Fleet, tmp_path: Path, kind: str,
                                                                            rel: str) -> None:
    """state/config.json as a folder was 'missing; is this a fleet repository?',
    a schema as a folder 'does not exist'."""
    path = fleet.path / rel
    keep = tmp_path / "kept.json"
    keep.write_bytes(path.read_bytes())
    path.unlink()
    if kind == "folder":
        path.mkdir()
    elif kind == "link":
        path.symlink_to(keep)
    else:
        os.mkfifo(path)
    r = run(fleet, "validate", code=1)
    said = {"folder": "a folder", "link": "a symbolic link", "fifo": "a FIFO"}[kind]
    if rel == "state/config.json":
        assert len(r.stderr.splitlines()) == 1 and f"state/config.json: is {said}" in r.stderr, r.output
    else:
        assert "missing or not a regular file" in r.output and "does not exist" not in r.output, r.output


# -- a delta's name and time agree with what it says of itself -------------------------------


_NOT_TIMES = st.builds(
    lambda y, mo, d, h, mi, s: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.000001Z",
    st.integers(1, 9999), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99),
    st.integers(0, 99)).filter(lambda t: not _is_time(t))


def _is_time(text: str) -> bool:
    import datetime as _dt

    try:
        _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return False
    return True


@given(kind=st.sampled_from(["stream", "name", "utc"]), utc=_NOT_TIMES,
       name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20))
@example(kind="utc", utc="2026-13-45T99:99:99.000000Z", name="x")
@example(kind="utc", utc="2027-02-29T00:00:00.000001Z", name="x")
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_delta_filed_under_another_name_or_timed_off_the_calendar_is_quarantined(
        tmp_path_factory: Any, kind: str, utc: str, name: str) -> None:
    """Its file named for another id or stream than its own, or a `utc` of digits that is no
    time (month 13, February 30): the merge took it, and status and log printed the time."""
    path = tmp_path_factory.mktemp("named") / "fleet"
    init(path)
    f = Fleet(path)
    inbox = path.parent / "inbox"
    body, _ = body_bytes(f, worker="w1")
    rel = file_path(body)
    if kind == "stream":
        rel = f"deltas/w1/s9/{body['id']}.json"
    elif kind == "name":
        rel = f"deltas/w1/s1/{name}.json"
        assume(name != body["id"])
    else:
        body["utc"] = utc
    (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
    (inbox / rel).write_bytes(canonical.dumps(body))
    ok = f.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 1), worker="w2")
    (inbox / file_path(ok)).parent.mkdir(parents=True, exist_ok=True)
    (inbox / file_path(ok)).write_bytes(canonical.dumps(ok))
    run(f, "merge", "--inbox", str(inbox))
    [rec] = records(f)
    assert ("no time on the calendar" if kind == "utc" else "is named for its stream and id") in rec["reason"], rec
    assert ledger_ids(f) == {ok["id"]}


_SEGMENT = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789_-."), min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..") and not s.startswith("."))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.tuples(st.lists(_SEGMENT, min_size=2, max_size=4), st.one_of(
           st.binary(max_size=200),
           st.dictionaries(st.sampled_from(["id", "worker", "db", "tick", "ops"]),
                           st.one_of(st.text(max_size=8), st.integers(-9, 9)), max_size=4).map(canonical.dumps))),
       min_size=1, max_size=6))
def test_a_folder_given_by_mistake_loses_nothing_and_publishes_nothing(
        fleet: Fleet, tmp_path_factory: pytest.TempPathFactory, files: list[tuple[list[str], bytes]]) -> None:
    """A folder that is no inbox (a source tree, a copy of state/: JSON files in
    folders, none a delta a worker wrote) is refused whole, before anything is
    read into the merge: every file stays, and main does not move."""
    inbox = tmp_path_factory.mktemp("notaninbox")
    wrote: dict[Path, bytes] = {}
    for parts, data in files:
        path = inbox.joinpath(*parts[:-1], parts[-1] + ".json")
        if any(p == path or p in path.parents or path in p.parents for p in wrote):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        wrote[path] = data
    def layout(p: Path) -> list[str]:
        parts = list(p.relative_to(inbox).parts)
        return parts if parts[0] == "deltas" else ["deltas", *parts]

    in_layout = [p for p in wrote if len(layout(p)) >= 4]
    for p in in_layout:  # none is a delta a worker wrote (the least of one: it names itself)
        try:
            d = json.loads(wrote[p])
        except ValueError:
            continue
        assume(not (isinstance(d, dict) and d.get("id") == p.stem and d.get("worker") == layout(p)[1]))
    before, seen = fleet.main(), history(fleet)
    r = fleet.fleet("merge", "--inbox", str(inbox))
    assert "Traceback" not in r.output
    if in_layout:
        assert r.exit_code == 1 and "is a delta" in r.output and len(r.output.strip().splitlines()) == 1, r.output
        assert fleet.main() == before
    assert {p: p.read_bytes() for p in wrote} == wrote  # every file where it was, as it was
    after = history(fleet)  # no file's bytes reached history (bytes it held before excepted)
    assert all(data[:40] not in after or data[:40] in seen for data in wrote.values() if len(data) >= 40)


@pytest.mark.parametrize("names", [["a/b/link1"], ["w1/s1/x.json", "w1/s1/y"], ["deltas/w1/s1/z.json", "top"]])
def test_a_folder_of_links_only_is_no_inbox_and_keeps_its_links(fleet: Fleet, tmp_path: Path,
                                                                 names: list[str]) -> None:
    """Links, FIFOs and the like are refused unread beside a delta; a folder of nothing
    else is no inbox: the merge and validate each say so in one line, and every link stays."""
    inbox = tmp_path / "links"
    for i, name in enumerate(names):
        (inbox / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(["/etc/hostname", "/nowhere", str(tmp_path)][i % 3], inbox / name)
    before, main = sorted(p.relative_to(inbox) for p in inbox.rglob("*")), fleet.main()
    for args in (("merge", "--inbox", str(inbox)), ("validate", str(inbox))):
        r = fleet.fleet(*args)
        assert r.exit_code == 1 and "is a delta" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert sorted(p.relative_to(inbox) for p in inbox.rglob("*")) == before and fleet.main() == main
