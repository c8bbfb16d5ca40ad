"""`fleet replay [--check]`: rebuild main from genesis and the ledger, byte for byte."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Fleet, run

from fleet import canonical
from fleet.delta import Op


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout


def person_commit(f: Fleet, rel: str, data: bytes, message: str) -> None:
    """A person's commit on main (the checkout is on main in these fleets)."""
    (f.path / rel).write_bytes(data)
    git(f.path, "add", rel)
    git(f.path, "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-q", "-m", message)


def history(f: Fleet) -> None:
    """Several ticks: applied, quarantined, held conflicts, late deltas, a person's commit."""
    f.push(
        f.delta("ada", Op("add", "posts", "ada-1", ("tags",), "a")),
        f.delta("basil", Op("incr", "posts", "ada-1", ("score",), 2), worker="w2"),
        f.delta("cleo", Op("set", "posts", "ada-1", ("title",), "stolen"), worker="w2"),  # authority
        f.delta("ada", Op("set", "posts", "ada-1", ("channel",), "general"), worker="w3"),
        f.delta("ada", Op("set", "posts", "ada-1", ("channel",), "ideas"), worker="w4"),  # held
    )
    f.push_raw("w2", "deltas/w2/s1/junk.json", b"{not json")
    run(f, "merge")
    f.push(
        f.delta("cleo", Op("create", "comments", "cleo-9", (), {
            "id": "cleo-9", "post": "ada-1", "author": "cleo", "body": "agreed"}), tick=2),
        f.delta("dara", Op("incr", "posts", "ada-1", ("comment_count",), 1), tick=2, worker="w2"),
        f.delta("ada", Op("set", "posts", "ada-1", ("channel",), "tools"), tick=2, worker="w2"),  # joins the conflict
    )
    run(f, "merge")
    cfg = json.loads(f.read("state/config.json"))
    cfg["policies"]["posts/channel"] = "lww"
    person_commit(f, "state/config.json", canonical.dumps(cfg), "config: lww for posts/channel")
    f.push(
        f.delta("eli", Op("incr", "posts", "ada-1", ("score",), 1), tick=1, worker="slow"),  # late
        f.delta("fen", Op("incr", "agents", "ada", ("karma",), 1), tick=3),
        f.delta("ada", Op("delete", "posts", "cleo-1"), tick=3, worker="w5"),  # not hers
        f.delta("ada", Op("set", "posts", "ada-1", ("tags",), ["x", "y"]), tick=3, worker="w6"),
    )
    run(f, "merge")
    f.push(
        f.delta("ada", Op("add", "posts", "ada-1", ("tags",), "z"), tick=4),
        f.delta("basil", Op("add", "posts", "ada-1", ("tags",), "w"), tick=4, worker="w2"),  # not allowed
    )
    run(f, "merge")


def test_replay_check_after_a_varied_history(fleet: Fleet) -> None:
    history(fleet)
    status = json.loads(run(fleet, "status", "--json").stdout)
    assert status["tick"] == 4
    assert status["totals"]["quarantined"] >= 4 and status["totals"]["held"] >= 1 and status["totals"]["late"] == 1
    r = run(fleet, "replay", "--check")
    assert "replayed 4 tick(s) over 6 commit(s)" in r.output and "byte-identical to main" in r.output
    data = json.loads(run(fleet, "replay", "--check", "--json").stdout)
    assert data["identical"] is True and data["first_difference"] is None
    assert data["main_tree"] == git(fleet.path, "rev-parse", "main^{tree}").strip()
    assert git(fleet.path, "rev-parse", "refs/fleet/replay^{tree}").strip() == data["main_tree"]
    assert git(fleet.path, "status", "--porcelain") == ""  # replay never touches the checkout


def test_replay_check_with_origin(origin_fleet: tuple[Fleet, Path]) -> None:
    f, bare = origin_fleet
    f.push(f.delta("ada", Op("add", "posts", "ada-1", ("tags",), "o")))
    git(f.path, "push", "--quiet", "origin", "refs/heads/fleet/*:refs/heads/fleet/*")
    run(f, "merge")
    data = json.loads(run(f, "replay", "--check", "--json").stdout)
    assert data["identical"] is True and data["ticks"] == 1
    assert data["main"] == git(bare, "rev-parse", "main").strip()


