"""`fleet log [DOC]`: which deltas changed a document, by whom, in which tick."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Fleet, run

from fleet.delta import Op


@pytest.fixture
def fresh(tmp_path: Path) -> Fleet:
    from fleet.commands.init import init

    init(tmp_path / "fresh")
    return Fleet(tmp_path / "fresh")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Fleet, dict[str, dict[str, Any]]]:
    """One history for the read-only tests below (log never writes main)."""
    from fleet.commands.init import init

    path = tmp_path_factory.mktemp("log") / "fleet"
    init(path)
    fleet = Fleet(path)
    d = {
        "t1_ada": fleet.delta("ada", Op("add", "posts", "ada-1", ("tags",), "a"), worker="w1"),
        "t1_basil": fleet.delta("basil", Op("incr", "agents", "basil", ("karma",), 1), worker="w2"),
        "t1_bad": fleet.delta("cleo", Op("set", "posts", "ada-1", ("title",), "mine"), worker="w2"),
    }
    fleet.push(d["t1_ada"], d["t1_basil"], d["t1_bad"])
    run(fleet, "merge")
    d["t2_basil"] = fleet.delta("basil", Op("incr", "agents", "basil", ("karma",), 1), tick=2, worker="w1")
    fleet.push(d["t2_basil"])
    run(fleet, "merge")
    d["t3_cleo"] = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 1), tick=3, worker="w3")
    d["t3_ada"] = fleet.delta("ada", Op("incr", "agents", "basil", ("karma",), 2), Op("add", "posts", "ada-1", ("tags",), "b"),
                              tick=3, worker="w1")
    d["late"] = fleet.delta("eli", Op("incr", "posts", "ada-1", ("score",), 1), tick=2, worker="slow")
    fleet.push(d["t3_cleo"], d["t3_ada"], d["late"])
    run(fleet, "merge")
    return fleet, d


@pytest.fixture
def fleet(shared: tuple[Fleet, dict[str, dict[str, Any]]]) -> Fleet:
    """In this module, `fleet` is the shared history (conftest's fresh one is `fresh`)."""
    return shared[0]


@pytest.fixture
def history(shared: tuple[Fleet, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return shared[1]


def test_log_of_a_document(fleet: Fleet, history: dict[str, dict[str, Any]]) -> None:
    data = json.loads(run(fleet, "log", "posts/ada-1", "--json").stdout)
    ids = [e["delta"] for e in data]
    # newest tick first; t2 did not touch ada-1; the quarantined one did not change it
    assert set(ids) == {history[k]["id"] for k in ("t1_ada", "t3_cleo", "t3_ada", "late")}
    assert [e["tick"] for e in data] == [3, 3, 3, 1]
    by_id = {e["delta"]: e for e in data}
    e = by_id[history["t3_cleo"]["id"]]
    assert (e["agent"], e["worker"], e["status"]) == ("cleo", "w3", "applied")
    assert e["ops"] == ["incr posts/ada-1 score"]
    assert e["utc"] == history["t3_cleo"]["utc"] and len(e["commit"]) == 40
    assert by_id[history["t3_ada"]["id"]]["ops"] == ["incr agents/basil karma", "add posts/ada-1 tags"]
    assert by_id[history["late"]["id"]]["worker"] == "slow"
    assert by_id[history["t1_ada"]["id"]]["tick"] == 1


def test_log_text(fleet: Fleet, history: dict[str, dict[str, Any]]) -> None:
    r = run(fleet, "log", "posts/ada-1")
    lines = r.stdout.splitlines()
    assert len(lines) == 4
    line = next(ln for ln in lines if history["t1_ada"]["id"] in ln)
    assert line.startswith("tick 1 ") and " ada " in line and " w1 " in line and "add posts/ada-1 tags" in line
    # the same document by its file name
    assert run(fleet, "log", "state/posts/ada-1.json").stdout == r.stdout


def test_log_agent_filter(fleet: Fleet, history: dict[str, dict[str, Any]]) -> None:
    data = json.loads(run(fleet, "log", "agents/basil", "--agent", "basil", "--json").stdout)
    assert [(e["delta"], e["tick"]) for e in data] == [(history["t2_basil"]["id"], 2), (history["t1_basil"]["id"], 1)]
    data = json.loads(run(fleet, "log", "agents/basil", "--json").stdout)
    assert history["t3_ada"]["id"] in [e["delta"] for e in data] and len(data) == 3
    data = json.loads(run(fleet, "log", "--agent", "cleo", "--json").stdout)
    assert {(e["delta"], e["status"]) for e in data} == {
        (history["t3_cleo"]["id"], "applied"), (history["t1_bad"]["id"], "quarantined")}
    q = next(e for e in data if e["status"] == "quarantined")
    assert "may not set posts/ada-1 title" in q["reason"] and q["tick"] == 1
    r = run(fleet, "log", "posts/ada-1", "--agent", "dara")  # an agent of the config that never touched it
    assert r.stdout == "no deltas found\n"
    assert json.loads(run(fleet, "log", "posts/ada-1", "--agent", "dara", "--json").stdout) == []


@pytest.mark.parametrize("args", [["--agent", "nobody"], ["posts/ada-1", "--agent", "nobody"],
                                  ["--agent", "Basil"], ["--agent", "ba\x1bsil"]])
def test_log_of_an_agent_unknown_to_config_and_history_is_one_line_naming_it(fleet: Fleet, args: list[str]) -> None:
    r = run(fleet, "log", *args, code=1)
    [line] = r.output.strip().splitlines()
    assert line.startswith("fleet: --agent ") and "unknown: no agent of that name in state/config.json" in line
    assert "\x1b" not in line


def test_log_of_an_agent_only_in_the_history_lists_its_deltas(fresh: Fleet) -> None:
    """An agent no longer (or never) in the config whose deltas the ledger holds is no typo."""
    fleet = fresh
    ghost = fleet.delta("ghost", Op("incr", "posts", "ada-1", ("score",), 1))
    fleet.push(ghost)
    run(fleet, "merge")
    data = json.loads(run(fleet, "log", "--agent", "ghost", "--json").stdout)
    assert [(e["delta"], e["status"]) for e in data] == [(ghost["id"], "quarantined")]


def test_log_everything_and_limit(fleet: Fleet, history: dict[str, dict[str, Any]]) -> None:
    data = json.loads(run(fleet, "log", "--json").stdout)
    assert {e["delta"] for e in data} == {d["id"] for d in history.values()}
    assert len(json.loads(run(fleet, "log", "-n", "2", "--json").stdout)) == 2
    r = run(fleet, "log")
    assert "QUARANTINED: agent cleo may not set posts/ada-1 title" in r.stdout


def test_log_of_a_document_nobody_changed(fleet: Fleet, history: dict[str, dict[str, Any]]) -> None:
    assert json.loads(run(fleet, "log", "posts/cleo-1", "--json").stdout) == []


def test_log_of_a_created_document(fresh: Fleet) -> None:
    fleet = fresh
    c = fleet.delta("cleo", Op("create", "comments", "cleo-9", (), {
        "id": "cleo-9", "post": "ada-1", "author": "cleo", "body": "agreed"}))
    fleet.push(c)
    run(fleet, "merge")
    data = json.loads(run(fleet, "log", "comments/cleo-9", "--json").stdout)
    assert [(e["delta"], e["ops"]) for e in data] == [(c["id"], ["create comments/cleo-9"])]


def test_log_bad_document_name(fresh: Fleet) -> None:
    fleet = fresh
    for bad in ("ada-1", "posts/", "/ada-1", "state/posts/.json", "po\x1bsts/ada-1"):
        r = run(fleet, "log", bad, code=2)  # a usage error: the argument is malformed
        assert len(r.stderr.splitlines()) == 1 and "<collection>/<id>" in r.stderr
    # well formed, but of no collection, now or in the history: a typo, said as one
    r = run(fleet, "log", "widgets/ada-1", code=1)
    assert r.stderr.strip().splitlines() == [
        "fleet: widgets/ada-1: 'widgets' is not a collection in state/config.json (collections: agents, channels, "
        "comments, follows, posts, reactions), and no document of that name is in the fleet's history"]


@pytest.mark.parametrize("shard", [0, 2])
def test_log_of_a_document_of_a_removed_collection_lists_its_history(fresh: Fleet, shard: int) -> None:
    """The log reads history: a collection since dropped from the config (its folder
    git rm'd) once made `fleet log <collection>/<id>` say "name a document as
    <collection>/<id>", of a name that was one, with ticks of history."""
    import hashlib

    fleet = fresh
    git = ["git", "-c", "user.name=p", "-c", "user.email=p@x"]
    if shard:
        cfg = json.loads(fleet.read("state/config.json"))
        cfg["collections"]["comments"]["shard"] = shard
        (fleet.path / "state/config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        subprocess.run([*git, "commit", "-qam", "shard comments"], cwd=fleet.path, check=True)
    c = fleet.delta("cleo", Op("create", "comments", "cleo-9", (), {
        "id": "cleo-9", "post": "ada-1", "author": "cleo", "body": "agreed"}))
    fleet.push(c)
    run(fleet, "merge")
    h = hashlib.sha256(b"cleo-9").hexdigest()[:shard]
    assert (fleet.path / "state/comments" / h / "cleo-9.json").is_file()
    cfg = json.loads(fleet.read("state/config.json"))
    del cfg["collections"]["comments"]
    (fleet.path / "state/config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    subprocess.run(["git", "rm", "-rq", "state/comments"], cwd=fleet.path, check=True)
    subprocess.run([*git, "commit", "-qam", "drop comments"], cwd=fleet.path, check=True)
    for name in ("comments/cleo-9", f"state/comments/{h + '/' if h else ''}cleo-9.json"):
        data = json.loads(run(fleet, "log", name, "--json").stdout)
        assert [(e["status"], e["delta"] or e["reason"]) for e in data] == [("outside", "drop comments"),
                                                                             ("applied", c["id"])], data
        assert data[0]["ops"] == [f"deleted state/comments/{h + '/' if h else ''}cleo-9.json"]
    r = run(fleet, "log", "comments/cleo-9", "--field", "body", code=1)  # a field's value is read on main
    [line] = r.stderr.strip().splitlines()
    assert "no such document on the fleet's main: 'comments' is not a collection in state/config.json" in line
    assert "`fleet log comments/cleo-9` without --field lists the history it has" in line


def test_log_with_origin(origin_fleet: tuple[Fleet, Path]) -> None:
    f, bare = origin_fleet
    d = f.delta("ada", Op("add", "posts", "ada-1", ("tags",), "o"))
    f.push(d)
    subprocess.run(["git", "push", "--quiet", "origin", "refs/heads/fleet/*:refs/heads/fleet/*"], cwd=f.path, check=True)
    run(f, "merge")
    data = json.loads(run(f, "log", "posts/ada-1", "--json").stdout)
    assert [e["delta"] for e in data] == [d["id"]]


def test_log_reads_history_made_under_older_limits(fresh: Fleet) -> None:
    fleet = fresh
    from fleet import canonical

    d = fleet.delta("basil", *[Op("incr", "posts", "ada-1", ("score",), 1)] * 3)
    fleet.push(d)
    run(fleet, "merge")
    cfg = json.loads(fleet.read("state/config.json"))
    cfg["limits"]["max_ops"] = 2  # a person tightens the limit later
    (fleet.path / "state/config.json").write_bytes(canonical.dumps(cfg))
    subprocess.run(["git", "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qam", "config: max_ops 2"],
                   cwd=fleet.path, check=True)
    data = json.loads(run(fleet, "log", "posts/ada-1", "--json").stdout)
    assert [e["delta"] for e in data] == [d["id"]] and len(data[0]["ops"]) == 3
    assert run(fleet, "log").stdout.count(d["id"]) == 1


def test_log_says_why_an_agent_changed_nothing(fresh: Fleet) -> None:
    fleet = fresh
    fleet.push(fleet.delta("dara", meta={"noop": "nothing worth saying"}))
    run(fleet, "merge")
    r = run(fleet, "log", "--agent", "dara")
    assert "no change: nothing worth saying" in r.output
    entry = json.loads(run(fleet, "log", "--agent", "dara", "--json").output)[0]
    assert (entry["ops"], entry["reason"]) == ([], "nothing worth saying")


def test_log_attributes_a_hand_edit_to_its_commit_and_author(fresh: Fleet) -> None:
    """Main has one writer: a person's change to a document is in its audit trail,
    with the commit and the author, between the deltas around it."""
    from fleet import canonical

    fleet = fresh
    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1)))
    run(fleet, "merge")
    doc = json.loads(fleet.read("state/posts/ada-1.json"))
    doc["title"] = "Edited by a person"
    (fleet.path / "state/posts/ada-1.json").write_bytes(canonical.dumps(doc))
    subprocess.run(["git", "-c", "user.name=Pat", "-c", "user.email=pat@x", "commit", "-qam", "retitle"],
                   cwd=fleet.path, check=True)
    mine = fleet.main()
    fleet.push(fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 1), tick=2))
    run(fleet, "merge")
    data = json.loads(run(fleet, "log", "posts/ada-1", "--json").stdout)
    assert [(e["status"], e["tick"]) for e in data] == [("applied", 2), ("outside", 1), ("applied", 1)]
    e = data[1]
    assert (e["commit"], e["author"], e["reason"], e["ops"]) == (mine, "Pat <pat@x>", "retitle",
                                                                 ["modified state/posts/ada-1.json"])
    text = run(fleet, "log", "posts/ada-1").stdout.splitlines()
    assert f"commit {mine[:12]} by Pat <pat@x>, outside the merge engine ('retitle'): " \
           "modified state/posts/ada-1.json" in text[1]
    # with no document, it is in the whole trail too; an agent's trail has no person in it
    assert mine in [e["commit"] for e in json.loads(run(fleet, "log", "--json").stdout) if e["status"] == "outside"]
    assert all(e["status"] != "outside" for e in json.loads(run(fleet, "log", "--agent", "cleo", "--json").stdout))
    # a document it did not touch does not list it
    assert all(e["status"] != "outside" for e in json.loads(run(fleet, "log", "posts/cleo-1", "--json").stdout))


