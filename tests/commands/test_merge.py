"""`fleet merge`: one tick per merge, in real git repositories (local and with a bare origin)."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

from conftest import Fleet, run
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleet import canonical
from fleet.commands.init import init
from fleet.delta import Op, file_path
from fleet.ids import WINDOWS_DEVICES


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout


def push_origin(f: Fleet) -> None:
    """Workers push their branches to the origin."""
    git(f.path, "push", "--quiet", "origin", "refs/heads/fleet/*:refs/heads/fleet/*")


def origin_branches(bare: Path) -> list[str]:
    return git(bare, "for-each-ref", "--format=%(refname)", "refs/heads/fleet/t[0-9]*/*").split()


def trailers(f: Fleet, rev: str = "refs/heads/main") -> dict[str, str]:
    out = git(f.path, "log", "-1", "--format=%(trailers:only,unfold)", rev)
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def tag(value: str) -> Op:
    return Op("add", "posts", "ada-1", ("tags",), value)


def score(by: int = 1) -> Op:
    return Op("incr", "posts", "ada-1", ("score",), by)


def post(f: Fleet, rev: str = "refs/heads/main") -> dict[str, Any]:
    return json.loads(f.git.show(rev, "state/posts/ada-1.json"))


def tick_of(f: Fleet, rev: str = "refs/heads/main") -> int:
    return json.loads(f.git.show(rev, "state/fleet.json"))["tick"]


# -- local mode ------------------------------------------------------------------


def test_merge_local_applies_quarantines_holds_in_one_commit(fleet: Fleet) -> None:
    before = fleet.main()
    good = fleet.delta("ada", tag("merge"))
    other = fleet.delta("basil", score(2), worker="w2")
    bad = fleet.delta("cleo", Op("set", "posts", "ada-1", ("title",), "mine now"), worker="w2")
    c1 = fleet.delta("ada", Op("set", "posts", "ada-1", ("channel",), "general"), worker="w3")
    c2 = fleet.delta("ada", Op("set", "posts", "ada-1", ("channel",), "ideas"), worker="w4")
    fleet.push(good, other, bad, c1, c2)

    r = run(fleet, "merge")
    # each delta counted once: the two held ones are not "applied" (issue 14)
    assert r.output.splitlines()[0].startswith(
        "tick 1: 2 applied, 1 quarantined, 0 no-op, 2 held (1 conflict(s) opened or joined)")
    assert "published main" in r.output and "locally" in r.output
    assert f"quarantined {file_path(bad)}" in r.output and "may not set posts/ada-1 title" in r.output

    # one commit on top of genesis, first parent is the old main
    assert git(fleet.path, "rev-list", "--count", f"{before}..main").strip() == "1"
    assert git(fleet.path, "rev-parse", "main^").strip() == before
    assert git(fleet.path, "log", "-1", "--format=%an <%ae>|%cn <%ce>", "main").strip() == \
        "fleet <fleet@localhost>|fleet <fleet@localhost>"  # main's one writer
    t = trailers(fleet)
    assert t["Fleet-Tick"] == "1"
    assert t["Fleet-Applied"] == "4" and t["Fleet-Quarantined"] == "1" and t["Fleet-Held"] == "1"
    msg = git(fleet.path, "log", "-1", "--format=%B", "main")
    for d in (good, other, c1, c2):
        assert d["id"] in msg
    assert file_path(bad) in msg and "Quarantined:" in msg
    conflict = json.loads(fleet.fleet("status", "--json").output)["open_conflicts"][0]["id"]
    assert f"{conflict} (state/conflicts/{conflict}.json)" in msg

    assert tick_of(fleet) == 1
    p = post(fleet)
    assert "merge" in p["tags"] and p["score"] == 2 and p["channel"] == "tools"
    assert p["title"] == "Every invariant deserves a test that can fail"
    # worker branches are gone; the checkout of main followed and is clean
    assert fleet.branches() == []
    assert git(fleet.path, "status", "--porcelain") == ""
    assert json.loads((fleet.path / "state/posts/ada-1.json").read_text())["score"] == 2


def test_merge_again_has_nothing_to_do(fleet: Fleet) -> None:
    fleet.push(fleet.delta("ada", tag("x")))
    run(fleet, "merge")
    head = fleet.main()
    r = run(fleet, "merge", code=3)
    assert r.stdout == "" and r.stderr == "fleet: no pending deltas (main is at tick 1)\n"
    assert fleet.main() == head


def test_merge_advances_one_tick_per_merge(fleet: Fleet) -> None:
    for t in (1, 2, 3):
        fleet.push(fleet.delta("basil", score(), tick=t))
        r = run(fleet, "merge")
        assert r.output.startswith(f"tick {t}:")
        assert tick_of(fleet) == t and trailers(fleet)["Fleet-Tick"] == str(t)
    assert post(fleet)["score"] == 3
    assert git(fleet.path, "rev-list", "--count", "--first-parent", "main").strip() == "4"


def test_merge_json(fleet: Fleet) -> None:
    bad = fleet.delta("nobody", score())
    fleet.push(fleet.delta("ada", tag("j")), bad)
    r = run(fleet, "merge", "--json")
    data = json.loads(r.stdout)
    assert data["tick"] == 1 and data["applied"] == 1 and data["published"] is True
    assert data["commit"] == fleet.main() and data["remote"] is None
    assert data["quarantined"] == [{
        "path": file_path(bad), "source": "refs/heads/fleet/t1/w1",
        "reason": "agent 'nobody' is not in state/config.json agents",
    }]
    assert data["held"] == [] and data["duplicates"] == 0


def test_dry_run_publishes_nothing(fleet: Fleet) -> None:
    fleet.push(fleet.delta("ada", tag("dry")))
    head, branches = fleet.main(), fleet.branches()
    r = run(fleet, "merge", "--dry-run", "--json")
    data = json.loads(r.stdout)
    assert data["published"] is False and data["applied"] == 1 and data["commit"] != head
    assert fleet.main() == head and fleet.branches() == branches
    assert git(fleet.path, "status", "--porcelain") == ""
    r = run(fleet, "merge", "--dry-run")
    assert "dry run" in r.output and "published nothing" in r.output
    assert fleet.main() == head and fleet.branches() == branches
    run(fleet, "merge")  # the real one still has everything
    assert "dry" in post(fleet)["tags"]


def test_tick_option(fleet: Fleet) -> None:
    fleet.push(fleet.delta("ada", tag("t")))
    head = fleet.main()
    r = run(fleet, "merge", "--tick", "5", code=1)
    assert "--tick 5" in r.stderr and "next merge is tick 1" in r.stderr and len(r.stderr.splitlines()) == 1
    assert "is not in the range 0<=x<=9007199254740992" in run(fleet, "merge", "--tick", "-1", code=2).stderr
    assert "is not in the range" in run(fleet, "merge", "--tick", str(2**64), code=2).stderr
    r = run(fleet, "merge", "--tick", "0", code=3)
    assert "already merged" in r.stderr
    assert fleet.main() == head and fleet.branches()
    run(fleet, "merge", "--tick", "1")
    assert tick_of(fleet) == 1


def test_inbox_folder_is_merged_and_emptied(fleet: Fleet, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    good = fleet.delta("ada", tag("inbox"), worker="laptop")
    p = inbox / file_path(good)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(canonical.dumps(good))
    bad_path = p.parent / "broken.json"
    bad_path.write_bytes(b"{oops")
    branch = fleet.delta("basil", score(), worker="w2")
    fleet.push(branch)

    head = fleet.main()
    run(fleet, "merge", "--dry-run", "--inbox", str(inbox))
    assert fleet.main() == head and bad_path.exists() and (inbox / file_path(good)).exists()

    r = run(fleet, "merge", "--inbox", str(inbox))
    assert r.output.startswith("tick 1: 2 applied, 1 quarantined")
    assert "broken.json" in r.output and "malformed JSON" in r.output
    assert not [p for p in inbox.rglob("*") if p.is_file()]
    assert "inbox" in post(fleet)["tags"] and post(fleet)["score"] == 1
    assert good["id"] in fleet.read("state/ledger/1/laptop.jsonl").decode()
    assert b"broken.json" in fleet.read("state/quarantine/1/laptop.jsonl")
    run(fleet, "merge", "--inbox", str(inbox), code=3)


def test_inbox_missing_folder(fleet: Fleet, tmp_path: Path) -> None:
    r = run(fleet, "merge", "--inbox", str(tmp_path / "nope"), code=1)
    assert "inbox folder does not exist" in r.stderr and len(r.stderr.splitlines()) == 1


def test_branch_not_deleted_after_merge_gives_duplicates(fleet: Fleet) -> None:
    d = fleet.delta("ada", tag("once"))
    fleet.push(d)
    saved = fleet.git.rev_parse("refs/heads/fleet/t1/w1")
    run(fleet, "merge")
    head = fleet.main()
    # the branch comes back with the same content (a delete that never happened)
    assert fleet.git.update_ref("refs/heads/fleet/t1/w1", saved, None)
    r = run(fleet, "merge", code=3)
    assert "nothing new" in r.stderr and "1 delta(s) were merged before" in r.stderr
    assert fleet.main() == head and fleet.branches() == []
    assert post(fleet)["tags"].count("once") == 1


def test_duplicates_next_to_new_deltas_are_dropped(fleet: Fleet) -> None:
    d = fleet.delta("basil", score())
    fleet.push(d)
    saved = fleet.git.rev_parse("refs/heads/fleet/t1/w1")
    run(fleet, "merge")
    assert fleet.git.update_ref("refs/heads/fleet/t1/w1", saved, None)
    fleet.push(fleet.delta("cleo", score(), tick=2, worker="w2"))
    r = run(fleet, "merge", "--json")
    data = json.loads(r.stdout)
    assert data["applied"] == 1 and data["duplicates"] == 1 and data["quarantined"] == []
    assert post(fleet)["score"] == 2  # basil's +1 once, cleo's +1 once


def test_late_delta_is_applied_next_tick(fleet: Fleet) -> None:
    fleet.push(fleet.delta("basil", score()))
    run(fleet, "merge")
    late = fleet.delta("cleo", score(5), tick=1, worker="slow")
    fleet.push(late)
    r = run(fleet, "merge")
    assert "(1 late)" in r.output
    assert trailers(fleet)["Fleet-Late"] == "1"
    assert late["id"] in fleet.read("state/ledger/1/slow.jsonl").decode()
    assert post(fleet)["score"] == 6


def test_user_checkout_on_another_branch_is_left_alone(fleet: Fleet) -> None:
    git(fleet.path, "checkout", "-q", "-b", "mine")
    (fleet.path / "scratch.txt").write_text("wip\n")
    fleet.push(fleet.delta("ada", tag("x")))
    run(fleet, "merge")
    assert git(fleet.path, "symbolic-ref", "HEAD").strip() == "refs/heads/mine"
    assert tick_of(fleet) == 1 and tick_of(fleet, "refs/heads/mine") == 0
    assert json.loads((fleet.path / "state/fleet.json").read_text())["tick"] == 0
    assert (fleet.path / "scratch.txt").read_text() == "wip\n"


def test_dirty_checkout_of_main_refuses_and_keeps_deltas(fleet: Fleet) -> None:
    p = fleet.path / "state/posts/ada-1.json"
    p.write_text(p.read_text().replace("decoration", "DECORATION"))
    fleet.push(fleet.delta("ada", tag("x")))
    head = fleet.main()
    r = run(fleet, "merge", code=1)
    assert len(r.stderr.splitlines()) == 1 and "checkout of main" in r.stderr
    assert fleet.main() == head and fleet.branches() == ["refs/heads/fleet/t1/w1"]
    assert "DECORATION" in p.read_text()  # the person's edit is still there
    git(fleet.path, "checkout", "--", "state/posts/ada-1.json")
    run(fleet, "merge")
    assert "x" in post(fleet)["tags"]


def test_main_tree_does_not_grow_with_ticks(fleet: Fleet) -> None:
    cfg = json.loads(fleet.read("state/config.json"))
    window = cfg["limits"]["window"] = 3  # a short window, so window + 5 ticks stay quick
    (fleet.path / "state/config.json").write_bytes(canonical.dumps(cfg))
    git(fleet.path, "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qam", "config: window 3")
    sizes = {}
    for t in range(1, window + 6):
        fleet.push(
            fleet.delta("basil", score(), tick=t, worker="w1"),
            fleet.delta("cleo", score(), tick=t, worker="w2"),
            fleet.delta("nobody", score(), tick=t, worker="w2"),  # quarantined every tick
        )
        run(fleet, "merge")
        files = git(fleet.path, "ls-tree", "-r", "--name-only", "main").split()
        ledger = [f for f in files if f.startswith("state/ledger/")]
        quarantine = [f for f in files if f.startswith("state/quarantine/")]
        assert len(ledger) <= 2 * (window + 1) and len(quarantine) <= window + 1
        sizes[t] = len(files)
    assert sizes[window + 1] == sizes[window + 5]
    assert tick_of(fleet) == window + 5 and post(fleet)["score"] == 2 * (window + 5)
    # old ledgers still live in history, where replay reads them
    assert json.loads(run(fleet, "replay", "--check", "--json").stdout)["identical"] is True


# -- with a bare origin -------------------------------------------------------------


def test_merge_with_origin_publishes_there_and_leaves_the_user_alone(origin_fleet: tuple[Fleet, Path]) -> None:
    f, bare = origin_fleet
    (f.path / "notes.txt").write_text("my own notes\n")
    p = f.path / "state/posts/ada-1.json"
    p.write_text(p.read_text().replace("decoration", "DECORATION"))  # an uncommitted edit
    local_main = f.main()
    f.push(f.delta("ada", tag("o")), f.delta("basil", score(), worker="w2"))
    push_origin(f)
    assert len(origin_branches(bare)) == 2

    r = run(f, "merge")
    assert "to origin" in r.output
    origin_main = git(bare, "rev-parse", "main").strip()
    assert origin_main != local_main
    assert json.loads(git(bare, "show", "main:state/fleet.json"))["tick"] == 1
    assert "Fleet-Tick: 1" in git(bare, "log", "-1", "--format=%B", "main")
    assert git(bare, "rev-parse", "main^").strip() == local_main
    # the worker branches are deleted on the origin
    assert origin_branches(bare) == []
    # the user's main, checkout and working tree did not move
    assert f.main() == local_main
    assert git(f.path, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert "DECORATION" in p.read_text()
    assert (f.path / "notes.txt").read_text() == "my own notes\n"
    assert json.loads((f.path / "state/fleet.json").read_text())["tick"] == 0
    assert sorted(git(f.path, "status", "--porcelain").splitlines()) == [" M state/posts/ada-1.json", "?? notes.txt"]

    r = run(f, "merge", code=3)
    assert "no pending deltas" in r.stderr and "tick 1" in r.stderr


def test_merge_with_origin_json_and_dry_run(origin_fleet: tuple[Fleet, Path]) -> None:
    f, bare = origin_fleet
    f.push(f.delta("ada", tag("o")))
    push_origin(f)
    before = git(bare, "rev-parse", "main").strip()
    data = json.loads(run(f, "merge", "--dry-run", "--json").stdout)
    assert data["published"] is False and data["remote"] == "origin"
    assert git(bare, "rev-parse", "main").strip() == before and len(origin_branches(bare)) == 1
    data = json.loads(run(f, "merge", "--json").stdout)
    assert data["published"] is True and data["remote"] == "origin"
    assert git(bare, "rev-parse", "main").strip() == data["commit"]


def test_merge_with_origin_duplicate_branch(origin_fleet: tuple[Fleet, Path]) -> None:
    f, bare = origin_fleet
    f.push(f.delta("ada", tag("dup")))
    push_origin(f)
    run(f, "merge")
    after = git(bare, "rev-parse", "main").strip()
    push_origin(f)  # the same branch, again (a worker that retried its push)
    assert len(origin_branches(bare)) == 1
    r = run(f, "merge", code=3)
    assert "were merged before" in r.stderr
    assert git(bare, "rev-parse", "main").strip() == after
    assert origin_branches(bare) == []
    assert json.loads(git(bare, "show", "main:state/posts/ada-1.json"))["tags"].count("dup") == 1


def test_merge_with_origin_ignores_unpushed_local_branches(origin_fleet: tuple[Fleet, Path]) -> None:
    f, bare = origin_fleet
    f.push(f.delta("ada", tag("local-only")))
    r = run(f, "merge", code=3)
    assert "no pending deltas" in r.stderr
    assert f.branches() == ["refs/heads/fleet/t1/w1"]


def test_unknown_remote(fleet: Fleet) -> None:
    r = run(fleet, "merge", "--remote", "upstream", code=1)
    assert "no remote named 'upstream'" in r.stderr and len(r.stderr.splitlines()) == 1


# -- a window lowered, then raised ---------------------------------------------------


def _set_window(f: Fleet, window: int) -> None:
    cfg = json.loads(f.git.show("refs/heads/main", "state/config.json"))
    if cfg["limits"]["window"] == window:
        return
    cfg["limits"]["window"] = window
    (f.path / "state/config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    git(f.path, "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qam", f"window {window}")


@given(steps=st.lists(st.tuples(st.integers(1, 5), st.booleans()), min_size=2, max_size=7))
@example(steps=[(1, False), (1, False), (5, True)])  # lowered to 1 (tick 2's ledger goes at tick 4), raised to 5
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_delta_delivered_again_applies_once_whatever_the_window_did(tmp_path_factory: Any,
                                                                       steps: list[tuple[int, bool]]) -> None:
    """A worker branch delivered again at some ticks (a rerun), while a person lowers and
    raises limits.window: once, the raise let the copy in again after the lower window had
    deleted its tick's ledger, and it applied twice. Each tick's merge is real (`fleet merge`)."""
    path = tmp_path_factory.mktemp("window") / "fleet"
    init(path)
    f = Fleet(path)
    run(f, "merge", "--allow-empty")  # tick 1
    once = f.delta("basil", score(1), tick=2)
    before = post(f)["score"]
    f.push(once)
    run(f, "merge")  # tick 2: applied
    for window, again in steps:
        _set_window(f, window)
        if again:
            f.push(once)  # its branch fleet/t2/w1, delivered again
        run(f, "merge", "--allow-empty")
    applied = [line for line in git(f.path, "log", "-p", "--format=", "refs/heads/main", "--", "state/ledger").splitlines()
               if line.startswith("+") and once["id"] in line]
    assert len(applied) == 1, applied
    assert post(f)["score"] == before + 1


# -- names a clone on Windows or macOS cannot hold -------------------------------------------


def _case_variants(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda up: "".join(c.upper() if u else c for c, u in zip(name, up, strict=True))).filter(lambda v: v != name)


_DEVICE_IDS = st.sampled_from(["CON", "prn", "Aux", "nul", "COM1", "com9", "LPT3", "lpt1"])


@given(look=_case_variants("w1"), earlier=st.booleans(), seed=st.integers(0, 2**16))
@example(look="W1", earlier=True, seed=0)  # a walkthrough's case: W1 sorts before w1, and displaced it
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_look_alike_worker_never_displaces_the_worker_it_imitates(tmp_path_factory: Any, look: str, earlier: bool,
                                                                    seed: int) -> None:
    """Deltas of a worker named like w1 but for case (W1), pushed beside w1's, sorting
    before them or not (an earlier utc, and upper case sorts first): w1's stand, the
    look-alike's are quarantined naming both, and nothing of the look-alike is applied."""
    path = tmp_path_factory.mktemp("look") / "fleet"
    init(path)
    f = Fleet(path)
    rng = random.Random(seed)
    real = [f.delta(a, score(1), worker="w1", utc="2026-05-01T12:00:05.000000Z") for a in ("ada", "cleo")]
    when = "2026-05-01T12:00:01.000000Z" if earlier else "2026-05-01T12:00:09.000000Z"
    fake = [f.delta(a, score(rng.randrange(2, 50)), worker=look, utc=when) for a in ("ada", "basil")]
    before = post(f)["score"]
    f.push(*real, *fake)
    out = json.loads(run(f, "merge", "--json").stdout)
    assert out["applied"] == len(real)
    assert len(out["quarantined"]) == len(fake)
    assert all(f"worker {look!r} differs from worker 'w1' only by case" in q["reason"] for q in out["quarantined"])
    assert post(f)["score"] == before + 2  # the two real increments, none of the look-alike's
    tree = git(f.path, "ls-tree", "-r", "--name-only", "refs/heads/main", "state/ledger/1/").split()
    assert tree == ["state/ledger/1/w1.jsonl"]


