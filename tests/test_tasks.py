"""fleet.tasks without git: the queue's decisions as pure functions, proven by
properties over random queues (waves, dependency order)."""

from __future__ import annotations

import datetime as _dt
import itertools
import random
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from fleet import config as config_mod
from fleet.tasks import MISSING, DependencyCycle, Queue, Task, dependency_order, new_task

ROOT = Path(__file__).resolve().parents[1]
CFG = config_mod.parse((ROOT / "state/config.json").read_bytes())
AT = _dt.datetime(2026, 11, 22, 12, 0, tzinfo=_dt.UTC)


def task(tid: str, deps: list[str] | tuple[str, ...] = (), status: str = "pending", **kw: object) -> Task:
    t = new_task({"id": tid, "title": tid, "deps": list(deps), **kw}, tid, CFG, AT)
    return replace(t, status=status)


def queue(*items: Task) -> Queue:
    return Queue("tip", {t.id: t for t in items})


# -- waves ---------------------------------------------------------------------
@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    """A random dependency graph without cycles: task i waits only for tasks below i."""
    n = draw(st.integers(1, 9))
    return {f"t{i}": sorted(draw(st.sets(st.sampled_from([f"t{j}" for j in range(i)]), max_size=min(i, 4))))
            if i else [] for i in range(n)}


def longest_chain(graph: dict[str, list[str]], start: str) -> int:
    """The number of edges on the longest chain of deps from ``start``, by walking every chain."""
    best, stack = 0, [(start, 0)]
    while stack:
        node, length = stack.pop()
        best = max(best, length)
        stack.extend((d, length + 1) for d in graph[node])
    return best


@settings(max_examples=300, deadline=None)
@given(graph=dags(), seed=st.integers(0, 2**32))
def test_a_tasks_wave_is_its_longest_chain_of_deps(graph: dict[str, list[str]], seed: int) -> None:
    ids = list(graph)
    random.Random(seed).shuffle(ids)  # the order the branch lists them in does not matter
    q = queue(*(task(i, graph[i]) for i in ids))
    waves = q.waves()
    assert waves == {i: longest_chain(graph, i) for i in graph}
    for i, deps in graph.items():  # so a wave never waits for its own wave or a later one
        assert all(waves[d] < waves[i] for d in deps)


@settings(max_examples=300, deadline=None)
@given(edges=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=14))
def test_dependency_order_puts_deps_first_or_names_a_real_cycle(edges: list[tuple[int, int]]) -> None:
    graph: dict[str, list[str]] = {f"t{i}": [] for i in range(7)}
    for a, b in edges:
        if f"t{b}" not in graph[f"t{a}"]:
            graph[f"t{a}"].append(f"t{b}")
    tasks = {i: replace(task(i), deps=deps) for i, deps in graph.items()}
    try:
        order = dependency_order(tasks, list(tasks))
    except DependencyCycle as e:
        assert e.path[0] == e.path[-1] and len(e.path) >= 2
        assert all(b in graph[a] for a, b in zip(e.path, e.path[1:]))
        return
    assert sorted(order) == sorted(graph)
    seen: set[str] = set()
    for i in order:
        assert set(graph[i]) <= seen
        seen.add(i)


def test_a_chain_of_ten_thousand_is_no_deeper_than_one() -> None:
    """Waves, cycles and doomed tasks are found without recursion: a long chain is no crash."""
    n = 10_000
    tasks = [task("c0", status="failed")] + [task(f"c{i}", [f"c{i - 1}"]) for i in range(1, n)]
    q = queue(*tasks)
    assert q.waves()[f"c{n - 1}"] == n - 1
    assert q.doomed_by(tasks[-1]) == "c0"


def test_a_cycle_on_the_branch_is_named_and_the_rest_goes_on() -> None:
    q = queue(replace(task("a"), deps=["b"]), replace(task("b"), deps=["a"]), task("c"), task("d", ["a"]))
    assert set(q.waves()) == {"a", "b", "c", "d"}  # a read of the queue never stops at a cycle
    assert [str(d and d.text(i)) for i in "abcd" for d in [q.doom(q.tasks[i])]] == [
        "in a dependency cycle a -> b -> a", "in a dependency cycle b -> a -> b", "None",
        "a is in a dependency cycle a -> b -> a"]
    assert [t.id for t in q.ready(None, AT)] == ["c"]


# -- shared paths: never two overlapping tasks in flight ------------------------
PATHS = ["src", "src/app.py", "src/*.py", "src/web/app.py", "docs", "docs/*.md", "**/test_*.py",
         "tests/test_app.py", "README.md", "*"]


@settings(max_examples=300, deadline=None)
@given(declared=st.lists(st.lists(st.sampled_from(PATHS), max_size=2, unique=True), min_size=1, max_size=7),
       ops=st.lists(st.tuples(st.sampled_from(["claim", "claim-task", "claim-task", "complete", "fail", "release",
                                               "return"]), st.integers(0, 6)), min_size=4, max_size=30))