# -- issue 14: blame, one delta's fate, held sets, decisions and reverts in the trail ----------
def test_log_of_a_document_that_never_was_exits_1(fleet: Fleet) -> None:
    r = run(fleet, "log", "posts/nope", code=1)
    assert r.output.strip() == "fleet: posts/nope: no such document on the fleet's main (tick 3), and none in its history"
    r = run(fleet, "log", "posts/nope", "--field", "title", code=1)
    assert len(r.output.strip().splitlines()) == 1 and "posts/nope: no such document" in r.output


def test_blame_names_the_delta_that_last_changed_each_field(fleet: Fleet, history: dict[str, dict[str, Any]]) -> None:
    rows = json.loads(run(fleet, "log", "agents/basil", "--field", "karma", "--field", "name", "--json").stdout)
    karma, name = rows
    d = history["t3_ada"]
    assert (karma["how"], karma["delta"], karma["agent"], karma["worker"], karma["tick"], karma["utc"]) == \
        ("delta", d["id"], "ada", "w1", 3, d["utc"])
    assert karma["value"] == json.loads(fleet.read("state/agents/basil.json"))["karma"]
    assert name["how"] == "genesis"
    # two deltas of one tick added to the score: the last in delta order, and the other named too
    [score] = json.loads(run(fleet, "log", "posts/ada-1", "--field", "score", "--json").stdout)
    first, second = sorted([history["late"], history["t3_cleo"]], key=lambda b: (b["tick"], b["utc"]))
    assert score["delta"] == second["id"] and score["also"] == [first["id"]]
    text = run(fleet, "log", "agents/basil", "--field", "karma").stdout
    assert text.startswith(f"karma = {karma['value']}: delta {d['id']} by ada on w1, tick 3, {d['utc']}")
    every = json.loads(run(fleet, "log", "agents/basil", "--field", "*", "--json").stdout)
    assert [r["field"] for r in every] == sorted(json.loads(fleet.read("state/agents/basil.json")))


