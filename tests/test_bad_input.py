"""Bad input: each gets one clear line naming the file and the rule, a non-zero exit
where the command failed, and loses nothing else. Real git repositories, never mocks.

Merge-side quarantines: the merge succeeds (exit 0), the other deltas apply, and the
reason is both in the output line and in state/quarantine/<tick>/<worker>.jsonl.
State-side problems (a broken file on main): the merge that needs the file fails with
one line naming it (exit 1), and every delta stays on its branch for a later merge.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Fleet, run

from fleet import canonical
from fleet.delta import Op, file_path


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout


def person_commit(f: Fleet, rel: str, data: bytes, message: str = "a person's edit") -> None:
    (f.path / rel).write_bytes(data)
    git(f.path, "add", rel)
    git(f.path, "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-q", "-m", message)


def set_limits(f: Fleet, **limits: int) -> None:
    cfg = json.loads(f.read("state/config.json"))
    cfg["limits"].update(limits)
    person_commit(f, "state/config.json", canonical.dumps(cfg), "config: limits")


def good(f: Fleet, tick: int = 1, worker: str = "wgood") -> dict[str, Any]:
    """A delta that applies: +1 on ada-1's score, from another worker."""
    d = f.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1), tick=tick, worker=worker)
    f.push(d)
    return d


def score(f: Fleet) -> int:
    return json.loads(f.read("state/posts/ada-1.json"))["score"]


def ledger_ids(f: Fleet) -> set[str]:
    out = set()
    for path in git(f.path, "ls-tree", "-r", "--name-only", "main", "state/ledger/").split():
        out |= {json.loads(line)["id"] for line in f.read(path).splitlines()}
    return out


def quarantine(f: Fleet, tick: int, worker: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in f.read(f"state/quarantine/{tick}/{worker}.jsonl").splitlines()]


def raw(f: Fleet, body: Any, name: str = "bad", worker: str = "w1", tick: int = 1) -> str:
    """Stage a delta file as a worker would, whatever is in it; returns its path."""
    rel = f"deltas/{worker}/s1/{name}.json"
    data = body if isinstance(body, bytes) else canonical.dumps(body)
    f.push_raw(worker, rel, data, tick=tick)
    return rel


def merged_with_quarantine(f: Fleet, rel: str, rule: str, *, worker: str = "w1", tick: int = 1,
                           applied: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """Merge; the bad file is quarantined with ``rule`` and the good deltas applied."""
    r = run(f, "merge")
    rec = is_quarantined(f, r, rel, rule, worker=worker, tick=tick)
    for d in applied:
        assert d["id"] in ledger_ids(f)
    assert f.branches() == []  # every file is accounted for: applied or quarantined
    return rec


def is_quarantined(f: Fleet, r: Any, rel: str, rule: str, *, worker: str = "w1", tick: int = 1) -> dict[str, Any]:
    """One output line names the file and the rule; so do the record and the commit message."""
    lines = [ln for ln in r.output.splitlines() if rel in ln]
    assert len(lines) == 1, r.output
    assert lines[0].strip().startswith(f"quarantined {rel} (") and rule in lines[0], lines[0]
    [rec] = [q for q in quarantine(f, tick, worker) if q["path"] == rel]
    assert rule in rec["reason"] and rec["tick"] == tick
    assert rule in git(f.path, "log", "-1", "--format=%B", "main")
    return rec


# -- delta files ---------------------------------------------------------------------


def test_malformed_json(fleet: Fleet) -> None:
    g = good(fleet)
    rel = raw(fleet, b'{"id": "t1-w1-s1-0", "tick": 1,')
    rec = merged_with_quarantine(fleet, rel, "malformed JSON", applied=[g])
    assert rec["raw"].startswith('{"id"') and rec["worker"] == "w1"
    assert score(fleet) == 1


def test_not_utf8(fleet: Fleet) -> None:
    g = good(fleet)
    rel = raw(fleet, b"\xff\xfe{\x00}\x00")
    merged_with_quarantine(fleet, rel, "malformed JSON", applied=[g])


SCHEMA = [
    (lambda b: b.pop("utc"), 'at /: "utc" is a required property (schemas/delta.schema.json)'),
    (lambda b: b.update(tick="one"), 'at /tick: "one" is not of type "integer" (schemas/delta.schema.json)'),
    (lambda b: b.update(tick=0), "at /tick: 0 is less than the minimum of 1 (schemas/delta.schema.json)"),
    (lambda b: b.update(utc="yesterday"), "at /utc: "),
    (lambda b: b.update(extra=1), "(schemas/delta.schema.json)"),
    (lambda b: b.update(ops=[], meta={}), "(schemas/delta.schema.json)"),  # an empty delta must say why
    (lambda b: b["ops"][0].pop("by"), 'at /ops/0: "by" is a required property (schemas/delta.schema.json)'),
    (lambda b: b["ops"][0].update(by="1"), 'at /ops/0/by: "1" is not of type "number" (schemas/delta.schema.json)'),
    (lambda b: b["ops"][0].update(path=[0]), "at /ops/0/path/0: 0 is not of type \"string\""),
]


def test_schema_violations(fleet: Fleet) -> None:
    g = good(fleet)
    files = {}
    for i, (mutate, rule) in enumerate(SCHEMA):
        body = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 1))
        mutate(body)
        files[raw(fleet, body, name=f"schema{i}")] = rule
    r = run(fleet, "merge")
    for rel, rule in files.items():
        is_quarantined(fleet, r, rel, rule)
    assert g["id"] in ledger_ids(fleet) and fleet.branches() == []
    assert score(fleet) == 1


