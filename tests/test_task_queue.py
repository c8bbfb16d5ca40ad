"""The claim path under contention, under kill -9, and against a model.

Every system before us that claimed work through git moved to a database or
grew repair scripts. These tests are why we did not have to: many processes
on many clones claim from one remote and each task has exactly one winner; a
claimer killed at any step leaves the queue valid with nothing claimed twice;
and any sequence of operations by any agents keeps the queue's invariants.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.commands import task as task_cmd
from fleet.errors import FleetError, NothingToDo
from fleet.faults import ENV as CRASH_ENV
from fleet.git import Git
from fleet.overlap import shared
from fleet.repo import FleetRepo
from fleet.tasks import BRANCH, TaskQueue, task_path
from tests.conftest import Fleet, fleet_cli

CLAIMERS = int(os.environ.get("FLEET_CLAIMERS", "80"))
AGENTS = ["ada", "basil", "cleo", "dara", "eli", "fen"]


def clones(bare: Path, where: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        d = where / f"c{i}"
        subprocess.run(["git", "clone", "-q", "--no-checkout", str(bare), str(d)], check=True)
        out.append(d)
    return out


def fleet_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fleet", *args]


def claim_history(bare: Path) -> dict[str, list[str]]:
    """Each task's claim commits on the remote: on the queue branch, or on a claim ref
    the branch has not merged yet."""
    by_task: dict[str, list[str]] = {}
    git = Git(bare)
    refs = git.text("for-each-ref", "--format=%(refname)", f"refs/heads/{BRANCH}-claims/").split()
    for line in git.text("log", "--format=%s", f"refs/heads/{BRANCH}", *refs).splitlines():
        if line.startswith("task claim "):
            by_task.setdefault(line.split()[2], []).append(line)
    return by_task


def test_many_claimers_on_many_clones_one_winner_per_task(origin_fleet: tuple[Fleet, Path], tmp_path: Path) -> None:
    """80 processes, 80 clones, one remote, 40 tasks: exactly one winner per task,
    40 winners and 40 told that nothing is ready (exit 3)."""
    f, bare = origin_fleet
    tasks = CLAIMERS // 2
    items = tmp_path / "t.jsonl"
    items.write_text("".join(json.dumps({"id": f"job-{i:03d}", "title": f"job {i}"}) + "\n" for i in range(tasks)))
    subprocess.run(fleet_cmd("task", "add", "-C", str(f.path), "--file", str(items)), check=True, capture_output=True)
    dirs = clones(bare, tmp_path, CLAIMERS)
    procs = [subprocess.Popen(fleet_cmd("task", "claim", "-C", str(d), "--as", AGENTS[i % 6], "--json"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i, d in enumerate(dirs)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        results.append((p.returncode, out, err))
    codes = sorted(code for code, _, _ in results)
    assert codes == [0] * tasks + [3] * (CLAIMERS - tasks), [e[-300:] for c, _, e in results if c not in (0, 3)]
    won = [json.loads(out)["id"] for code, out, _ in results if code == 0]
    assert sorted(won) == [f"job-{i:03d}" for i in range(tasks)]  # every task, each once
    history = claim_history(bare)
    assert all(len(v) == 1 for v in history.values()) and len(history) == tasks
    q = TaskQueue(FleetRepo(dirs[0]))
    q.fetch()
    assert all(t.status == "in-progress" and t.fence == 1 for t in q.read().tasks.values())


@pytest.mark.parametrize("point", ["task.after-commit", "task.during-push"])
def test_a_claimer_killed_at_any_step_claims_nothing_twice(origin_fleet: tuple[Fleet, Path], tmp_path: Path,
                                                          point: str) -> None:
    f, bare = origin_fleet
    for i in range(3):
        task_cmd.add(f.path, [({"id": f"k{i}", "title": f"k{i}"}, "test")])
    victim, other = clones(bare, tmp_path, 2)
    env = dict(os.environ, **{CRASH_ENV: point})
    p = subprocess.run(fleet_cmd("task", "claim", "-C", str(victim), "--as", "ada", "--lease", "1"), env=env,
                       capture_output=True)
    assert p.returncode == -signal.SIGKILL
    # the others go on; the dead claimer's task is claimed at most once
    for _ in range(2):
        subprocess.run(fleet_cmd("task", "claim", "-C", str(other), "--as", "basil"), check=True, capture_output=True)
    history = claim_history(bare)
    assert all(len(v) == 1 for v in history.values())
    q = TaskQueue(FleetRepo(other))
    q.fetch()
    state = q.read().tasks
    held = [t for t in state.values() if t.status == "in-progress"]
    assert len(held) == len(history)  # every claim that landed is one holder; none is half-written
    if len(history) == 3:  # the push landed before the kill: ada's lease runs out and the watchdog returns it
        time.sleep(1.1)
        r = subprocess.run(fleet_cmd("watchdog", "-C", str(other), "--json", "--grace", "0"), capture_output=True,
                           check=True)
        assert [x["holder"] for x in json.loads(r.stdout)["returned"]] == ["ada"]
    else:
        assert point == "task.after-commit" or len(history) == 2
        assert subprocess.run(fleet_cmd("task", "claim", "-C", str(victim), "--as", "ada"),
                              capture_output=True).returncode == 0  # the victim, restarted, claims the last one


# -- a model of the queue, against the real thing --------------------------
PATHS = [[], ["src"], ["src/app.py"], ["docs", "src/*.py"], ["tests"], ["**/test_*.py"]]  # by k
OPS = st.lists(
    st.tuples(st.sampled_from(["add", "claim", "complete", "fail", "release", "renew", "stale", "sling"]),
              st.sampled_from(AGENTS[:3]), st.integers(0, 5)),
    min_size=1, max_size=14,
)


@settings(max_examples=int(os.environ.get("FLEET_PROPERTY_EXAMPLES", "12")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=OPS)
def test_any_sequence_keeps_the_queue_invariants(tmp_path_factory: pytest.TempPathFactory, ops: list) -> None:
    """Whatever agents do, in any order: a task has at most one holder, fences
    only go up, a done task stays done, a stale fence never changes anything,
    two tasks whose paths overlap are never in flight at once, and the branch
    history holds one commit per change."""
    from fleet.commands.init import init

    path = tmp_path_factory.mktemp("q") / "fleet"
    init(path)
    cfg = json.loads((path / "state/config.json").read_text())
    cfg["tasks"] = {"retry_delay_seconds": 0, "max_failures": 3}
    (path / "state/config.json").write_text(json.dumps(cfg))
    g = ["git", "-c", "user.name=t", "-c", "user.email=t@x", "-c", "commit.gpgsign=false"]
    subprocess.run([*g, "commit", "-qam", "c"], cwd=path, check=True)
    git = Git(path)
    held: dict[str, tuple[str, int]] = {}  # task -> (agent, token) the model expects
    done: set[str] = set()
    last_token: dict[str, int] = {}
    slung: dict[str, str] = {}
    paths: dict[str, list[str]] = {}
    changes = 0
    for n, (op, agent, k) in enumerate(ops):
        ids = sorted(last_token)
        tid = ids[k % len(ids)] if ids else None
        tip = git.rev_parse(f"refs/heads/{BRANCH}")
        try:
            if op == "add":
                paths[f"t{n}"] = PATHS[k]
                task_cmd.add(path, [({"id": f"t{n}", "title": f"t{n}", "deps": ids[:1] if k == 0 else [],
                                      "paths": PATHS[k]}, "p")])
                last_token[f"t{n}"] = 0
                changes += 1
            elif op == "claim":
                t = task_cmd.claim(path, agent)
                assert t["id"] not in held and t["id"] not in done, "claimed a task that is held or done"
                assert not [h for h in held if shared(paths[t["id"]], paths[h])], "two tasks share paths in flight"
                assert t["fence"] == last_token[t["id"]] + 1
                held[t["id"]] = (agent, t["fence"])
                last_token[t["id"]] = t["fence"]
                changes += 1
            elif op in ("complete", "fail", "release", "renew") and tid in held:
                who, token = held[tid]
                fn = {"complete": lambda: task_cmd.complete(path, tid, token, result=n),
                      "fail": lambda: task_cmd.fail(path, tid, token, reason="x"),
                      "release": lambda: task_cmd.release(path, tid, token),
                      "renew": lambda: task_cmd.renew(path, tid, token)}[op]
                fn()
                changes += 1
                if op != "renew":
                    del held[tid]
                if op == "complete":
                    done.add(tid)
            elif op == "stale" and tid is not None and last_token[tid] > 0:
                with pytest.raises(FleetError):
                    task_cmd.complete(path, tid, last_token[tid] - 1 if tid in held else last_token[tid], result="late")
                assert git.rev_parse(f"refs/heads/{BRANCH}") == tip, "a refused holder changed the queue"
            elif op == "sling" and tid is not None and tid not in held and tid not in done:
                task_cmd.sling(path, tid, agent)
                changes += slung.get(tid) != agent  # slinging to the same agent again is no change
                slung[tid] = agent
        except NothingToDo:
            assert git.rev_parse(f"refs/heads/{BRANCH}") == tip
        except FleetError as e:
            if "only a pending task" not in str(e):  # slinging a failed task is refused, rightly
                raise
    q = TaskQueue(FleetRepo(path)).read()
    for tid, t in q.tasks.items():
        assert t.fence == last_token[tid]
        assert (t.status == "in-progress") == (tid in held)
        assert (t.status == "done") == (tid in done)
        if tid in held:
            assert (t.claimed_by, t.fence) == held[tid]
    # cleanup: no claim ref is left of a task done or failed for good once the branch holds its claim
    assert not [tid for tid in q.claim_refs if q.tasks[tid].status in ("done", "failed") and tid not in q.unfolded]
    # the branch and the claims on claim refs it has not merged yet (a claim of a task that declares no paths)
    count = int(git.text("rev-list", "--count", f"refs/heads/{BRANCH}", f"--glob=refs/heads/{BRANCH}-claims/*")) \
        if q.tip else 0
    assert count == changes


def test_claims_from_a_clock_an_hour_off_are_still_fenced(fleet: Fleet) -> None:
    """Leases use the claimer's clock, but the token does not: a late result
    from a reclaimed task is refused whatever the clocks say."""
    task_cmd.add(fleet.path, [({"id": "a", "title": "a"}, "t")])
    first = task_cmd.claim(fleet.path, "ada", lease=1)
    time.sleep(1.05)
    from fleet.commands.watchdog import watchdog

    cfg = json.loads((fleet.path / "state/config.json").read_text())
    assert watchdog(fleet.path, grace=0)["returned"][0]["id"] == "a"
    tq = TaskQueue(FleetRepo(fleet.path))
    doc = dict(tq.read().tasks["a"].to_json(), not_before=None)  # a person waves the retry delay (as `sling` would for a pending task)
    tip = tq.read().tip
    new = tq.git.write_commit(tip, "hand\n", {task_path("a"): json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"}, [])
    assert tq.publish(new, tip)
    second = task_cmd.claim(fleet.path, "basil")
    assert second["fence"] == first["fence"] + 1
    with pytest.raises(FleetError, match="stale"):
        task_cmd.complete(fleet.path, "a", first["fence"], result="late")
    assert cfg  # config untouched
    _ = _dt


def test_claimers_sharing_one_clone_race_but_never_fail(origin_fleet: tuple[Fleet, Path], tmp_path: Path) -> None:
    """Several claims from the same clone at once collide on its refs as well as
    on the remote's; a collision is a race to retry, never an error."""
    f, bare = origin_fleet
    items = tmp_path / "t.jsonl"
    items.write_text("".join(json.dumps({"id": f"s{i}", "title": f"s{i}"}) + "\n" for i in range(12)))
    subprocess.run(fleet_cmd("task", "add", "-C", str(f.path), "--file", str(items)), check=True, capture_output=True)
    (shared,) = clones(bare, tmp_path, 1)
    procs = [subprocess.Popen(fleet_cmd("task", "claim", "-C", str(shared), "--as", AGENTS[i % 6], "--json"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(10)]
    outs = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    assert [c for c, _, _ in outs] == [0] * 10, [e[-300:] for c, _, e in outs if c]
    won = [json.loads(o)["id"] for _, o, _ in outs]
    assert len(set(won)) == 10
    assert all(len(v) == 1 for v in claim_history(bare).values())


def test_claims_yield_to_a_waiting_holder_until_its_mark_is_old(origin_fleet: tuple[Fleet, Path], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiting mark on the origin (a holder lost a race) stops claims, not holders;
    one a killed holder left stops nobody once it is WAITING_TTL old."""
    from fleet import store, tasks

    f, bare = origin_fleet
    task_cmd.add(f.path, [({"id": f"y{i}", "title": f"y{i}"}, "test") for i in range(3)])
    a, b = clones(bare, tmp_path, 2)
    held = task_cmd.claim(b, "basil")
    git = Git(bare)
    mark = git.text("commit-tree", "-m", "waiting", f"refs/heads/{BRANCH}^{{tree}}")  # made now
    git.run("update-ref", f"refs/heads/{BRANCH}-waiting/someone", mark)
    before = claim_history(bare)
    with pytest.raises(FleetError, match="change of higher priority waiting to land"):
        TaskQueue(FleetRepo(a)).change(lambda q, cfg, at: tasks.claim(q, cfg, at, "ada").change(), patience=0.3)
    assert claim_history(bare) == before  # the claim pushed nothing
    task_cmd.complete(b, held["id"], held["fence"], agent="basil")  # a holder does not yield to another
    monkeypatch.setattr(store, "WAITING_TTL", 0.0)  # the mark's holder died long ago
    assert task_cmd.claim(a, "ada")["id"] != held["id"]
    assert len(claim_history(bare)) == 2


# -- claim refs -------------------------------------------------------------
def test_claims_go_to_claim_refs_and_the_next_change_merges_them(origin_fleet: tuple[Fleet, Path],
                                                                 tmp_path: Path) -> None:
    """A claim of a task that declares no paths moves that task's claim ref, not the
    branch; the holder's complete merges the claim commit into the branch, so the
    branch's history holds the claim just before the complete. A task that
    declares paths is claimed on the branch, its claim ref moved in the same push."""
    f, bare = origin_fleet
    task_cmd.add(f.path, [({"id": "plain", "title": "plain"}, "test"),
                          ({"id": "pathy", "title": "pathy", "paths": ["src/"]}, "test")])
    a, b = clones(bare, tmp_path, 2)
    git = Git(bare)
    tip = git.text("rev-parse", f"refs/heads/{BRANCH}")
    mine = task_cmd.claim(a, "ada", task_id="plain")
    assert git.text("rev-parse", f"refs/heads/{BRANCH}") == tip  # the branch did not move
    claim = git.text("rev-parse", f"refs/heads/{BRANCH}-claims/plain")
    assert git.text("log", "-1", "--format=%P %s", claim) == f"{tip} task claim plain by ada (fence 1)"
    q = TaskQueue(FleetRepo(b))
    q.fetch()
    seen = q.read().tasks["plain"]  # another clone sees the claim
    assert (seen.status, seen.claimed_by, seen.fence) == ("in-progress", "ada", 1)
    with pytest.raises(NothingToDo, match="in-progress, held by ada"):
        task_cmd.claim(b, "basil", task_id="plain")
    task_cmd.complete(b, "plain", 1, agent="ada")  # from the other clone: it merges the claim it fetched
    parents = git.text("log", "-1", "--format=%P", f"refs/heads/{BRANCH}").split()
    assert parents == [tip, claim]
    assert git.text("log", "--topo-order", "--format=%s", f"refs/heads/{BRANCH}").splitlines()[:3] == [
        "task complete plain by ada (fence 1)", "task claim plain by ada (fence 1)", "task add 2 tasks"]
    other = task_cmd.claim(a, "ada", task_id="pathy")
    on_branch = git.text("rev-parse", f"refs/heads/{BRANCH}")
    assert git.text("log", "-1", "--format=%s", on_branch) == "task claim pathy by ada (fence 1)"
    assert git.text("rev-parse", f"refs/heads/{BRANCH}-claims/pathy") == on_branch
    assert mine["fence"] == other["fence"] == 1


def test_a_claim_ref_that_lies_is_refused_naming_it(origin_fleet: tuple[Fleet, Path], tmp_path: Path) -> None:
    """A claim ref is input like any other: one that holds another task's record, or
    none, is quarantined, named with the rule; the queue reads on without it, and a
    claim of that task moves the ref by compare-and-swap from where the lie left it."""
    f, bare = origin_fleet
    task_cmd.add(f.path, [({"id": "x1", "title": "x1"}, "test"), ({"id": "x2", "title": "x2"}, "test")])
    a, = clones(bare, tmp_path, 1)
    task_cmd.claim(a, "ada", task_id="x1")
    git = Git(bare)
    x1 = git.text("rev-parse", f"refs/heads/{BRANCH}-claims/x1")
    lie = git.write_commit(x1, "task claim x2", {task_path("x2"): git.run("show", f"{x1}:{task_path('x1')}")}, [])
    git.run("update-ref", f"refs/heads/{BRANCH}-claims/x2", lie)
    out = task_cmd.listing(a)
    assert [(q["where"].startswith(f"refs/heads/{BRANCH}-claims/x2:tasks/"), "holds the record of 'x1'" in q["reason"])
            for q in out["quarantined"]] == [(True, True)], out["quarantined"]
    assert {t["id"]: t["status"] for t in out["tasks"]} == {"x1": "in-progress", "x2": "pending"}
    git.run("update-ref", f"refs/heads/{BRANCH}-claims/x2", git.text("rev-parse", "refs/heads/main"))
    out = task_cmd.listing(a)
    assert [q["reason"] for q in out["quarantined"]] == ["its commit has no tasks/" + task_path("x2")[6:] +
                                                         " (a claim ref holds its record)"]
    got = task_cmd.claim(a, "basil", task_id="x2")  # the claim replaces the bad ref, compare-and-swap from it
    assert got["fence"] == 1 and task_cmd.listing(a)["quarantined"] == []


def test_branch_protection_is_named_only_when_the_remotes_rules_refused_the_push(
        origin_fleet: tuple[Fleet, Path], tmp_path: Path) -> None:
    """Every failed push was explained as branch protection, a remote that is no
    repository included: the hint sent a person the wrong way."""
    f, bare = origin_fleet
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'GH006: Protected branch update failed' >&2\nexit 1\n")
    hook.chmod(0o755)
    r = fleet_cli(f.path, "task", "add", "write the docs")
    assert r.returncode == 1 and "refused" in r.stderr and "branch protection" in r.stderr, r.stderr
    hook.unlink()
    gone = tmp_path / "gone.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(bare), str(gone)], check=True)
    subprocess.run(["git", "remote", "set-url", "--push", "origin", str(tmp_path / "nothing-here")], cwd=f.path,
                   check=True)  # fetches work, the push finds no repository
    r = fleet_cli(f.path, "task", "add", "write the docs")
    assert r.returncode == 1 and "branch protection" not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
