"""What a person's hand edit of the queue's branch, or a config change, must not do to
the rest of the queue: a dependency cycle, a dep that is not there, a task in
progress with no holder, a fence at its limit, a holder the config no longer lets
claim. Each on a fleet with a bare origin, the edit made in a clone and pushed, as
a person would; and the queue's decisions over generated queues, without git."""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet import config as config_mod
from fleet.errors import FleetError, NothingToDo
from fleet.main import cli
from fleet.tasks import BRANCH, MAX_FENCE, Queue, Task, claim, never_ready, new_task, task_path
from tests.commands.test_task import add, commit_config
from tests.commands.test_task import claim as cli_claim
from tests.conftest import Fleet, run

ROOT = Path(__file__).resolve().parents[1]
CFG = config_mod.parse((ROOT / "state/config.json").read_bytes())
AT = _dt.datetime(2026, 11, 22, 12, 0, tzinfo=_dt.UTC)
G = ["git", "-c", "user.name=person", "-c", "user.email=p@x", "-c", "commit.gpgsign=false"]


def hand_edit(f: Fleet, bare: Path, edit: dict[str, dict | None], clone: Path) -> None:
    """A person clones the fleet, edits task files on the queue's branch (None: removes
    one) and pushes, as they would by hand."""
    if not clone.exists():
        subprocess.run(["git", "clone", "--quiet", "--branch", BRANCH, str(bare), str(clone)], check=True)
    else:
        subprocess.run(["git", "pull", "--quiet", "origin", BRANCH], cwd=clone, check=True)
    for task_id, doc in edit.items():
        p = clone / task_path(task_id)
        if doc is None:
            p.unlink()
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    subprocess.run([*G, "add", "-A"], cwd=clone, check=True)
    subprocess.run([*G, "commit", "--quiet", "-m", "by hand"], cwd=clone, check=True)
    subprocess.run(["git", "push", "--quiet", "origin", BRANCH], cwd=clone, check=True)


def doc_of(bare: Path, task_id: str) -> dict:
    out = subprocess.run(["git", "show", f"refs/heads/{BRANCH}:{task_path(task_id)}"], cwd=bare, check=True,
                         capture_output=True).stdout
    return json.loads(out)


def tasks(f: Fleet, *args: str) -> dict:
    return json.loads(run(f, "task", "list", "--json", *args).stdout)  # (a quarantine warning is on stderr)


def needs(f: Fleet) -> list[str]:
    return json.loads(run(f, "status", "--json").stdout)["needs_you"]


# -- 1. a dependency cycle ------------------------------------------------------
@pytest.mark.parametrize("ring", [["tk-a"], ["tk-a", "tk-b"], ["tk-a", "tk-b", "tk-c"]])
def test_a_cycle_pushed_by_hand_dooms_its_tasks_and_the_rest_goes_on(origin_fleet: tuple[Fleet, Path],
                                                                        tmp_path: Path, ring: list[str]) -> None:
    f, bare = origin_fleet
    for i in ring:
        add(f, f"ring {i}", "--id", i)
    later = add(f, "waits for the ring", "--id", "tk-later", "--dep", ring[0])
    other = add(f, "free", "--id", "tk-free", "--priority", "3")
    done = add(f, "done before", "--id", "tk-done")
    c = cli_claim(f, "ada", "--task", done)
    run(f, "task", "complete", done, "--fence", str(c["fence"]))
    # each task of the ring waits for the next, the last for the first
    hand_edit(f, bare, {i: dict(doc_of(bare, i), deps=[ring[(k + 1) % len(ring)]]) for k, i in enumerate(ring)},
              tmp_path / "person")
    listed = {t["id"]: t for t in tasks(f)["tasks"]}
    circle = " -> ".join([*ring, ring[0]])
    assert listed[ring[0]]["never_ready"] == f"in a dependency cycle {circle}"
    assert listed[later]["never_ready"] == f"{ring[0]} is in a dependency cycle {circle}"
    assert listed[other]["never_ready"] is None and listed[other]["ready"]
    assert f"[never ready: in a dependency cycle {circle}]" in run(f, "task", "list").output
    assert [t["id"] for t in tasks(f, "--status", "done")["tasks"]] == [done]
    assert [t["id"] for t in json.loads(run(f, "task", "ready", "--json").stdout)["tasks"]] == [other]
    for i in [*ring, later, other]:
        run(f, "task", "show", i)
    r = run(f, "task", "claim", "--as", "ada", "--task", ring[-1], code=1)
    assert f"task {ring[-1]} is never ready: in a dependency cycle" in r.output and r.output.count("\n") == 1
    assert cli_claim(f, "ada")["id"] == other
    [line] = [n for n in needs(f) if "never be ready" in n]
    assert f"{len(ring) + 1} task(s) can never be ready, such as {ring[0]}" in line and "edit the deps" in line
    # and add still refuses to make a cycle
    r = run(f, "task", "add", "closes another", "--id", "tk-x", "--dep", "tk-x", code=1)
    assert "cycle" in r.output or "no task 'tk-x'" in r.output


