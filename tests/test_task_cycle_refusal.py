"""A dependency cycle `fleet task add` refuses is named as every other bad task is: the
file and line (``F.jsonl:N``) of the task that closes it, the circle in one bounded
line (as `fleet task list`, status and claim show one), whatever its length; a cycle
already on the branch that a new task would wait for is named at that task's line."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet import config as config_mod
from fleet.errors import FleetError
from fleet.tasks import BRANCH, CYCLE_SHOWN, Queue, add, new_task, task_path
from tests.conftest import Fleet, run
from tests.test_task_defects import _waits_for

ROOT = Path(__file__).resolve().parents[1]
CFG = config_mod.parse((ROOT / "state/config.json").read_bytes())
AT = _dt.datetime(2026, 11, 22, 12, 0, tzinfo=_dt.UTC)
PREFIX = ": deps: a cycle would never be ready: "


def _cycles(graph: dict[str, list[str]]) -> set[str]:
    """The tasks on some cycle of ``graph``: those that wait for themselves, by walking every chain."""
    return {start for start in graph if start in _waits_for(graph, start)}


@st.composite
def batches(draw: st.DrawFn) -> tuple[dict[str, list[str]], list[tuple[str, list[str]]]]:
    """Tasks on the branch (no cycle among them: each waits only for ones below it) and a
    batch of new ones, each with deps on any task of either, in the file's order."""
    old = [f"o{i}" for i in range(draw(st.integers(0, 5)))]
    branch = {o: sorted(draw(st.sets(st.sampled_from(old[:i]), max_size=2))) if i else [] for i, o in enumerate(old)}
    new = [f"n{i}" for i in range(draw(st.integers(1, 14)))]
    every = old + new
    return branch, [(n, sorted(draw(st.sets(st.sampled_from(every), max_size=3)))) for n in new]


@settings(max_examples=400, deadline=None)
@given(case=batches())
def test_a_cycle_is_named_at_the_line_that_closes_it(case: tuple[dict[str, list[str]], list[tuple[str, list[str]]]]) -> None:
    branch, batch = case
    q = Queue("tip", {i: replace(new_task({"id": i, "title": i}, i, CFG, AT), deps=d) for i, d in branch.items()})
    lines = {n: k for k, (n, _) in enumerate(batch, 1)}
    graph = {**branch, **dict(batch)}
    on_cycle = _cycles(graph)
    try:
        add(q, CFG, AT, [({"id": n, "title": n, "deps": d}, f"F.jsonl:{lines[n]}") for n, d in batch])
    except FleetError as e:
        message = str(e)
    else:
        assert not on_cycle, graph
        return
    assert on_cycle, message
    where, _, ring = message.partition(PREFIX)
    assert ring and "\n" not in message, message
    shown, closer = ring.removesuffix(")").split(" (task ")
    closer = closer.removesuffix(" closes it")
    names = shown.split(" -> ")
    # the circle, each waiting for the next, round to where it began; its last step is the closer's dep
    assert names[0] == names[-1] and names[-2] == closer and len(names) <= CYCLE_SHOWN + 1, message
    assert all(b in graph[a] for a, b in zip(names, names[1:]) if "…" not in (a, b)), message
    # the line named is the closer's, and no new task on that circle comes after it in the file
    assert where == f"F.jsonl:{lines[closer]}", message
    if "…" not in names:
        assert max(lines[n] for n in names if n in lines) == lines[closer], message


def _file(tmp_path: Path, tasks: list[dict]) -> Path:
    f = tmp_path / "F.jsonl"
    f.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    return f


@pytest.mark.parametrize("n", [1, 2, 3, 3000])
def test_fleet_task_add_names_the_file_and_line_of_a_cycle_in_one_short_line(fleet: Fleet, tmp_path: Path,
                                                                          n: int) -> None:
    f = _file(tmp_path, [{"id": f"cy-{i}", "title": str(i), "deps": [f"cy-{(i + 1) % n}"]} for i in range(n)])
    r = run(fleet, "task", "add", "--file", str(f), code=1)
    ring = " -> ".join([f"cy-{i}" for i in range(n)] + ["cy-0"]) if n <= CYCLE_SHOWN else \
        " -> ".join([f"cy-{i}" for i in range(CYCLE_SHOWN - 2)] + ["…", f"cy-{n - 1}", "cy-0"])
    assert r.output.strip() == f"fleet: {f}:{n}{PREFIX}{ring} (task cy-{n - 1} closes it)"
    assert len(r.output) < 600
    assert fleet.git.rev_parse(f"refs/heads/{BRANCH}") is None  # all or nothing


def test_a_new_task_that_waits_for_a_cycle_on_the_branch_is_named_at_its_line(fleet: Fleet, tmp_path: Path) -> None:
    run(fleet, "task", "add", "--file", str(_file(tmp_path, [{"id": "ring-a", "title": "a"},
                                                            {"id": "ring-b", "title": "b", "deps": ["ring-a"]}])))
    old = fleet.git.rev_parse(f"refs/heads/{BRANCH}")
    assert old
    doc = json.loads(fleet.git.show(f"refs/heads/{BRANCH}", task_path("ring-a")) or b"")
    edit = {task_path("ring-a"): (json.dumps({**doc, "deps": ["ring-b"]}, indent=2, sort_keys=True) + "\n").encode()}
    assert fleet.git.update_ref(f"refs/heads/{BRANCH}", fleet.git.write_commit(old, "by hand\n", edit, []), old)
    f = _file(tmp_path, [{"id": "fine", "title": "fine"}, {"id": "waits", "title": "w", "deps": ["ring-b"]}])
    r = run(fleet, "task", "add", "--file", str(f), code=1)
    assert r.output.strip() == (f"fleet: {f}:2: deps: task waits would never be ready: it waits for a dependency "
                                f"cycle already on {BRANCH}, ring-b -> ring-a -> ring-b; break it first "
                                "(`fleet task list` marks it)")