def tamper(f: Fleet, tick_rev: str) -> None:
    """Rewrite a tick commit so it also changes a document, keeping its message (and its
    Fleet-Tick trailer), then put the later tick commits back on top, as a force-push would."""
    later = git(f.path, "rev-list", "--reverse", "--first-parent", f"{tick_rev}..main").split()
    doc = json.loads(f.git.show(tick_rev, "state/posts/cleo-1.json"))
    doc["title"] = "Quietly rewritten"
    new = f.git.write_commit(f"{tick_rev}^", _message(f, tick_rev),
                             {**_written(f, tick_rev), "state/posts/cleo-1.json": canonical.dumps(doc)},
                             _deleted(f, tick_rev))
    for c in later:
        new = f.git.write_commit(new, _message(f, c), _written(f, c), _deleted(f, c))
    git(f.path, "update-ref", "refs/heads/main", new)
    git(f.path, "reset", "-q", "--hard", "main")


def _message(f: Fleet, rev: str) -> str:
    return git(f.path, "log", "-1", "--format=%B", rev)


def _written(f: Fleet, rev: str) -> dict[str, bytes]:
    paths = git(f.path, "diff-tree", "-r", "--name-only", "--no-commit-id", "--diff-filter=AM", f"{rev}^", rev).split()
    return {path: f.git.show(rev, path) for path in paths}


def _deleted(f: Fleet, rev: str) -> list[str]:
    return git(f.path, "diff-tree", "-r", "--name-only", "--no-commit-id", "--diff-filter=D", f"{rev}^", rev).split()


def tick_commit(f: Fleet, tick: int) -> str:
    for line in git(f.path, "log", "--first-parent", "--format=%H %(trailers:key=Fleet-Tick,valueonly)", "main").splitlines():
        sha, _, t = line.partition(" ")
        if t.strip() == str(tick):
            return sha
    raise AssertionError(f"no commit for tick {tick}")


def test_tampered_tick_commit_fails_check_and_names_the_tick(fleet: Fleet) -> None:
    for t in (1, 2, 3):
        fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1), tick=t))
        run(fleet, "merge")
    run(fleet, "replay", "--check")
    tamper(fleet, tick_commit(fleet, 2))
    assert "Fleet-Tick: 2" in git(fleet.path, "log", "-1", "--format=%B", tick_commit(fleet, 2))
    assert json.loads(fleet.read("state/posts/cleo-1.json"))["title"] == "Quietly rewritten"
    assert json.loads(fleet.read("state/posts/ada-1.json"))["score"] == 3

    r = run(fleet, "replay", "--check", code=1)
    assert "differs from main" in r.output
    assert "first at tick 2 " in r.output and "state/posts/cleo-1.json" in r.output
    data = json.loads(run(fleet, "replay", "--check", "--json", code=1).stdout)
    assert data["identical"] is False and data["first_difference"].startswith("tick 2 ")
    # without --check it reports, and succeeds
    assert "differs from main" in run(fleet, "replay").output


def test_forged_tick_commit_fails_check(fleet: Fleet) -> None:
    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1)))
    run(fleet, "merge")
    doc = json.loads(fleet.read("state/posts/ada-1.json"))
    doc["score"] = 42
    fl = json.loads(fleet.read("state/fleet.json"))
    fl["tick"] = 2
    new = fleet.git.write_commit(fleet.main(), "fleet: tick 2: 0 applied\n\nFleet-Tick: 2\n",
                                 {"state/posts/ada-1.json": canonical.dumps(doc), "state/fleet.json": canonical.dumps(fl)}, [])
    git(fleet.path, "update-ref", "refs/heads/main", new)
    r = run(fleet, "replay", "--check", code=1)
    assert "first at tick 2 " in r.output and "state/posts/ada-1.json" in r.output


def test_a_persons_commit_is_taken_as_it_is(fleet: Fleet) -> None:
    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1)))
    run(fleet, "merge")
    doc = json.loads(fleet.read("state/posts/cleo-1.json"))
    doc["title"] = "Edited by a person"
    person_commit(fleet, "state/posts/cleo-1.json", canonical.dumps(doc), "fix a typo")
    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1), tick=2))
    run(fleet, "merge")
    data = json.loads(run(fleet, "replay", "--check", "--json").stdout)
    assert data["identical"] is True and data["ok"] is True and data["refused"] == 0
    # ...but never a silent one: replay names the commit, its author and the files it changed
    mine = git(fleet.path, "rev-parse", "main^").strip()
    assert [(o["commit"], o["author"], o["subject"], o["refused"]) for o in data["outside"]] == [
        (mine, "p <p@x>", "fix a typo", [])]
    assert data["outside"][0]["changes"] == [{"how": "modified", "path": "state/posts/cleo-1.json", "refused": None, "fixed": None}]
    r = run(fleet, "replay", "--check")
    assert f"outside the merge engine: commit {mine[:12]} by p <p@x>" in r.stdout
    assert "'fix a typo'): modified state/posts/cleo-1.json" in r.stdout