def test_not_an_object(fleet: Fleet) -> None:
    g = good(fleet)
    files = [raw(fleet, json.dumps(body).encode(), name=f"n{i}") for i, body in enumerate([None, [1, 2], "delta", 7])]
    r = run(fleet, "merge")
    for rel in files:
        is_quarantined(fleet, r, rel, "is not of type \"object\" (schemas/delta.schema.json)")
    assert g["id"] in ledger_ids(fleet)


def test_unknown_op(fleet: Fleet) -> None:
    g = good(fleet)
    body = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 1))
    body["ops"][0]["op"] = "exec"
    rel = raw(fleet, body)
    merged_with_quarantine(fleet, rel, 'at /ops/0/op: "exec" is not one of', applied=[g])


def test_oversized_delta_limit_from_config(fleet: Fleet) -> None:
    set_limits(fleet, max_delta_bytes=2000)
    g = good(fleet)
    body = fleet.delta("ada", Op("set", "posts", "ada-1", ("body",), "x" * 3000))
    rel = raw(fleet, body)
    rec = merged_with_quarantine(fleet, rel, "over limits.max_delta_bytes (2000)", applied=[g])
    assert rec["reason"].startswith("delta is ") and rec["size"] > 2000
    assert len(rec["raw"]) <= 2000
    assert json.loads(fleet.read("state/posts/ada-1.json"))["body"] != "x" * 3000


def test_oversized_delta_default_limit(fleet: Fleet) -> None:
    g = good(fleet)
    body = fleet.delta("ada", Op("set", "posts", "ada-1", ("body",), "x" * 70000))
    rel = raw(fleet, body)
    merged_with_quarantine(fleet, rel, "over limits.max_delta_bytes (65536)", applied=[g])


def test_too_many_ops(fleet: Fleet) -> None:
    g = good(fleet)
    body = fleet.delta("cleo", *[Op("incr", "posts", "ada-1", ("score",), 1)] * 65)
    rel = raw(fleet, body)
    merged_with_quarantine(fleet, rel, "delta has 65 ops, over limits.max_ops (64)", applied=[g])
    assert score(fleet) == 1


UNSAFE = [
    ("id", "../../state/posts/ada-1", "/id"),
    ("id", "a/b", "/id"),
    ("id", "a..b", "/id"),
    ("worker", "w1/../w2", "/worker"),
    ("worker", "..", "/worker"),
    ("stream", "s/1", "/stream"),
    ("agent", "../ada", "/agent"),
    ("doc", "../../config", "/ops/0/id"),
    ("doc", "a\\b", "/ops/0/id"),
    ("doc", "/etc/passwd", "/ops/0/id"),
    ("collection", "../posts", "/ops/0/collection"),
    ("collection", "posts/..", "/ops/0/collection"),
]


