"""A worker with no agents at the worker count the fleet now runs with is not
dead: after a run with 3 workers, a run with 2 leaves w3 out of the plan, and
`fleet status` and `fleet watchdog` must not call it dead. A worker of the plan
that stops delivering still is."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Fleet, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.plan import assign, roster


def tick(fleet: Fleet, t: int, workers: int, silent: str | None = None) -> None:
    """Every agent's explicit empty delta, from the worker the plan gives it at ``workers``."""
    agents = roster(json.loads(fleet.read("state/config.json"))["agents"])
    bodies = [fleet.delta(a, tick=t, worker=w, meta={"noop": "resting"})
              for w, mine in assign(agents, workers).items() if w != silent for a in mine]
    fleet.push(*bodies)
    run(fleet, "merge")


def dead(fleet: Fleet) -> tuple[set[str], set[str], dict[str, Any]]:
    status = json.loads(run(fleet, "status", "--json").output)
    r = fleet.fleet("watchdog", "--json")
    assert r.exit_code in (0, 3), r.output  # 3: nothing changed
    marks = json.loads(r.output)
    return ({w["worker"] for w in status["workers"] if w["status"] == "dead"},
            {m["worker"] for m in marks["workers"] if m["status"] == "dead"}, status)


def test_a_worker_left_out_by_a_smaller_run_is_not_dead(fleet: Fleet) -> None:
    for t in (1, 2):
        tick(fleet, t, 3)
    assert fleet.fleet("watchdog").exit_code in (0, 3)
    for t in (3, 4, 5, 6):
        tick(fleet, t, 2)
    in_status, marked, status = dead(fleet)
    assert in_status == set() and marked == set()
    assert {w["worker"] for w in status["workers"]} == {"w1", "w2"}
    # and back to three workers: w3 delivers, as before
    tick(fleet, 7, 3)
    assert {w["worker"]: w["status"] for w in dead(fleet)[2]["workers"]} == {"w1": "alive", "w2": "alive",
                                                                              "w3": "alive"}


@pytest.mark.parametrize("workers", [2, 3])
def test_a_worker_of_the_plan_that_stops_delivering_is_still_dead(fleet: Fleet, workers: int) -> None:
    for t in (1, 2):
        tick(fleet, t, workers)
    for t in (3, 4, 5, 6):
        tick(fleet, t, workers, silent="w1")
    in_status, marked, _ = dead(fleet)
    assert in_status == {"w1"} and marked == {"w1"}
    assert fleet.fleet("watchdog").exit_code == 3  # marked once, not at every run
    tick(fleet, 7, workers)
    r = fleet.fleet("watchdog", "--json")
    assert json.loads(r.output)["workers"] == [{"worker": "w1", "status": "alive",
                                               "reason": "delivered tick 7 again (main is at tick 7)"}]


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(2, 5), st.integers(1, 4))
def test_any_smaller_run_leaves_the_workers_past_its_count_out(before: int, after: int) -> None:
    import tempfile
    from pathlib import Path

    from fleet.commands.init import init
    after = min(after, before - 1)
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        fleet = Fleet(Path(tmp) / "f")
        init(fleet.path)
        agents = roster(json.loads(fleet.read("state/config.json"))["agents"])
        tick(fleet, 1, before)
        for t in (2, 3, 4, 5):
            tick(fleet, t, after)
        in_status, marked, _ = dead(fleet)
        planned = {w for w, mine in assign(agents, after).items() if mine}
        assert in_status <= planned and marked <= planned
