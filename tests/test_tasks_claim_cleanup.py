"""A claim that creates its claim ref never brings back the ref of a task the cleanup
left for good (fleet/store.py, ``BranchStore`` claim refs): a push-first claim leases
the branch at the tip it decided on in its own push (one round trip, nothing after it);
a claim decided on a fetched view is checked after it lands, and taken back if the
cleanup came between. Each test fails if its check is taken out."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fleet import faults, store
from fleet.commands import task as task_cmd
from fleet.errors import FleetError
from fleet.git import Git, PushResult, RefUpdate
from fleet.tasks import BRANCH
from tests.conftest import Fleet

CLAIMS = f"refs/heads/{BRANCH}-claims/"


def clone(bare: Path, where: Path) -> Path:
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(bare), str(where)], check=True)
    return where


def claim_refs(bare: Path) -> list[str]:
    return Git(bare).text("for-each-ref", "--format=%(refname:lstrip=4)", CLAIMS).split()


def pushes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[RefUpdate], str]]:
    """Every push fleet makes from here on: (its ref updates, its outcome)."""
    seen: list[tuple[list[RefUpdate], str]] = []
    real = Git.push

    def push(self: Git, remote: str, updates: list[RefUpdate], **kw: object) -> PushResult:
        result = real(self, remote, updates, **kw)  # type: ignore[arg-type]
        seen.append((list(updates), result.outcome))
        return result

    monkeypatch.setattr(Git, "push", push)
    return seen


def test_a_claim_whose_lease_lost_and_that_the_cleanup_overtook_is_taken_back(
        origin_fleet: tuple[Fleet, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """s fetches and decides to claim task "only"; before its push, a adds a task (the
    branch moves), so s's push, which leases the branch, is refused. s fetches and
    decides again; its next round leases nothing (claims do not keep racing the
    branch), and before its push a claims "only" and completes it (the complete deletes
    its claim ref). s's push creates the ref again from "no ref" and lands; the check
    after it finds the task done at s's fence and takes the claim back before anyone is
    told; decided again, the claim is refused: the task is done."""
    f, bare = origin_fleet
    task_cmd.add(f.path, [({"id": "only", "title": "only"}, "test")])
    a, s = clone(bare, tmp_path / "a"), clone(bare, tmp_path / "s")  # s has no view: its rounds fetch
    events: list[tuple[str, object]] = []
    inside = []  # a's changes, made inside s's rounds, are not s's events
    real_point, real_publish, real_hold = faults.point, store.BranchStore.publish, store.BranchStore._created_hold

    def point(name: str) -> None:
        if name == "task.after-commit" and not inside:
            inside.append(True)
            rounds = sum(1 for e in events if e[0] in ("landed", "lost"))
            if rounds == 0:
                task_cmd.add(a, [({"id": "later", "title": "later", "deps": ["only"]}, "test")])
                events.append(("a added a task", None))
            elif rounds == 1:
                mine = task_cmd.claim(a, "ada", task_id="only")
                task_cmd.complete(a, "only", mine["fence"], agent="ada")
                assert claim_refs(bare) == []  # the cleanup, before s pushes
                events.append(("a claimed and completed", mine["fence"]))
            inside.clear()
        real_point(name)

    def publish(self: store.BranchStore, *args: object, **kw: object) -> bool:
        won = real_publish(self, *args, **kw)  # type: ignore[arg-type]
        if not inside:
            events.append(("landed" if won else "lost", [u.ref.rpartition("/")[2] for u in kw.get("claims", ())],
                           "leased" if kw.get("branch_at") else "no lease"))
        return won

    def hold(self: store.BranchStore, *args: object) -> bool:
        held = real_hold(self, *args)  # type: ignore[arg-type]
        if not inside:
            events.append(("holds" if held else "taken back", claim_refs(bare)))
        return held

    monkeypatch.setattr(faults, "point", point)
    monkeypatch.setattr(store.BranchStore, "publish", publish)
    monkeypatch.setattr(store.BranchStore, "_created_hold", hold)
    with pytest.raises(FleetError, match="cannot claim: .*only is done|cannot claim: .*already done|done"):
        task_cmd.claim(s, "basil", task_id="only")
    assert events == [("a added a task", None), ("lost", ["only"], "leased"),
                      ("a claimed and completed", 1), ("landed", ["only"], "no lease"), ("taken back", [])], events
    assert claim_refs(bare) == []
    t = task_cmd.show(s, "only")
    assert (t["status"], t["claimed_by"], t["fence"]) == ("done", "ada", 1)


def test_a_push_first_claim_on_a_current_view_is_one_push_that_leases_the_branch(
        origin_fleet: tuple[Fleet, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim creates its ref, leases main and the branch at the tips it decided on,
    all in one atomic push, and is answered: no second round trip to check the branch."""
    f, bare = origin_fleet
    task_cmd.add(f.path, [({"id": f"t{i}", "title": f"t{i}"}, "test") for i in range(3)])
    a = clone(bare, tmp_path / "a")
    task_cmd.claim(a, "ada")  # a's first claim fetches: a has a view from here on
    seen = pushes(monkeypatch)
    branch = Git(bare).text("rev-parse", f"refs/heads/{BRANCH}")
    main = Git(bare).text("rev-parse", "refs/heads/main")
    got = task_cmd.claim(a, "ada")
    assert len(seen) == 1, seen
    (updates, outcome), = seen
    assert outcome == "won"
    by_ref = {u.ref: u for u in updates}
    assert by_ref.keys() == {CLAIMS + got["id"], "refs/heads/main", f"refs/heads/{BRANCH}"}
    assert by_ref[CLAIMS + got["id"]].old is None  # it created the claim ref
    assert (by_ref["refs/heads/main"].old, by_ref["refs/heads/main"].new) == (main, main)
    assert (by_ref[f"refs/heads/{BRANCH}"].old, by_ref[f"refs/heads/{BRANCH}"].new) == (branch, branch)
    assert sorted(claim_refs(bare)) == sorted(t["id"] for t in task_cmd.listing(a)["tasks"]
                                              if t["status"] == "in-progress")


def test_a_push_first_claim_whose_branch_moved_meanwhile_is_decided_again_on_a_fetch(
        origin_fleet: tuple[Fleet, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another task's complete moved the branch since a's view: a's push-first claim is
    refused whole (nothing lands on its view), and the claim decided again on a fetch
    lands, in one push too. Every task is claimed once."""
    f, bare = origin_fleet
    task_cmd.add(f.path, [({"id": f"t{i}", "title": f"t{i}"}, "test") for i in range(3)])
    a, b = clone(bare, tmp_path / "a"), clone(bare, tmp_path / "b")
    first = task_cmd.claim(a, "ada")
    other = task_cmd.claim(b, "basil")
    task_cmd.complete(b, other["id"], other["fence"], agent="basil")  # the branch moves; a does not see it
    seen = pushes(monkeypatch)
    got = task_cmd.claim(a, "ada")
    assert got["id"] not in (first["id"], other["id"])
    outcomes = [(o, any(u.ref == f"refs/heads/{BRANCH}" and u.new == u.old for u in ups)) for ups, o in seen]
    # the push-first claim leasing the branch lost; the one decided on a fetch leased it too, and landed
    assert outcomes == [("lost", True), ("won", True)], seen
    log = Git(bare).text("log", "--format=%s", f"refs/heads/{BRANCH}", *[CLAIMS + r for r in claim_refs(bare)])
    claimed = [line.split()[2] for line in log.splitlines() if line.startswith("task claim ")]
    assert sorted(claimed) == ["t0", "t1", "t2"]
