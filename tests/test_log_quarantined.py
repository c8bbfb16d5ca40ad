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
from hypothesis import given
from hypothesis import strategies as st
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


@pytest.mark.parametrize("breaks", [bom, duplicate_key, other_folder, symlink])
def test_a_delta_is_found_by_its_id_its_file_name_and_the_path_the_merge_names(
        fleet: Fleet, breaks: Callable[[Fleet, dict[str, Any]], None]) -> None:
    """`fleet log --delta` takes what the merge and status print: the id, ``ID.json``, and
    ``deltas/WORKER/STREAM/ID.json`` (or an inbox's path ending so); all tell the same fate."""
    b = body(fleet)
    breaks(fleet, b)
    merged = run(fleet, "merge").output
    [where] = [q["path"] for q in json.loads(run(fleet, "status", "--json").output)["recent_quarantine"]]
    assert f"quarantined {where} " in merged  # the path the merge prints
    fate = json.loads(run(fleet, "log", "--delta", b["id"], "--json").output)
    for named in (f"{b['id']}.json", where, f"/tmp/inbox/{where}"):
        assert json.loads(run(fleet, "log", "--delta", named, "--json").output) == fate, named
    # a path it did not come in at is refused, naming the one it did; a path that is no file's, too
    wrong = where.replace("deltas/w1/", "deltas/w7/")
    r = run(fleet, "log", "--delta", wrong, code=1)
    assert r.output.strip() == (f"fleet: {wrong}: no delta came in at that path; delta {b['id']} came in at "
                                f"{where} (`fleet log --delta {b['id']}`)")
    assert "not a delta id" in run(fleet, "log", "--delta", where.removesuffix(".json"), code=1).output


def test_an_applied_and_a_pending_delta_are_found_by_their_paths(fleet: Fleet) -> None:
    b = body(fleet)
    fleet.push(b)
    run(fleet, "merge")
    assert json.loads(run(fleet, "log", "--delta", file_path(b), "--json").output)["status"] == "applied"
    later = body(fleet, tick=2)
    fleet.push(later)
    for named in (later["id"], f"{later['id']}.json", file_path(later)):
        f = json.loads(run(fleet, "log", "--delta", named, "--json").output)
        assert (f["status"], f["delta"], f["path"]) == ("pending", later["id"], file_path(later)), named
    assert run(fleet, "log", "--delta", file_path(later).replace("/w1/", "/w2/"), code=1)


@given(st.from_regex(r"t[0-9]{1,3}-w[0-9]-s[0-9]-[A-Za-z0-9_.-]{0,20}[A-Za-z0-9_-]", fullmatch=True).filter(
    lambda i: ".." not in i))
def test_every_form_names_the_same_delta(delta_id: str) -> None:
    """Whatever the id (one may even end in ``.json``), its file's name and its path name it."""
    from fleet.commands.log import delta_named

    assert delta_named(delta_id) == ([delta_id], None)
    for form in (f"{delta_id}.json", f"deltas/w1/s1/{delta_id}.json", f"/inbox/deltas/w1/s1/{delta_id}.json"):
        ids, where = delta_named(form)
        assert ids[0] == delta_id or (delta_id.endswith(".json") and delta_id in ids), form
        assert where == (form if "/" in form else None)
