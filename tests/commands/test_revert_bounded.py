"""A revert refused because many later changes built on the delta names a
person's commit first, then at most a few deltas and how many more: one short
line, not thousands of ids with the real blocker last."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from conftest import Fleet, run

from fleet.delta import Op
from fleet.revert import LATER_SHOWN


@pytest.mark.parametrize("later, by_hand", [(3, False), (3, True), (LATER_SHOWN, True), (40, False), (40, True)])
def test_a_refusal_names_a_persons_commit_first_and_a_bounded_number_of_deltas(
        fleet: Fleet, later: int, by_hand: bool) -> None:
    post = {**json.loads(fleet.read("state/posts/ada-1.json")), "id": "ada-9", "score": 0, "tick": 1}
    d = fleet.delta("ada", Op("create", "posts", "ada-9", (), post))
    fleet.push(d)
    run(fleet, "merge")
    built = [fleet.delta("eli", Op("incr", "posts", "ada-9", ("score",), 1), tick=2, worker=f"w{i}")
             for i in range(later)]
    fleet.push(*built)
    run(fleet, "merge")
    if by_hand:  # a person deletes the document on main
        subprocess.run(["git", "rm", "-q", "state/posts/ada-9.json"], cwd=fleet.path, check=True)
        subprocess.run(["git", "-c", "user.name=Pat", "-c", "user.email=pat@example.com", "commit", "-qm",
                        "drop ada-9"], cwd=fleet.path, check=True)
    r = run(fleet, "revert", d["id"], code=1)
    [line] = r.output.strip().splitlines()
    named = re.findall(r"delta (t2-\S+) \(eli, tick 2\)", line)
    person = line.find("by Pat <pat@example.com>")
    assert (person >= 0) == by_hand
    if by_hand:
        assert person < line.find("delta t2-")  # the person's commit first
    shown = LATER_SHOWN - by_hand
    assert set(named) <= {b["id"] for b in built}
    assert len(named) == min(later, shown)
    more = later - len(named)
    if more:
        assert line.endswith(f"and {more} more (`fleet log posts/ada-9` lists them)")
    else:
        assert "more" not in line
    assert len(line) < 2000