def test_unsafe_ids(fleet: Fleet) -> None:
    """An id with a path separator or '..' (delta id, worker, stream, agent, doc id,
    collection): each file quarantined with its own line, nothing written outside."""
    g = good(fleet)
    files_before = set(git(fleet.path, "ls-tree", "-r", "--name-only", "main").split())
    others_before = git(fleet.path, "ls-tree", "-r", "main", "state/agents", "state/config.json", "schemas")
    files = {}
    for i, (where, value, at) in enumerate(UNSAFE):
        body = fleet.delta("ada", Op("set", "posts", "ada-1", ("tags",), ["pwned"]))
        if where in ("doc", "collection"):
            body["ops"][0]["id" if where == "doc" else "collection"] = value
        else:
            body[where] = value
        files[raw(fleet, body, name=f"unsafe{i}")] = at
    r = run(fleet, "merge")
    for rel, at in files.items():
        rec = is_quarantined(fleet, r, rel, f"at {at}: ")
        assert rec["reason"].endswith("(schemas/delta.schema.json)")
    assert g["id"] in ledger_ids(fleet) and fleet.branches() == []
    # the only new files are the engine's own records
    new_files = set(git(fleet.path, "ls-tree", "-r", "--name-only", "main").split()) - files_before
    assert new_files == {"state/ledger/1/wgood.jsonl", "state/quarantine/1/w1.jsonl"}
    assert git(fleet.path, "ls-tree", "-r", "main", "state/agents", "state/config.json", "schemas") == others_before
    assert "pwned" not in json.loads(fleet.read("state/posts/ada-1.json"))["tags"]


def test_delta_in_another_workers_folder(fleet: Fleet) -> None:
    g = good(fleet)
    body = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 5), worker="w2")
    rel = raw(fleet, body, worker="w1")
    merged_with_quarantine(fleet, rel, "worker 'w2' wrote into deltas/w1/, another worker's directory", applied=[g])


def test_unknown_agent_and_collection(fleet: Fleet) -> None:
    g = good(fleet)
    a = fleet.delta("mallory", Op("incr", "posts", "ada-1", ("score",), 1))
    b = fleet.delta("cleo", Op("incr", "widgets", "w", ("n",), 1), worker="w2")
    fleet.push(a, b)
    merged_with_quarantine(fleet, file_path(a), "agent 'mallory' is not in state/config.json agents", applied=[g])
    assert "unknown collection 'widgets' (state/config.json collections)" in quarantine(fleet, 1, "w2")[0]["reason"]


def test_out_of_authority_is_all_or_nothing(fleet: Fleet) -> None:
    g = good(fleet)
    d = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 10), Op("set", "posts", "ada-1", ("body",), "mine"))
    fleet.push(d)
    merged_with_quarantine(fleet, file_path(d), "agent cleo may not set posts/ada-1 body", applied=[g])
    assert score(fleet) == 1  # its allowed op did not apply either


def test_delta_that_would_make_state_invalid(fleet: Fleet) -> None:
    g = good(fleet)
    d = fleet.delta("ada", Op("set", "posts", "ada-1", ("title",), "t" * 300))
    fleet.push(d)
    merged_with_quarantine(fleet, file_path(d), "would make state/posts/ada-1.json invalid: at /title", applied=[g])


def test_worker_branch_writing_state_never_reaches_main(fleet: Fleet) -> None:
    g = good(fleet)
    doc = json.loads(fleet.read("state/posts/ada-1.json"))
    doc["title"] = "written by a worker"
    fleet.push_raw("w1", "state/posts/ada-1.json", canonical.dumps(doc))
    run(fleet, "merge")
    assert json.loads(fleet.read("state/posts/ada-1.json"))["title"] != "written by a worker"
    assert g["id"] in ledger_ids(fleet)


# -- ticks -----------------------------------------------------------------------------


def test_tick_far_ahead(fleet: Fleet) -> None:
    g = good(fleet)
    d = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 1), tick=40)
    rel = raw(fleet, d, tick=40)
    merged_with_quarantine(fleet, rel, "tick 40 is ahead of the next tick (1); main is at 0", applied=[g])
    assert score(fleet) == 1


def test_tick_long_merged(fleet: Fleet) -> None:
    set_limits(fleet, window=2)
    for _ in range(4):
        run(fleet, "merge", "--allow-empty")
    g = good(fleet, tick=5)
    old = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 1), tick=2, worker="slow")
    just = fleet.delta("dara", Op("incr", "posts", "ada-1", ("score",), 1), tick=3, worker="slow")  # within window
    fleet.push(old, just)
    merged_with_quarantine(
        fleet, file_path(old),
        "tick 2 was merged long ago: late deltas are accepted for 2 ticks (limits.window), main is at 4",
        worker="slow", tick=5, applied=[g, just])
    assert score(fleet) == 2


