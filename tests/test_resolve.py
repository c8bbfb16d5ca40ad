"""A person's decisions on held conflicts: resolution files on main, and the
fallback for a pull request closed unmerged. The merge applies them; replay
reproduces them."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from conftest import Fleet

from fleet import canonical
from fleet.commands.merge import merge
from fleet.delta import Op
from fleet.resolve import fallback


def held(fleet: Fleet) -> dict[str, Any]:
    """Two agents... ada twice, from two workers, set her bio differently: held."""
    fleet.push(fleet.delta("ada", Op("set", "posts", "ada-1", ("title",), "First title"), worker="w1"),
               fleet.delta("ada", Op("set", "posts", "ada-1", ("title",), "Second title"), worker="w2"))
    r = fleet.fleet("merge", "--json")
    assert r.exit_code == 0, r.output
    [cid] = json.loads(r.output)["held"]
    return json.loads(fleet.read(f"state/conflicts/{cid}.json"))


def person_commits(fleet: Fleet, rel: str, body: Any) -> None:
    path = fleet.path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(canonical.dumps(body) if not isinstance(body, bytes) else body)
    subprocess.run(["git", "add", rel], cwd=fleet.path, check=True)
    subprocess.run(["git", "-c", "user.name=Person", "-c", "user.email=p@example.com", "commit", "-qm",
                    f"decide {rel}"], cwd=fleet.path, check=True)


def title(fleet: Fleet) -> str:
    return json.loads(fleet.read("state/posts/ada-1.json"))["title"]


@pytest.mark.parametrize("how", ["candidate", "base", "value"])
def test_a_merged_resolution_is_applied_by_the_next_merge(fleet: Fleet, how: str) -> None:
    c = held(fleet)
    before = title(fleet)
    assert before == c["base"] == "Every invariant deserves a test that can fail"
    second = [x for x in c["candidates"] if x["value"] == "Second title"][0]["delta"]
    decision = {"candidate": {"choose": second}, "base": {"choose": "base"},
                "value": {"value": "A title a person wrote"}}[how]
    person_commits(fleet, f"state/resolutions/{c['id']}.json", {"conflict": c["id"], "by": "PR #1", **decision})
    r = fleet.fleet("merge", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["resolved"] == [c["id"]]
    assert title(fleet) == {"candidate": "Second title", "base": before, "value": "A title a person wrote"}[how]
    files = fleet.git.ls_tree("refs/heads/main", "state/")
    assert f"state/conflicts/{c['id']}.json" not in files
    assert f"state/resolutions/{c['id']}.json" not in files
    doc = json.loads(fleet.read("state/fleet.json"))
    assert doc["open_conflicts"] == 0 and doc["last"]["resolved"] == 1 and doc["totals"]["resolved"] == 1
    assert "Fleet-Resolved: 1" in fleet.git.text("log", "-1", "--format=%B", "main")
    assert fleet.fleet("replay", "--check").exit_code == 0


def test_a_later_set_of_a_decided_field_applies_again(fleet: Fleet) -> None:
    c = held(fleet)
    person_commits(fleet, f"state/resolutions/{c['id']}.json", {"conflict": c["id"], "choose": "base"})
    assert fleet.fleet("merge").exit_code == 0  # tick 2: the decision only
    fleet.push(fleet.delta("ada", Op("set", "posts", "ada-1", ("title",), "After the decision"), tick=3))
    assert fleet.fleet("merge").exit_code == 0  # tick 3: the new set, no longer held
    assert title(fleet) == "After the decision"


def test_the_fallback_for_a_closed_pull_request_keeps_the_old_value_and_replays(fleet: Fleet) -> None:
    c = held(fleet)
    report = merge(fleet.path, outside=[fallback(c["id"], "PR #7 closed without merging")])
    assert report.resolved == [c["id"]]
    assert title(fleet) == c["base"]
    rec = fleet.read("state/ledger/2/_resolutions.jsonl").decode()
    assert "PR #7 closed" in rec and '"source":"fallback"' in rec
    replay = fleet.fleet("replay", "--check")
    assert replay.exit_code == 0, replay.output


def test_a_person_file_wins_over_a_fallback_for_the_same_conflict(fleet: Fleet) -> None:
    c = held(fleet)
    person_commits(fleet, f"state/resolutions/{c['id']}.json", {"conflict": c["id"], "value": "Mine"})
    merge(fleet.path, outside=[fallback(c["id"], "PR closed")])
    assert title(fleet) == "Mine"


@pytest.mark.parametrize("decision, rule", [
    ({"choose": "t9-w9-nobody"}, "is neither 'base' nor a candidate"),
    ({"value": ""}, "would make state/posts/ada-1.json invalid"),
    ({"value": "x", "extra": 1}, "schemas/resolution.schema.json"),
])
def test_a_bad_resolution_is_one_line_naming_the_file(fleet: Fleet, decision: dict[str, Any], rule: str) -> None:
    c = held(fleet)
    rel = f"state/resolutions/{c['id']}.json"
    person_commits(fleet, rel, {"conflict": c["id"], **decision})
    fleet.push(fleet.delta("basil", Op("set", "agents", "basil", ("bio",), "waiting"), tick=2))
    r = fleet.fleet("merge")
    assert r.exit_code == 1
    assert len(r.output.strip().splitlines()) == 1 and rule in r.output and "Traceback" not in r.output
    assert fleet.branches() == ["refs/heads/fleet/t2/w1"]  # the deltas wait for a fixed decision


def test_an_append_conflict_is_decided_by_its_item(fleet: Fleet) -> None:
    item = {"id": "m1", "text": "one", "tick": 1}
    fleet.push(fleet.delta("ada", Op("append", "agents", "ada", ("memory",), item), worker="w1"),
               fleet.delta("ada", Op("append", "agents", "ada", ("memory",), {**item, "text": "two"}), worker="w2"))
    r = fleet.fleet("merge", "--json")
    [cid] = json.loads(r.output)["held"]
    c = json.loads(fleet.read(f"state/conflicts/{cid}.json"))
    two = [x for x in c["candidates"] if x["value"]["text"] == "two"][0]["delta"]
    person_commits(fleet, f"state/resolutions/{cid}.json", {"conflict": cid, "choose": two})
    assert fleet.fleet("merge").exit_code == 0
    assert json.loads(fleet.read("state/agents/ada.json"))["memory"] == [{**item, "text": "two"}]
    assert fleet.fleet("replay", "--check").exit_code == 0


@pytest.mark.parametrize("entry, says", [
    ({"path": "state/conflicts/c-1.json", "expect": None, "doc": {"id": "c-1"}},
     "state/conflicts/c-1.json is no document of a collection"),
    ({"path": "state/posts/ada-1.json", "expect": "0" * 16, "doc": None}, "changed since `fleet revert` looked at it"),
    ({"path": "state/posts/ada-1.json", "expect": "{digest}", "doc": {"id": "ada-1"}}, "would be invalid"),
    ({"path": "state/posts/ada-1.json", "expect": "{digest}", "doc": {"id": "other"}}, "its 'id' must be 'ada-1'"),
])
def test_a_revert_file_by_hand_that_cannot_apply_is_refused_with_the_reason(fleet: Fleet, entry: dict[str, Any],
                                                                          says: str) -> None:
    """A revert file is a person's input like any other: the merge checks it, and
    one it cannot apply is refused, recorded with the reason, and removed; the
    tick goes on and nothing else changes."""
    doc = fleet.read("state/posts/ada-1.json")
    entry = {**entry, "expect": entry["expect"].replace("{digest}", canonical.digest_line(doc))
             if entry["expect"] else None}
    person_commits(fleet, "state/resolutions/revert-t1-w1-s1-x.json",
                   {"revert": "t1-w1-s1-x", "tick": 1, "docs": [entry], "by": "someone"})
    fleet.push(fleet.delta("basil", Op("set", "agents", "basil", ("bio",), "still here")))
    r = fleet.fleet("merge")
    assert r.exit_code == 0, r.output
    assert "revert of t1-w1-s1-x refused: " in r.output and says in r.output
    assert fleet.read("state/posts/ada-1.json") == doc
    rec = json.loads(fleet.read("state/ledger/1/_reverts.jsonl"))
    assert rec["status"] == "refused" and says in rec["reason"]
    assert json.loads(fleet.read("state/agents/basil.json"))["bio"] == "still here"
    assert fleet.fleet("replay", "--check").exit_code == 0
