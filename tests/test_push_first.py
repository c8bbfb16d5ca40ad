"""Push first: a change decides on the view its clone last saw and pushes without
a fetch; the push checks both the queue's tip and main's, and only a push that
lands is taken from that view (fleet/store.py, ``BranchStore.change``).

What must hold: a current view claims with no fetch at all; an old view never
claims what someone else claimed, never uses a config main no longer has, and
never says "nothing to do" or refuses without a fetch first; and a process
changing back to back fetches first, so that it cannot starve the others.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleet import canonical, store
from fleet.commands import task as task_cmd
from fleet.errors import FleetError, NothingToDo
from fleet.git import Git
from fleet.tasks import BRANCH
from tests.conftest import Fleet


def clone(bare: Path, where: Path) -> Path:
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(bare), str(where)], check=True)
    return where


def no_fetch(repo: Path) -> None:
    """From here on a fetch from origin fails; a push still works."""
    Git(repo).run("config", "remote.origin.uploadpack", "false")


def claims(bare: Path) -> list[str]:
    """Every claim that landed: on the branch, or on a claim ref the branch has not merged yet."""
    git = Git(bare)
    refs = git.text("for-each-ref", "--format=%(refname)", f"refs/heads/{BRANCH}-claims/").split()
    return [s for s in git.text("log", "--format=%s", f"refs/heads/{BRANCH}", *refs).splitlines()
            if s.startswith("task claim ")]


def set_agents(f: Fleet, change: dict) -> None:
    """A person's commit on main changing the agents, pushed to origin."""
    path = f.path / "state" / "config.json"
    cfg = json.loads(path.read_text())
    for name, value in change.items():
        if value is None:
            cfg["agents"].pop(name)
        else:
            cfg["agents"][name] = value
    path.write_bytes(canonical.dumps(cfg))
    f.git.run("-c", "user.name=p", "-c", "user.email=p@p", "commit", "-qam", "agents")
    f.git.run("push", "-q", "origin", "HEAD:refs/heads/main")


@pytest.fixture
def queue(origin_fleet: tuple[Fleet, Path], monkeypatch: pytest.MonkeyPatch) -> tuple[Fleet, Path]:
    """Three tasks on origin's queue; this process pushes first even right after
    a change of its own (as a new process, or one that paused, would)."""
    f, bare = origin_fleet
    task_cmd.add(f.path, [({"id": f"t{i}", "title": f"t{i}"}, "test") for i in range(3)])
    monkeypatch.setattr(store, "PUSH_FIRST_AFTER", 0.0)
    return f, bare


def tasks_config(f: Fleet, tasks: dict[str, Any]) -> None:
    """Set the queue's settings on main, here and on the origin."""
    cfg = json.loads((f.path / "state/config.json").read_text())
    cfg["tasks"] = tasks
    (f.path / "state/config.json").write_bytes(canonical.dumps(cfg))
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qam", "c"], cwd=f.path, check=True)
    subprocess.run(["git", "push", "-q", "origin", "main"], cwd=f.path, check=True)