def test_blame_bad_input(fleet: Fleet) -> None:
    r = run(fleet, "log", "agents/basil", "--field", "nope", code=1)
    assert len(r.output.strip().splitlines()) == 1 and "agents/basil: has no field 'nope'" in r.output
    r = run(fleet, "log", "--field", "karma", code=2)
    assert "--field needs a document" in r.output


@pytest.mark.parametrize("field", ["karma.x", "memory.0.text", "name.first.last", "karma..", ".", "persona.0"])
def test_blame_of_a_path_through_a_value_that_is_no_object_is_one_line(fleet: Fleet, field: str) -> None:
    """A path into a number, a string or a list was an internal error (PathError)."""
    r = run(fleet, "log", "agents/basil", "--field", field, code=1)
    assert r.output.strip().splitlines() == [r.output.strip()] and "has no field" in r.output, r.output


def test_a_documents_log_keeps_its_history_across_a_change_of_sharding(fleet: Fleet) -> None:
    """Once a collection is sharded and its files moved where validate says, the
    log of a document showed only the move; the deltas before it are still its own."""
    import hashlib

    tick = json.loads(fleet.read("state/fleet.json"))["tick"]
    first = fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1), tick=tick + 1)
    fleet.push(first)
    run(fleet, "merge")
    cfg = json.loads(fleet.read("state/config.json"))
    cfg["collections"]["posts"]["shard"] = 1
    (fleet.path / "state/config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    for f in sorted((fleet.path / "state/posts").glob("*.json")):
        shard = hashlib.sha256(f.stem.encode()).hexdigest()[:1]
        (f.parent / shard).mkdir(exist_ok=True)
        subprocess.run(["git", "mv", str(f), str(f.parent / shard / f.name)], cwd=fleet.path, check=True)
    subprocess.run(["git", "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qam", "shard posts"],
                   cwd=fleet.path, check=True)
    run(fleet, "validate")  # (exits 0: every file is where the new config says)
    second = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 1), tick=tick + 2)
    fleet.push(second)
    run(fleet, "merge")
    entries = json.loads(run(fleet, "log", "posts/ada-1", "--json").stdout)
    ids = [e["delta"] for e in entries]
    assert second["id"] in ids and first["id"] in ids and ids.index(second["id"]) < ids.index(first["id"])
    assert "shard posts" in [e["reason"] for e in entries if e["status"] in ("outside", "setup")]


