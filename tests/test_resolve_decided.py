"""`fleet resolve` on a conflict a merge already decided says so: in which tick
and how, read from the decision records, not "no open conflict"."""

from __future__ import annotations

import json

import pytest
from conftest import Fleet, run
from test_resolve import held

from fleet.state import LEDGER_DIR


@pytest.mark.parametrize("how", [("--choose", "base"), ("--choose", "first"), ("--value", '"by hand"')])
def test_a_decided_conflict_is_named_decided_with_its_tick_and_how(fleet: Fleet, how: tuple[str, str]) -> None:
    c = held(fleet)
    flag, arg = how
    if arg == "first":
        arg = c["candidates"][0]["delta"]
    run(fleet, "resolve", c["id"], flag, arg)
    run(fleet, "merge", "--allow-empty")
    tick = json.loads(fleet.read("state/fleet.json"))["tick"]
    assert fleet.git.show("refs/heads/main", f"{LEDGER_DIR}/{tick}/_resolutions.jsonl")
    r = run(fleet, "resolve", c["id"], "--choose", "base", code=1)
    [line] = r.output.strip().splitlines()
    assert f"{c['id']}: already decided, in tick {tick} (a decision: " in line
    assert (f"chose {arg}" if flag == "--choose" else 'set the value "by hand"') in line
    assert "no open conflict with this id" not in line


def test_an_unknown_conflict_is_still_named_unknown(fleet: Fleet) -> None:
    held(fleet)
    r = run(fleet, "resolve", "c-" + "0" * 16, "--choose", "base", code=1)
    assert "no open conflict with this id" in r.output