@given(new_id=st.one_of(_case_variants("ada-1"), _DEVICE_IDS), worker=st.one_of(st.just("w2"), _case_variants("w1")))
@example(new_id="Ada-1", worker="w2")
@example(new_id="nul", worker="w2")
@example(new_id="ada-7", worker="W1")
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_name_that_would_not_check_out_on_windows_or_macos_is_quarantined(
        tmp_path_factory: Any, new_id: str, worker: str) -> None:
    """A create of posts/Ada-1 beside ada-1, or of posts/nul; a worker W1 in a tick where w1
    delivered: each made main a tree some clones cannot check out (one file for two names,
    or a device). Such a delta is quarantined naming the file and why; the others apply."""
    path = tmp_path_factory.mktemp("names") / "fleet"
    init(path)
    f = Fleet(path)
    post = {**json.loads(f.git.show("refs/heads/main", "state/posts/ada-1.json")), "tick": 1}
    ok = f.delta("ada", score(1), worker="w1")
    made = f.delta("ada", Op("create", "posts", new_id, (), {**post, "id": new_id}), worker=worker)
    f.push(ok, made)
    out = json.loads(run(f, "merge", "--json").stdout)
    [q] = out["quarantined"]  # the first in delta order stands; the one that would clash with it does not
    assert "device name on Windows" in q["reason"] or "only by case" in q["reason"], q
    assert out["applied"] == 1
    tree = git(f.path, "ls-tree", "-r", "--name-only", "refs/heads/main").split()
    folded: dict[str, str] = {}
    for p in tree:
        assert p.rsplit("/", 1)[-1].split(".", 1)[0].upper() not in WINDOWS_DEVICES, p
        assert folded.setdefault(p.casefold(), p) == p, (p, folded[p.casefold()])
