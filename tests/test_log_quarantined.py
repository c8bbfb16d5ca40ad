"""`fleet log --delta ID` finds a delta quarantined before it was parsed (its
record has the file's path and raw bytes, no delta): `fleet status` lists it
and sends the reader there. And a delta applied, whose copy was quarantined
later, is shown with that copy."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Fleet, run
from test_hostile_input import TOKEN, raw_tree_branch

from fleet import canonical
from fleet.delta import Op, file_path


def body(f: Fleet, worker: str = "w1", tick: int = 1) -> dict[str, Any]:
    return f.delta("ada", Op("incr", "posts", "ada-1", ("score",), 1), tick=tick, worker=worker)


def bom(f: Fleet, b: dict[str, Any]) -> None:
    f.push_raw("w1", file_path(b), b"\xef\xbb\xbf" + canonical.dumps(b), tick=b["tick"])


def duplicate_key(f: Fleet, b: dict[str, Any]) -> None:
    f.push_raw("w1", file_path(b), canonical.dumps(b)[:-2] + b', "agent": "bo"}\n', tick=b["tick"])


def huge_number(f: Fleet, b: dict[str, Any]) -> None:
    f.push_raw("w1", file_path(b), canonical.dumps(b).replace(b'"tick": 1', b'"tick": ' + str(2**70).encode()))


def other_folder(f: Fleet, b: dict[str, Any]) -> None:
    b.update(body(f, worker="w2"))  # w2's delta in w1's folder
    f.push_raw("w1", f"deltas/w1/s1/{b['id']}.json", canonical.dumps(b))


def symlink(f: Fleet, b: dict[str, Any]) -> None:
    raw_tree_branch(f, "refs/heads/fleet/t1/w1", [(file_path(b).encode(), "120000", b"/proc/self/environ")])


def secret(f: Fleet, b: dict[str, Any]) -> None:
    b["ops"][0] = {"op": "set", "collection": "agents", "id": "ada", "path": ["bio"], "value": f"key {TOKEN}"}
    f.push_raw("w1", file_path(b), canonical.dumps(b))


@pytest.mark.parametrize("breaks, rule", [
    (bom, "byte-order mark"), (duplicate_key, "duplicate"), (huge_number, "64 bits"),
    (other_folder, "another worker's directory"), (symlink, "symbolic link"), (secret, "secret"),
])
def test_a_delta_quarantined_before_it_was_parsed_is_found_by_its_file_name(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch, breaks: Callable[[Fleet, dict[str, Any]], None],
        rule: str) -> None:
    b = body(fleet)
    breaks(fleet, b)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    run(fleet, "merge")
    quarantined = json.loads(run(fleet, "status", "--json").output)["recent_quarantine"]
    assert any(b["id"] in json.dumps(q) for q in quarantined)  # status lists it...
    f = json.loads(run(fleet, "log", "--delta", b["id"], "--json").output)  # ...and log finds it
    assert f["status"] == "quarantined" and f["tick"] == 1 and rule in f["reason"]
    assert b["id"] in run(fleet, "log", "--delta", b["id"]).output


def test_a_late_copy_quarantined_after_the_delta_applied_is_listed(fleet: Fleet) -> None:
    b = body(fleet)
    fleet.push(b)
    run(fleet, "merge")
    fleet.push_raw("w1", file_path(b), b"\xef\xbb\xbf" + canonical.dumps(b), tick=2)  # the copy again, broken
    run(fleet, "merge")
    f = json.loads(run(fleet, "log", "--delta", b["id"], "--json").output)
    assert f["status"] == "applied" and f["tick"] == 1
    [copy] = f["quarantined_copies"]
    assert copy["tick"] == 2 and "byte-order mark" in copy["reason"] and copy["path"] == file_path(b)
    text = run(fleet, "log", "--delta", b["id"]).output
    assert "APPLIED" in text and "quarantined in tick 2" in text and "byte-order mark" in text