def _edit_clock(f: Fleet) -> str:
    doc = json.loads(f.read("state/fleet.json"))
    doc["totals"]["applied"] += 100
    person_commit(f, "state/fleet.json", canonical.dumps(doc), "by hand")
    return "state/fleet.json: the clock and totals are written only by the merge engine"


def _edit_ledger(f: Fleet) -> str:
    rel = "state/ledger/1/w1.jsonl"
    person_commit(f, rel, f.read(rel) + f.read(rel), "by hand")
    return f"{rel}: the ledger is written only by the merge engine"


def _edit_quarantine(f: Fleet) -> str:
    rel = "state/quarantine/1/w9.jsonl"
    (f.path / rel).parent.mkdir(parents=True, exist_ok=True)
    person_commit(f, rel, b'{"reason":"made up"}\n', "by hand")
    return f"{rel}: the quarantine is written only by the merge engine"


def _edit_conflict(f: Fleet) -> str:
    rel = "state/conflicts/c-made-up.json"
    (f.path / rel).parent.mkdir(parents=True, exist_ok=True)
    person_commit(f, rel, b"{}\n", "by hand")
    return f"{rel}: held conflicts are written only by the merge engine"


def _invalid_document(f: Fleet) -> str:
    doc = json.loads(f.read("state/posts/cleo-1.json"))
    doc["score"] = "lots"
    person_commit(f, "state/posts/cleo-1.json", canonical.dumps(doc), "by hand")
    return "state/posts/cleo-1.json: at /score: "


@pytest.mark.parametrize("edit", [_edit_clock, _edit_ledger, _edit_quarantine, _edit_conflict, _invalid_document])
def test_refused_changes_by_hand_fail_check_until_reverted(fleet: Fleet, edit: Any) -> None:
    """Replay reproduces a hand edit of the engine's own files (it takes a person's
    commit as it is), so only the rule can catch it: --check fails and names it."""
    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1)))
    run(fleet, "merge")
    expected = edit(fleet)
    mine = fleet.main()
    r = run(fleet, "replay", "--check", code=1)
    assert "byte-identical to main" in r.stdout  # the tree is reproduced: the rule is what fails
    assert f"outside the merge engine (refused): commit {mine[:12]} by p <p@x>" in r.stdout
    assert "1 commit(s) outside the merge engine left changes fleet refuses" in r.stderr
    data = json.loads(run(fleet, "replay", "--check", "--json", code=1).stdout)
    assert data["ok"] is False and data["refused"] == 1
    [o] = data["outside"]
    assert o["commit"] == mine and o["refused"][0].startswith(expected)
    s = run(fleet, "status")  # a record it cannot read is named, never a crash
    assert f"warning: commit {mine[:12]} by p <p@x> ('by hand') changed state outside the merge engine" in s.stdout
    assert f"warning: refused: {expected}" in s.stdout
    assert f"needs you: {expected}" in s.stdout and f"git revert {mine[:12]}" in s.stdout
    # A revert before the next tick leaves nothing refused behind: named, no longer failing.
    git(fleet.path, "-c", "user.name=p", "-c", "user.email=p@x", "revert", "--no-edit", "HEAD")
    data = json.loads(run(fleet, "replay", "--check", "--json").stdout)
    assert data["ok"] is True and [o["refused"] for o in data["outside"]] == [[], []]