# -- reused ids ---------------------------------------------------------------------------


def test_reused_id_in_one_merge(fleet: Fleet) -> None:
    g = good(fleet)
    first = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 10), delta_id="t1-w1-same", utc="2030-01-01T00:00:00.000000Z")
    second = fleet.delta("dara", Op("incr", "posts", "ada-1", ("score",), 100), delta_id="t1-w1-same",
                         utc="2030-01-01T00:00:01.000000Z", stream="s2")
    fleet.push(first, second)
    merged_with_quarantine(fleet, file_path(second), "delta id t1-w1-same is reused with different content",
                           applied=[g, first])
    assert score(fleet) == 11


def test_reused_id_of_an_applied_delta(fleet: Fleet) -> None:
    first = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 10), delta_id="t1-w1-once")
    fleet.push(first)
    run(fleet, "merge")
    g = good(fleet, tick=2)
    again = dict(first, ops=[Op("incr", "posts", "ada-1", ("score",), 100).to_json()])
    rel = raw(fleet, again, name="again")
    merged_with_quarantine(fleet, rel, "delta id t1-w1-once was applied in tick 1 with different content",
                           tick=2, applied=[g])
    assert score(fleet) == 11


def test_reused_id_in_a_later_tick(fleet: Fleet) -> None:
    """A delta id names its tick and worker, so an id from tick 1 cannot come back in tick 2."""
    first = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 10), delta_id="t1-w1-reused")
    fleet.push(first)
    run(fleet, "merge")
    g = good(fleet, tick=2)
    again = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 100), delta_id="t1-w1-reused", tick=2, worker="w2")
    fleet.push(again)
    merged_with_quarantine(fleet, file_path(again), "must start with 't2-w2-'", worker="w2", tick=2, applied=[g])
    assert score(fleet) == 11


# -- broken files on main ----------------------------------------------------------------------


def _bom(data: bytes) -> bytes:
    return b"\xef\xbb\xbf" + data


def _markers(data: bytes) -> bytes:
    return b"<<<<<<< HEAD\n" + data + b"=======\n" + data.replace(b"decoration", b"theater") + b">>>>>>> tick-7\n"


@pytest.mark.parametrize("breaks, rule", [
    (_bom, "starts with a byte-order mark (BOM)"),
    (_markers, "contains git conflict markers"),
])
def test_broken_state_file_on_main(fleet: Fleet, breaks: Any, rule: str) -> None:
    rel = "state/posts/ada-1.json"
    original = fleet.read(rel)
    person_commit(fleet, rel, breaks(original), "a bad edit")

    # validate names the file and the rule
    lines = run(fleet, "validate", code=1).stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{rel}: ") and rule in lines[0]

    # a merge that does not need the file goes on
    other = fleet.delta("fen", Op("incr", "agents", "ada", ("karma",), 1), worker="w0")
    fleet.push(other)
    run(fleet, "merge")

    # a merge that needs it fails with one line, and keeps every delta
    d1 = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 1), tick=2)
    d2 = fleet.delta("basil", Op("incr", "agents", "basil", ("karma",), 1), tick=2, worker="w2")
    fleet.push(d1, d2)
    head, branches = fleet.main(), fleet.branches()
    r = run(fleet, "merge", code=1)
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith(f"fleet: {rel}: ") and rule in r.stderr
    assert fleet.main() == head and fleet.branches() == branches == ["refs/heads/fleet/t2/w1", "refs/heads/fleet/t2/w2"]
    run(fleet, "merge", "--json", code=1)  # and again: nothing moved

    # once a person fixes the file, the next merge applies them all
    person_commit(fleet, rel, original, "fix the bad edit")
    r = run(fleet, "merge")
    assert r.output.startswith("tick 2: 2 applied, 0 quarantined")
    assert {d1["id"], d2["id"], other["id"]} <= ledger_ids(fleet) and score(fleet) == 1
    # named, but not refused for ever: the merge never built on the broken file
    r = run(fleet, "replay", "--check")
    assert f"'a bad edit'): modified {rel} (invalid, fixed since: " in r.stdout and rule in r.stdout