def test_one_deltas_fate(fleet: Fleet, history: dict[str, dict[str, Any]]) -> None:
    f = json.loads(run(fleet, "log", "--delta", history["late"]["id"], "--json").stdout)
    assert (f["status"], f["tick"], f["delta_tick"], f["agent"], f["worker"]) == ("applied", 3, 2, "eli", "slow")
    assert "late: made for tick 2" in f["reason"]
    q = json.loads(run(fleet, "log", "--delta", history["t1_bad"]["id"], "--json").stdout)
    assert q["status"] == "quarantined" and "may not set posts/ada-1 title" in q["reason"] and q["tick"] == 1
    out = run(fleet, "log", "--delta", history["t1_bad"]["id"]).stdout
    assert out.startswith(f"delta {history['t1_bad']['id']}: QUARANTINED: agent cleo may not set")
    r = run(fleet, "log", "--delta", "t1-w1-s1-0000000000000000", code=1)
    assert r.output.strip() == ("fleet: t1-w1-s1-0000000000000000: no delta with this id in the fleet's history "
                                "or on a worker branch")
    assert "not a delta id" in run(fleet, "log", "--delta", "../x", code=1).output


def test_held_decided_noop_pending_and_reverted_in_the_trail(fresh: Fleet) -> None:
    fleet = fresh
    a = fleet.delta("ada", Op("set", "posts", "ada-1", ("channel",), "general"), worker="w1")
    b = fleet.delta("ada", Op("set", "posts", "ada-1", ("channel",), "ideas"), worker="w2")
    n = fleet.delta("dara", meta={"noop": "quiet"}, worker="w3")
    fleet.push(a, b, n)
    [cid] = json.loads(run(fleet, "merge", "--json").stdout)["held"]
    data = json.loads(run(fleet, "log", "posts/ada-1", "--json").stdout)
    assert {(e["delta"], e["status"]) for e in data} == {(a["id"], "held"), (b["id"], "held")}
    assert f"held in conflict {cid}" in data[0]["reason"]
    assert "HELD: set posts/ada-1 channel" in run(fleet, "log", "posts/ada-1").stdout
    assert json.loads(run(fleet, "log", "--delta", a["id"], "--json").stdout)["status"] == "held"
    assert json.loads(run(fleet, "log", "--delta", n["id"], "--json").stdout)["status"] == "noop"
    run(fleet, "resolve", cid, "--choose", b["id"])
    run(fleet, "merge")
    top = json.loads(run(fleet, "log", "posts/ada-1", "--json").stdout)[0]
    assert (top["status"], top["delta"], top["tick"]) == ("decided", cid, 2)
    assert top["ops"] == [f"decide posts/ada-1 channel: choose {b['id']}"]
    [blamed] = json.loads(run(fleet, "log", "posts/ada-1", "--field", "channel", "--json").stdout)
    assert (blamed["how"], blamed["conflict"], blamed["value"]) == ("decision", cid, "ideas")

    s = fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 3), tick=3)
    fleet.push(s)
    run(fleet, "merge")
    run(fleet, "revert", s["id"])
    run(fleet, "merge")
    top = json.loads(run(fleet, "log", "posts/ada-1", "--json").stdout)[0]
    assert (top["status"], top["delta"], top["tick"]) == ("reverted", s["id"], 4)
    f = json.loads(run(fleet, "log", "--delta", s["id"], "--json").stdout)
    assert f["status"] == "applied" and f["reverted"]["tick"] == 4
    waiting = fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1), tick=5)
    fleet.push(waiting)
    p = json.loads(run(fleet, "log", "--delta", waiting["id"], "--json").stdout)
    assert p["status"] == "pending" and "fleet/t5/w1" in p["reason"]