@st.composite
def queues_with_a_cycle(draw: st.DrawFn) -> tuple[dict[str, list[str]], list[str]]:
    """A random dependency graph with one circle of any length hidden in it (deps that go
    upwards, i before j, cannot close another), and the circle."""
    n = draw(st.integers(1, 12))
    ids = [f"t{i}" for i in range(n)]
    graph = {i: sorted(draw(st.sets(st.sampled_from(ids[:k]), max_size=3))) if k else [] for k, i in enumerate(ids)}
    ring = draw(st.lists(st.sampled_from(ids), min_size=1, max_size=n, unique=True))
    for k, i in enumerate(ring):
        nxt = ring[(k + 1) % len(ring)]
        if nxt not in graph[i]:
            graph[i] = [*graph[i], nxt]
    return graph, ring


def _task(tid: str, deps: list[str], status: str = "pending", **kw: object) -> Task:
    return replace(new_task({"id": tid, "title": tid, **kw}, tid, CFG, AT), deps=deps, status=status)


def _waits_for(graph: dict[str, list[str]], start: str) -> set[str]:
    seen, todo = set(), list(graph[start])
    while todo:
        d = todo.pop()
        if d not in seen:
            seen.add(d)
            todo.extend(graph.get(d, []))
    return seen


@settings(max_examples=300, deadline=None)
@given(case=queues_with_a_cycle())
def test_every_task_that_waits_on_a_cycle_is_doomed_and_no_other(case: tuple[dict[str, list[str]], list[str]]) -> None:
    graph, ring = case
    q = Queue("tip", {i: _task(i, deps) for i, deps in graph.items()})
    on_a_cycle = {i for i in graph if i in _waits_for(graph, i)}
    for i in graph:
        doom = q.doom(q.tasks[i])
        stuck = bool(_waits_for(graph, i) & on_a_cycle) or i in on_a_cycle
        assert (doom is not None) == stuck, (i, graph)
        assert not q.is_ready(q.tasks[i], None, AT) or not stuck
        if doom is not None:
            assert doom.kind == "cycle"
            shown = doom.text(i).split("cycle ", 1)[1].split(" -> ")
            assert shown[0] == shown[-1] == doom.by and "…" not in shown or len(doom.cycle) > 8
            assert all(b in graph[a] for a, b in zip(shown, shown[1:]) if "…" not in (a, b))  # each waits for the next
    assert set(q.waves()) == set(graph)  # every task has a wave: nothing raised
    assert {t.id for t in q.ready(None, AT)} == {i for i in graph if not graph[i]}
    try:
        claim(q, CFG, AT, "ada", task_id=ring[0])
    except FleetError as e:
        assert not isinstance(e, NothingToDo) and "never ready" in str(e)
    else:
        raise AssertionError("a task on a cycle was claimed")