def test_a_claim_on_the_view_its_clone_left_makes_no_fetch(origin_fleet: tuple[Fleet, Path], tmp_path: Path) -> None:
    f, bare = origin_fleet
    task_cmd.add(f.path, [({"id": f"t{i}", "title": f"t{i}"}, "test") for i in range(3)])
    a = clone(bare, tmp_path / "a")
    first = task_cmd.claim(a, "ada")  # a fresh clone has no view yet: it fetches
    no_fetch(a)
    with pytest.raises(FleetError, match="git fetch"):
        task_cmd.listing(a)
    fleet = [sys.executable, "-m", "fleet", "task"]
    r = subprocess.run([*fleet, "claim", "-C", str(a), "--as", "ada", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # the next command: its clone's claim is still the tip, one push, no fetch
    second = json.loads(r.stdout)
    assert first["id"] != second["id"] and len(claims(bare)) == 2
    r = subprocess.run([*fleet, "complete", second["id"], "-C", str(a), "--fence", str(second["fence"])],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_process_changing_back_to_back_fetches_first(origin_fleet: tuple[Fleet, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """On the branch: else it would keep winning, a fetch quicker than every other
    writer, and starve them (tasks that declare paths are claimed on the branch)."""
    f, bare = origin_fleet
    task_cmd.add(f.path, [({"id": f"t{i}", "title": f"t{i}", "paths": [f"src/{i}"]}, "test") for i in range(3)])
    a = clone(bare, tmp_path / "a")
    task_cmd.claim(a, "ada")
    no_fetch(a)
    with pytest.raises(FleetError, match="git fetch"):
        task_cmd.claim(a, "ada")
    monkeypatch.setattr(store, "PUSH_FIRST_AFTER", 0.0)  # as after a pause
    task_cmd.claim(a, "ada")
    assert len(claims(bare)) == 2


def test_claims_on_claim_refs_push_first_even_back_to_back(origin_fleet: tuple[Fleet, Path], tmp_path: Path) -> None:
    """A claim of a task that declares no paths races only for that task's claim ref:
    back to back it starves nobody, so it pushes first all the same."""
    f, bare = origin_fleet
    task_cmd.add(f.path, [({"id": f"t{i}", "title": f"t{i}"}, "test") for i in range(3)])
    a = clone(bare, tmp_path / "a")
    first = task_cmd.claim(a, "ada")
    no_fetch(a)
    second = task_cmd.claim(a, "ada")  # at once, with no fetch
    assert first["id"] != second["id"] and len(claims(bare)) == 2


def test_an_old_view_loses_and_claims_the_next_task_after_a_fetch(queue: tuple[Fleet, Path], tmp_path: Path) -> None:
    f, bare = queue
    a, b = clone(bare, tmp_path / "a"), clone(bare, tmp_path / "b")
    mine = task_cmd.claim(a, "ada")
    theirs = task_cmd.claim(b, "basil")  # a's view is now one claim behind
    again = task_cmd.claim(a, "ada")
    assert len({mine["id"], theirs["id"], again["id"]}) == 3
    subjects = claims(bare)
    assert len(subjects) == 3 and len({s.split()[2] for s in subjects}) == 3
    with pytest.raises(NothingToDo, match="in-progress, held by basil"):  # a's view says it is pending: it loses
        task_cmd.claim(a, "ada", task_id=theirs["id"])
    assert len(claims(bare)) == 3
    task_cmd.complete(b, theirs["id"], theirs["fence"], agent="basil")  # b moves the queue again
    no_fetch(a)
    with pytest.raises(FleetError, match="git fetch"):  # a's push from its old view is refused; then it must fetch
        task_cmd.complete(a, again["id"], again["fence"], agent="ada")
    log = Git(bare).text("log", "--format=%s", f"refs/heads/{BRANCH}")
    assert f"task complete {again['id']}" not in log


def test_an_agent_main_no_longer_has_cannot_claim_on_an_old_view(queue: tuple[Fleet, Path], tmp_path: Path) -> None:
    f, bare = queue
    a = clone(bare, tmp_path / "a")
    task_cmd.claim(a, "fen")  # a's view of main knows fen
    set_agents(f, {"fen": None})
    with pytest.raises(FleetError, match="fen may not claim tasks"):
        task_cmd.claim(a, "fen")
    assert len(claims(bare)) == 1


def test_an_agent_main_has_since_claims_on_an_old_view(queue: tuple[Fleet, Path], tmp_path: Path) -> None:
    f, bare = queue
    a = clone(bare, tmp_path / "a")
    task_cmd.claim(a, "ada")
    set_agents(f, {"zed": {"priority": 0}})
    assert task_cmd.claim(a, "zed")["claimed_by"] == "zed"  # refused on the old view, decided again on a fetch


def test_nothing_ready_on_an_old_view_is_asked_again_on_a_fetch(queue: tuple[Fleet, Path], tmp_path: Path) -> None:
    f, bare = queue
    a = clone(bare, tmp_path / "a")
    for _ in range(3):
        task_cmd.claim(a, "ada")
    with pytest.raises(NothingToDo):
        task_cmd.claim(a, "ada")
    task_cmd.add(f.path, [({"id": "late", "title": "late"}, "test")])  # a's view says nothing is ready
    assert task_cmd.claim(a, "ada")["id"] == "late"


def test_a_remote_without_atomic_pushes_is_fetched_from_instead(queue: tuple[Fleet, Path], tmp_path: Path) -> None:
    f, bare = queue
    a = clone(bare, tmp_path / "a")
    task_cmd.claim(a, "ada")
    Git(bare).run("config", "receive.advertiseAtomic", "false")  # the push-first round needs an atomic push
    task_cmd.claim(a, "ada")
    assert len(claims(bare)) == 2


# -- cleanup: a done task's claim ref goes, and an old view cannot bring it back ----------
def claim_refs(bare: Path) -> list[str]:
    return Git(bare).text("for-each-ref", "--format=%(refname:lstrip=4)", f"refs/heads/{BRANCH}-claims/").split()


def test_a_stale_claimer_racing_the_cleanup_never_claims_a_done_task(origin_fleet: tuple[Fleet, Path],
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The complete that merges a task's claim deletes its claim ref in the same push. A
    claimer whose view is from before the claim would then create that ref again from
    "no ref": its push first leases the branch at the tip it decided on, which has moved,
    so the push is refused whole, and the claim decided again on a fetch finds nothing to
    do. The task is claimed once and done once, and no claim ref is left. (A claim decided
    on a fetched view that lands on a ref the cleanup deleted meanwhile is taken back:
    tests/test_tasks_claim_cleanup.py.)"""
    f, bare = origin_fleet
    task_cmd.add(f.path, [({"id": "only", "title": "only"}, "test")])
    a, s = clone(bare, tmp_path / "a"), clone(bare, tmp_path / "s")
    assert [t["id"] for t in task_cmd.listing(s, ready_only=True)["tasks"]] == ["only"]  # s's view, kept
    mine = task_cmd.claim(a, "ada")
    assert claim_refs(bare) == ["only"]
    task_cmd.complete(a, "only", mine["fence"], agent="ada")
    assert claim_refs(bare) == []  # the cleanup, in the complete's push
    events: list[tuple[str, object]] = []
    real_publish, real_hold = store.BranchStore.publish, store.BranchStore._created_hold

    def publish(self: store.BranchStore, *args: object, **kw: object) -> bool:
        won = real_publish(self, *args, **kw)  # type: ignore[arg-type]
        events.append(("landed" if won else "lost", [u.ref.rpartition("/")[2] for u in kw.get("claims", ())]))
        return won

    def hold(self: store.BranchStore, *args: object) -> bool:
        held = real_hold(self, *args)  # type: ignore[arg-type]
        events.append(("holds" if held else "taken back", claim_refs(bare)))
        return held

    monkeypatch.setattr(store.BranchStore, "publish", publish)
    monkeypatch.setattr(store.BranchStore, "_created_hold", hold)
    with pytest.raises(NothingToDo, match="only is done|no task is ready"):
        task_cmd.claim(s, "basil")
    # s's claim from its old view never landed (the branch it leased had moved), and the claim
    # decided again on a fetch found nothing
    assert events == [("lost", ["only"])], events
    assert claim_refs(bare) == []
    assert claims(bare) == [f"task claim only by ada (fence {mine['fence']})"]
    t = task_cmd.show(s, "only")
    assert (t["status"], t["claimed_by"], t["fence"]) == ("done", "ada", mine["fence"])


def test_a_claim_ref_stays_while_its_task_can_be_claimed_again(origin_fleet: tuple[Fleet, Path]) -> None:
    """Only a task done or failed for good loses its claim ref: one released (or returned)
    keeps it, so the next claim moves it by compare-and-swap from where it was."""
    f, bare = origin_fleet
    tasks_config(f, {"retry_delay_seconds": 0, "max_failures": 2})
    task_cmd.add(f.path, [({"id": "r", "title": "r"}, "test")])
    c = task_cmd.claim(f.path, "ada")
    task_cmd.release(f.path, "r", c["fence"])
    assert claim_refs(bare) == ["r"]
    c = task_cmd.claim(f.path, "ada")
    task_cmd.fail(f.path, "r", c["fence"], reason="once")
    assert claim_refs(bare) == ["r"]  # failed once: pending again after the cooldown
    c = task_cmd.claim(f.path, "ada")
    task_cmd.fail(f.path, "r", c["fence"], reason="twice")
    assert claim_refs(bare) == []  # failed for good
    task_cmd.reopen(f.path, "r")
    c = task_cmd.claim(f.path, "ada")  # a new claim after a reopen creates the ref again, and holds
    assert c["fence"] == 4 and claim_refs(bare) == ["r"]


# -- the watchdog's returns go first: holders yield to its mark, it yields to nobody's ---------------
def mark(bare: Path, name: str) -> None:
    """A young waiting mark on the origin, as a change that lost a race leaves while it retries."""
    Git(bare).run("update-ref", f"refs/heads/{BRANCH}-waiting/{name}", f"refs/heads/{BRANCH}")


def watch(monkeypatch: pytest.MonkeyPatch, bare: Path, then: object = None) -> list[tuple[str, bool]]:
    """Record each fetch and each push of a change with whether a waiting mark was on the
    origin at that moment; ``then(n)`` runs before the n-th fetch."""
    events: list[tuple[str, bool]] = []
    real_fetch, real_publish = store.BranchStore._fetched_view, store.BranchStore.publish

    def marked() -> bool:
        return bool(Git(bare).text("for-each-ref", f"refs/heads/{BRANCH}-waiting/"))

    def fetched_view(self: store.BranchStore, *args: object, **kw: object) -> object:
        if callable(then):
            then(sum(1 for e in events if e[0] == "fetch"))
        events.append(("fetch", marked()))
        return real_fetch(self, *args, **kw)  # type: ignore[arg-type]

    def publish(self: store.BranchStore, *args: object, **kw: object) -> bool:
        events.append(("push", marked()))
        return real_publish(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(store.BranchStore, "_fetched_view", fetched_view)
    monkeypatch.setattr(store.BranchStore, "publish", publish)
    return events


def test_a_holders_complete_yields_to_the_watchdogs_mark(origin_fleet: tuple[Fleet, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Holders complete back to back and never back off; the watchdog, whose round reads the
    whole queue, would lose every race to them. Once its mark is up, a holder's complete
    pushes nothing until the mark is gone, then lands."""
    f, bare = origin_fleet
    task_cmd.add(f.path, [({"id": "w", "title": "w"}, "test")])
    a = clone(bare, tmp_path / "a")
    c = task_cmd.claim(a, "ada")
    mark(bare, "first-watchdog")

    def lift(n: int) -> None:
        if n == 3:  # the holder has fetched and seen the mark three times: the watchdog lands, its mark goes
            Git(bare).run("update-ref", "-d", f"refs/heads/{BRANCH}-waiting/first-watchdog")

    events = watch(monkeypatch, bare, lift)
    task_cmd.complete(a, "w", c["fence"], agent="ada")
    assert events[:3] == [("fetch", True)] * 3, events  # it yielded, pushing nothing
    assert [e for e in events if e[0] == "push"] == [("push", False)], events  # and pushed once the mark was gone
    assert task_cmd.show(a, "w")["status"] == "done"


def test_the_watchdog_does_not_yield_to_a_holders_mark(origin_fleet: tuple[Fleet, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    f, bare = origin_fleet
    tasks_config(f, {"retry_delay_seconds": 0, "grace_seconds": 0})
    task_cmd.add(f.path, [({"id": "w", "title": "w"}, "test")])
    a = clone(bare, tmp_path / "a")
    c = task_cmd.claim(a, "ada", lease=0.001)
    mark(bare, "holder")  # a holder waits to land its change
    events = watch(monkeypatch, bare)
    from fleet.commands.watchdog import watchdog

    r = watchdog(a)
    assert [t["id"] for t in r["returned"]] == ["w"] and r["pushed"]
    assert ("push", True) in events  # it pushed with the holder's mark up
    t = task_cmd.show(a, "w")
    assert (t["status"], t["fence"]) == ("pending", c["fence"])