def test_hand_edited_invalid_document_on_main(fleet: Fleet) -> None:
    rel = "state/posts/ada-1.json"
    original = fleet.read(rel)
    doc = json.loads(original)
    doc["score"] = "lots"
    person_commit(fleet, rel, canonical.dumps(doc), "make it better")

    lines = run(fleet, "validate", code=1).stdout.splitlines()
    assert lines == [f'{rel}: at /score: "lots" is not of type "integer" (schemas/post.schema.json)']

    d1 = fleet.delta("ada", Op("add", "posts", "ada-1", ("tags",), "new"))
    d2 = fleet.delta("basil", Op("incr", "agents", "basil", ("karma",), 1), worker="w2")
    fleet.push(d1, d2)
    head = fleet.main()
    r = run(fleet, "merge", code=1)
    assert r.stderr.splitlines() == [
        f'fleet: {rel}: the state on main is invalid: at /score: "lots" is not of type "integer" '
        "(schemas/post.schema.json); fix the file or revert the commit that broke it"
    ]
    assert fleet.main() == head and len(fleet.branches()) == 2

    person_commit(fleet, rel, original, "revert")
    run(fleet, "merge")
    assert {d1["id"], d2["id"]} <= ledger_ids(fleet)
    assert "new" in json.loads(fleet.read(rel))["tags"]


def test_document_whose_id_does_not_match_its_file(fleet: Fleet) -> None:
    rel = "state/posts/ada-1.json"
    doc = json.loads(fleet.read(rel))
    doc["id"] = "ada-2"
    person_commit(fleet, rel, canonical.dumps(doc))
    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1)))
    r = run(fleet, "merge", code=1)
    assert len(r.stderr.splitlines()) == 1 and rel in r.stderr and "its 'id' must be 'ada-1'" in r.stderr
    assert fleet.branches() == ["refs/heads/fleet/t1/w1"]


def _posts_also_as(config: bytes, name: str) -> bytes:
    """The config with a copy of the posts collection under ``name``."""
    cfg = json.loads(config)
    cfg["collections"][name] = cfg["collections"]["posts"]
    return canonical.dumps(cfg)


BROKEN_CONFIG = [
    (lambda c: b"{\n  \"agents\": ", "state/config.json: malformed JSON"),
    (lambda c: _bom(c), "state/config.json: starts with a byte-order mark"),
    (lambda c: canonical.dumps({**json.loads(c), "limits": {"window": -1}}),
     "state/config.json: at /limits/window: -1 is less than the minimum of"),
    (lambda c: canonical.dumps({k: v for k, v in json.loads(c).items() if k != "agents"}),
     'state/config.json: at /: "agents" is a required property (schemas/config.schema.json)'),
    (lambda c: _posts_also_as(c, "ledger"),
     "state/config.json: collection name 'ledger' is reserved for the merge engine"),
    (lambda c: _posts_also_as(c, "Quarantine"),
     "state/config.json: collection name 'Quarantine' is reserved for the merge engine"),
    (lambda c: _posts_also_as(c, "prompt.JSON"),
     "state/config.json: collection name 'prompt.JSON' ends in .json"),
    (lambda c: _posts_also_as(c, "Posts"),
     "state/config.json: collections 'Posts' and 'posts' differ only in case"),
    (lambda c: canonical.dumps({**json.loads(c), "agents": {**json.loads(c)["agents"], "BASIL": {}}}),
     "state/config.json: agents 'BASIL' and 'basil' differ only in case"),
]


def test_broken_config(fleet: Fleet) -> None:
    d = fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1))
    fleet.push(d)
    original = fleet.read("state/config.json")
    for breaks, rule in BROKEN_CONFIG:
        person_commit(fleet, "state/config.json", breaks(original), "edit config")
        head = fleet.main()
        for args in (("validate",), ("merge",), ("status",), ("log",)):
            r = run(fleet, *args, code=1)
            assert r.stdout == "", args
            assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(f"fleet: {rule}"), (args, r.stderr)
        assert fleet.main() == head and fleet.branches() == ["refs/heads/fleet/t1/w1"]
        person_commit(fleet, "state/config.json", original, "fix config")
    run(fleet, "merge")
    assert d["id"] in ledger_ids(fleet)
    run(fleet, "replay", "--check")


def test_malformed_world_schema_on_main(fleet: Fleet) -> None:
    person_commit(fleet, "schemas/post.schema.json", b'{"type": "object",', "edit schema")
    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1)))
    r = run(fleet, "merge", code=1)
    assert len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("fleet: schemas/post.schema.json: malformed JSON")
    assert fleet.branches() == ["refs/heads/fleet/t1/w1"]