# -- 2. a dep that is not in the queue ------------------------------------------
@pytest.mark.parametrize("how", ["removed", "quarantined", "never there"])
def test_a_dep_that_is_not_in_the_queue_is_named_not_waited_for(origin_fleet: tuple[Fleet, Path], tmp_path: Path,
                                                               how: str) -> None:
    f, bare = origin_fleet
    ghost = add(f, "the dep", "--id", "tk-ghost")
    b = add(f, "waits", "--id", "tk-b", "--dep", ghost)
    c = add(f, "waits for b", "--id", "tk-c", "--dep", b)
    if how == "removed":
        hand_edit(f, bare, {ghost: None}, tmp_path / "person")
    elif how == "quarantined":
        hand_edit(f, bare, {ghost: dict(doc_of(bare, ghost), priority="high")}, tmp_path / "person")
    else:
        hand_edit(f, bare, {ghost: None, b: dict(doc_of(bare, b), deps=["tk-never"])}, tmp_path / "person")
        ghost = "tk-never"
    why = f"{ghost} is quarantined" if how == "quarantined" else f"{ghost} is not in the queue"
    listed = {t["id"]: t for t in tasks(f)["tasks"]}
    assert listed[b]["never_ready"].startswith(why) and listed[c]["never_ready"].startswith(why)
    assert listed[b]["doomed_by"] == ghost
    r = run(f, "task", "claim", "--as", "ada", "--task", b, code=1)  # not 3: waiting cannot help
    assert f"cannot claim: task {b} is never ready: {why}" in r.output
    [line] = [n for n in needs(f) if "never be ready" in n]
    assert f"2 task(s) can never be ready, such as {b}: {why}" in line
    assert ("fleet task add --id" in line) == (how != "quarantined")


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.from_regex(r"\Atk-[a-z0-9]{1,6}\Z"), min_size=2, max_size=8, unique=True),
       missing=st.sets(st.integers(0, 7), min_size=1), chain=st.booleans())
def test_a_task_waiting_on_a_missing_id_directly_or_not_is_doomed_by_it(ids: list[str], missing: set[int],
                                                                     chain: bool) -> None:
    gone = {ids[i] for i in missing if i < len(ids)} or {ids[0]}
    present = [i for i in ids if i not in gone]
    # each present task waits for the one before it (chain) or for a missing one directly
    q = Queue("tip", {i: _task(i, ([present[k - 1]] if chain and k else [sorted(gone)[0]]))
                      for k, i in enumerate(present)})
    for k, i in enumerate(present):
        doom = q.doom(q.tasks[i])
        assert doom is not None and doom.kind == "missing" and doom.by == sorted(gone)[0] or (chain and k == 0
                                                                                               and doom is None)
    assert [t.id for t, _ in never_ready(q)] == sorted(i for i in present if q.doom(q.tasks[i]))


# -- 3. a task in progress with no holder or no lease -----------------------------
@pytest.mark.parametrize("key", ["lease_until", "claimed_by", "claimed_at"])
def test_a_task_in_progress_with_a_null_holder_or_lease_is_quarantined_and_named(origin_fleet: tuple[Fleet, Path],
                                                                                  tmp_path: Path, key: str) -> None:
    f, bare = origin_fleet
    t = add(f, "held", "--id", "tk-held")
    other = add(f, "free", "--id", "tk-free")
    c = cli_claim(f, "ada", "--task", t)
    run(f, "task", "renew", t, "--fence", str(c["fence"]))  # the branch merges the claim
    doc = doc_of(bare, t)
    assert doc["status"] == "in-progress" and all(doc[k] for k in ("claimed_by", "claimed_at", "lease_until"))
    hand_edit(f, bare, {t: dict(doc, **{key: None})}, tmp_path / "person")
    where = f"{BRANCH}:{task_path(t)}"
    listed = tasks(f)
    assert [x["id"] for x in listed["tasks"]] == [other]
    [q] = listed["quarantined"]
    assert q["where"] == where and f"at /{key}: null, but a task in progress names who holds it" in q["reason"]
    out = run(f, "task", "list").output
    assert "None" not in out and f"warning: {where}: at /{key}" in out
    assert any(where in n for n in needs(f))


# -- 4. a fence at its limit -----------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(fence=st.one_of(st.integers(MAX_FENCE - 3, MAX_FENCE), st.integers(0, MAX_FENCE)), by_id=st.booleans())
def test_no_claim_raises_a_fence_past_its_limit(fence: int, by_id: bool) -> None:
    t = replace(_task("tk-f", []), fence=fence)
    q = Queue("tip", {"tk-f": t})
    try:
        step = claim(q, CFG, AT, "ada", task_id="tk-f" if by_id else None)
    except NothingToDo as e:
        assert fence == MAX_FENCE and not by_id and "no task is ready" in str(e)
    except FleetError as e:
        assert fence == MAX_FENCE and by_id and "fence is at its limit" in str(e)
    else:
        assert fence < MAX_FENCE and step.task.fence == fence + 1 <= MAX_FENCE
        Task.parse(step.task.to_json(), "claimed")  # the record the claim writes is one the queue reads back
    assert (q.doom(t) is not None) == (fence == MAX_FENCE)