def test_no_two_overlapping_tasks_are_ever_in_flight(declared: list[list[str]], ops: list[tuple[str, int]]) -> None:
    """Whatever agents do, in any order, a claim never puts a task in flight
    beside one whose paths overlap its own; and a task held back for that
    reason is named, with the task in flight that holds it."""
    from fleet.errors import FleetError, NothingToDo
    from fleet.overlap import shared
    from fleet.tasks import claim, complete, fail, release, returned

    cfg = replace(CFG, tasks=replace(CFG.tasks, retry_delay_seconds=0, max_failures=100))
    items = {f"t{i}": task(f"t{i}", paths=p) if p else task(f"t{i}") for i, p in enumerate(declared)}
    for n, (op, k) in enumerate(ops):
        q = queue(*items.values())
        at = AT + _dt.timedelta(seconds=n)
        ids = sorted(items)
        tid = ids[k % len(ids)]
        held = [t for t in items.values() if t.status == "in-progress"]
        try:
            if op == "claim":
                step = claim(q, cfg, at, "ada")
            elif op == "claim-task":
                step = claim(q, cfg, at, "ada", task_id=tid)
            elif op in ("complete", "fail", "release") and held:
                t = held[k % len(held)]
                step = {"complete": lambda: complete(q, at, t.id, t.fence),
                        "fail": lambda: fail(q, cfg, at, t.id, t.fence, reason="x"),
                        "release": lambda: release(q, cfg, at, t.id, t.fence)}[op]()
            elif op == "return" and held:  # the watchdog's return of an expired lease
                step = type("S", (), {"task": returned(held[k % len(held)], cfg, at, "late")[0]})()
            else:
                continue
        except NothingToDo as e:
            if op == "claim-task" and items[tid].status == "pending" and not q.blockers(items[tid]):
                event("a claim refused for a task in flight that shares paths")
                other = q.paths_held_by(items[tid])
                assert other is not None and other.by.id in str(e)  # the refusal names the other task
            continue
        except FleetError:
            assert op == "claim-task" and items[tid].status in ("done", "in-progress")
            continue
        items[step.task.id] = step.task
        event(f"{op} landed")
        flying = [t for t in items.values() if t.status == "in-progress"]
        for a, b in itertools.combinations(flying, 2):
            assert a.paths is MISSING or b.paths is MISSING or shared(a.paths, b.paths) is None, (a.id, b.id)
    q = queue(*items.values())
    for t, why in q.held_back(None, AT + _dt.timedelta(days=1)):  # what is held back says by whom
        assert why.by.status == "in-progress" and shared(t.paths, why.by.paths) == why.where


# -- failures: the cooldown, escalation ------------------------------------------
@pytest.mark.parametrize("how", ["fail", "release", "return"])
def test_a_task_that_came_back_cools_down_before_it_is_handed_out_again(how: str) -> None:
    from fleet.errors import NothingToDo
    from fleet.tasks import claim, fail, release, returned, sling

    cfg = replace(CFG, tasks=replace(CFG.tasks, retry_delay_seconds=300, max_failures=3))
    q = queue(task("a"))
    held = claim(q, cfg, AT, "ada").task
    back_at = AT + _dt.timedelta(seconds=10)
    q = queue(held)
    back = {"fail": lambda: fail(q, cfg, back_at, "a", held.fence, reason="red").task,
            "release": lambda: release(q, cfg, back_at, "a", held.fence).task,
            "return": lambda: returned(held, cfg, back_at, "lease ran out")[0]}[how]()
    assert (back.status, back.failures) == ("pending", 0 if how == "release" else 1)
    q = queue(back)
    with pytest.raises(NothingToDo, match="the next is ready at"):
        claim(q, cfg, back_at + _dt.timedelta(seconds=299), "ada")
    assert claim(q, cfg, back_at + _dt.timedelta(seconds=300), "basil").task.fence == 2
    slung = sling(q, back_at, "a", "basil")  # a person's sling hands it out at once
    assert slung.task.not_before is None and "cooldown" in (slung.message or "")
    assert claim(queue(slung.task), cfg, back_at, "basil").task.claimed_by == "basil"


def test_max_failures_escalates_and_reopen_takes_it_back() -> None:
    from fleet.tasks import claim, fail, reopen

    cfg = replace(CFG, tasks=replace(CFG.tasks, retry_delay_seconds=0, max_failures=2))
    t = task("a")
    for n in (1, 2):
        t = claim(queue(t), cfg, AT + _dt.timedelta(seconds=n - 1), "ada").task
        step = fail(queue(t), cfg, AT + _dt.timedelta(seconds=n), "a", t.fence, reason=f"red {n}")
        t = step.task
    assert (t.status, t.escalated, t.escalated_at) == ("failed", True, "2026-11-22T12:00:02.000Z")
    assert "escalated" in (step.message or "")
    assert "escalated_at" in t.to_json()
    t = reopen(queue(t), AT, "a").task
    assert (t.status, t.escalated, t.failures) == ("pending", False, 0) and "escalated_at" not in t.to_json()