def test_invalid_world_schema_on_main(fleet: Fleet) -> None:
    person_commit(fleet, "schemas/post.schema.json", b'{"type": "object", "required": 7}\n', "edit schema")
    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1)))
    r = run(fleet, "merge", code=1)
    assert len(r.stderr.splitlines()) == 1 and "schemas/post.schema.json" in r.stderr
    assert fleet.branches() == ["refs/heads/fleet/t1/w1"]


# -- the whole set at once ------------------------------------------------------------------------


def test_everything_bad_at_once_loses_nothing_good(fleet: Fleet) -> None:
    goods = [fleet.delta(a, Op("incr", "posts", "ada-1", ("score",), 1), worker=f"g{i}")
             for i, a in enumerate(("basil", "cleo", "dara", "eli"))]
    fleet.push(*goods)
    bad = [
        raw(fleet, b"{", name="malformed"),
        raw(fleet, {"id": "x"}, name="schema"),
        raw(fleet, dict(fleet.delta("cleo"), ops=[{"op": "rm", "collection": "posts", "id": "ada-1"}]), name="op"),
        raw(fleet, fleet.delta("ada", Op("set", "posts", "ada-1", ("body",), "x" * 70000)), name="big"),
        raw(fleet, dict(fleet.delta("ada"), id="../x", meta={"noop": "n"}), name="dotdot"),
        raw(fleet, fleet.delta("ada", Op("incr", "posts", "ada-1", ("score",), 1), tick=99), name="ahead", tick=99),
    ]
    r = run(fleet, "merge", "--json")
    data = json.loads(r.stdout)
    assert data["applied"] == 4 and sorted(q["path"] for q in data["quarantined"]) == sorted(bad)
    assert {d["id"] for d in goods} <= ledger_ids(fleet) and score(fleet) == 4
    assert sorted(q["path"] for q in quarantine(fleet, 1, "w1")) == sorted(bad)
    assert fleet.branches() == []
    run(fleet, "replay", "--check")


# -- engine files on main ------------------------------------------------------------------------


def _held(fleet: Fleet) -> str:
    fleet.push(fleet.delta("ada", Op("set", "posts", "ada-1", ("channel",), "general")),
               fleet.delta("ada", Op("set", "posts", "ada-1", ("channel",), "ideas"), worker="w2"))
    run(fleet, "merge")
    [path] = git(fleet.path, "ls-tree", "-r", "--name-only", "main", "state/conflicts/").split()
    return path


def test_hand_edited_conflict_file_on_main(fleet: Fleet) -> None:
    rel = _held(fleet)
    doc = json.loads(fleet.read(rel))
    del doc["collection"]
    person_commit(fleet, rel, canonical.dumps(doc), "decide by hand")
    assert run(fleet, "validate", code=1).stdout.startswith(f"{rel}: ")
    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1), tick=2))
    r = run(fleet, "merge", code=1)
    # a change to the engine's own file after a tick: refused as such, with the commit to revert
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(f"fleet: {rel}: held conflicts are written only "
                                                                   "by the merge engine") and "git revert" in r.stderr
    assert fleet.branches() == ["refs/heads/fleet/t2/w1"]


def test_conflict_file_with_a_bom_on_main(fleet: Fleet) -> None:
    rel = _held(fleet)
    person_commit(fleet, rel, _bom(fleet.read(rel)), "a bad edit")
    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1), tick=2))
    r = run(fleet, "merge", code=1)
    [line] = r.stderr.splitlines()
    assert line.startswith(f"fleet: {rel}: held conflicts are written only by the merge engine") and "git revert" in line
    assert fleet.branches() == ["refs/heads/fleet/t2/w1"]


def test_broken_fleet_document_on_main(fleet: Fleet) -> None:
    doc = json.loads(fleet.read("state/fleet.json"))
    doc["tick"] = "zero"
    person_commit(fleet, "state/fleet.json", canonical.dumps(doc), "oops")
    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1)))
    for args in (("merge",), ("status",)):
        r = run(fleet, *args, code=1)
        assert r.stderr.splitlines() == [
            'fleet: state/fleet.json: at /tick: "zero" is not of type "integer" (schemas/fleet.schema.json)'], args
    assert fleet.branches() == ["refs/heads/fleet/t1/w1"]
    assert run(fleet, "validate", code=1).stdout.startswith("state/fleet.json: at /tick")