def test_a_fence_at_its_limit_is_refused_at_claim_and_named(origin_fleet: tuple[Fleet, Path], tmp_path: Path) -> None:
    f, bare = origin_fleet
    t = add(f, "old", "--id", "tk-old")
    last = add(f, "one below", "--id", "tk-last")
    hand_edit(f, bare, {t: dict(doc_of(bare, t), fence=MAX_FENCE), last: dict(doc_of(bare, last), fence=MAX_FENCE - 1)},
              tmp_path / "person")
    before = subprocess.run(["git", "for-each-ref"], cwd=bare, capture_output=True, check=True).stdout
    r = run(f, "task", "claim", "--as", "ada", "--task", t, code=1)
    assert f"its fence is at its limit ({MAX_FENCE})" in r.output and r.output.count("\n") == 1
    assert subprocess.run(["git", "for-each-ref"], cwd=bare, capture_output=True, check=True).stdout == before
    c = cli_claim(f, "ada")  # the other, whose fence can go up once more
    assert (c["id"], c["fence"]) == (last, MAX_FENCE)
    run(f, "task", "complete", last, "--fence", str(MAX_FENCE))
    cli_claim(f, "ada", code=3)  # nothing else is ready: tk-old is never handed out
    [line] = [n for n in needs(f) if "never be ready" in n]
    assert f"such as {t}: its fence is at its limit" in line and "as a new task" in line


# -- 5. a holder the config no longer lets claim ----------------------------------
@pytest.mark.parametrize("verb", ["complete", "renew", "fail", "release"])
@pytest.mark.parametrize("how", ["agents_claim off", "claimer pattern dropped"])
def test_a_holder_finishes_what_it_holds_after_the_config_stops_its_claims(fleet: Fleet, verb: str, how: str) -> None:
    cfg = json.loads((fleet.path / "state/config.json").read_text())
    holder = "ada" if how == "agents_claim off" else "ci-7"
    if how == "claimer pattern dropped":
        cfg["tasks"] = {"claimers": ["ci-*"]}
        commit_config(fleet, cfg)
    t = add(fleet, "held")
    add(fleet, "another")
    c = cli_claim(fleet, holder)
    cfg["tasks"] = {"agents_claim": False} if how == "agents_claim off" else {"claimers": []}
    commit_config(fleet, cfg)
    run(fleet, "task", "claim", "--as", holder, code=2)  # who may claim is still asked at a claim
    extra = ["--reason", "cannot"] if verb == "fail" else []
    run(fleet, "task", verb, t, "--fence", str(c["fence"]), "--as", holder, *extra)
    # and the fence is still the authority: another name is refused as the holder
    if verb == "renew":
        r = run(fleet, "task", "renew", t, "--fence", str(c["fence"]), "--as", "basil", code=1)
        assert f"it is held by {holder}, not basil" in r.output


# -- small ones ------------------------------------------------------------------
def test_list_refuses_an_empty_agent(fleet: Fleet) -> None:
    add(fleet, "one")
    r = run(fleet, "task", "list", "--agent", "", code=2)
    assert "--agent: an empty name matches no agent" in r.output


def test_add_file_dash_reads_standard_input(fleet: Fleet) -> None:
    lines = "\n".join(json.dumps({"title": f"from stdin {i}"}) for i in range(3)) + "\n"
    r = CliRunner().invoke(cli, ["task", "-C", str(fleet.path), "add", "--file", "-", "--json"], input=lines)
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["added"]) == 3
    r = CliRunner().invoke(cli, ["task", "-C", str(fleet.path), "add", "--file", "-"], input='{"title": 3}\n')
    assert r.exit_code == 1 and "standard input:1: at /title" in r.output


def test_a_bool_priority_is_named_as_json_says_it(fleet: Fleet, tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text('{"title": "x", "priority": true}\n')
    r = run(fleet, "task", "add", "--file", str(tmp_path / "t.jsonl"), code=1)
    assert "at /priority: true is not a whole number" in r.output