def test_a_seeding_commit_is_named_by_count_and_its_refused_change_is_never_left_out(fleet: Fleet) -> None:
    """A person's commit that brings in many documents (a world seeded at once):
    replay's JSON names the first CHANGES_SHOWN changes and every refused one,
    with the count; the ticks after it replay byte-identical."""
    from fleet.replay import CHANGES_SHOWN

    # after a first tick: before it, a seeding commit is the world's design, whatever it holds
    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1)))
    run(fleet, "merge")
    post = json.loads(fleet.read("state/posts/ada-1.json"))
    seeded = CHANGES_SHOWN + 30
    for i in range(seeded):
        rel = f"state/posts/seed-{i:03d}.json"
        (fleet.path / rel).write_bytes(canonical.dumps({**post, "id": f"seed-{i:03d}"}))
    (fleet.path / "state/quarantine/9").mkdir(parents=True)
    (fleet.path / "state/quarantine/9/w9.jsonl").write_bytes(b'{"reason":"made up"}\n')  # sorts after the posts
    git(fleet.path, "add", "-A", "state")
    git(fleet.path, "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-q", "-m", "seed the world")
    mine = fleet.main()
    fleet.push(fleet.delta("basil", Op("incr", "posts", "seed-007", ("score",), 1), tick=2))
    r = run(fleet, "merge", code=1)  # no tick is built on a change to the engine's own files
    assert r.stderr.startswith("fleet: state/quarantine/9/w9.jsonl: the quarantine is written only by the merge "
                               f"engine; added outside the merge engine by commit {mine[:12]}")
    data = json.loads(run(fleet, "replay", "--check", "--json", code=1).stdout)
    assert data["identical"] is True and data["ticks"] == 1 and data["refused"] == 1
    [o] = data["outside"]
    assert o["commit"] == mine and o["changes_total"] == seeded + 1
    shown = [c["path"] for c in o["changes"]]
    assert len(shown) == CHANGES_SHOWN + 1 and shown[-1] == "state/quarantine/9/w9.jsonl"
    assert o["changes"][-1]["refused"] == "the quarantine is written only by the merge engine"
    assert o["refused"] == ["state/quarantine/9/w9.jsonl: the quarantine is written only by the merge engine"]


def test_replay_carries_the_tree_across_ticks_that_prune_the_ledger_and_a_persons_commit(fleet: Fleet) -> None:
    """With a window of two ticks the merge removes a ledger folder every tick;
    a person's commit in between changes a document and the config. Replay,
    which carries the tree's listing from tick to tick and lists it afresh
    after a person's commit, rebuilds every tick byte for byte."""
    cfg = json.loads(fleet.read("state/config.json"))
    cfg["limits"]["window"] = 2
    person_commit(fleet, "state/config.json", canonical.dumps(cfg), "config: a window of two ticks")
    for tick in range(1, 7):
        # cleo-1 is read every tick: a listing not refreshed after the person's edit would undo it
        fleet.push(fleet.delta("basil", Op("incr", "posts", "cleo-1", ("score",), 1), tick=tick),
                   fleet.delta("cleo", Op("create", "comments", f"cleo-{tick}", (), {
                       "id": f"cleo-{tick}", "post": "ada-1", "author": "cleo", "body": f"at {tick}"}),
                       tick=tick, worker="w2"))
        run(fleet, "merge")
        if tick == 3:
            doc = json.loads(fleet.read("state/posts/cleo-1.json"))
            doc["title"] = "Edited by a person"
            person_commit(fleet, "state/posts/cleo-1.json", canonical.dumps(doc), "fix a typo")
    assert sorted(p.name for p in (fleet.path / "state/ledger").iterdir()) == ["4", "5", "6"]  # 1 to 3 pruned
    assert json.loads(fleet.read("state/posts/cleo-1.json"))["title"] == "Edited by a person"
    data = json.loads(run(fleet, "replay", "--check", "--json").stdout)
    assert data["ok"] is True and data["ticks"] == 6
    # the config commit came before the first tick: the world's design, not listed
    assert [o["subject"] for o in data["outside"]] == ["fix a typo"]


@pytest.mark.parametrize("files", [{"README.md": "hello\n"}, {"state/notes.json": "{}\n", "src/a.py": "x = 1\n"},
                                   {"state/fleet.json": "{}\n"}])
def test_replay_outside_a_fleet_says_so_and_writes_no_ref(tmp_path: Path, files: dict[str, str]) -> None:
    """A repository that never had a config nor a tick is no fleet: --check does not
    "pass" by copying its commits, and no refs/fleet/replay is left behind."""
    repo = tmp_path / "other"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "not a fleet")
    before = git(repo, "for-each-ref")
    r = subprocess.run(["fleet", "replay", "--check"], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 1 and "is this a fleet repository?" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert git(repo, "for-each-ref") == before


def test_a_fleet_just_made_replays_clean(fleet: Fleet) -> None:
    r = run(fleet, "replay", "--check")
    assert "byte-identical to main" in r.output
