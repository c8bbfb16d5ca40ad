"""`fleet revert DELTA`: a compensating change applied at the next merge that
reverses exactly what the delta changed (checked by property against a fleet
where the delta never came), or a refusal naming the later deltas that built
on it; exactly-once and replay hold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import Fleet, run
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from fleet.commands.init import init
from fleet.delta import Op


def doc(fleet: Fleet, rel: str) -> Any:
    data = fleet.git.show("refs/heads/main", rel)
    return None if data is None else json.loads(data)


def merged(fleet: Fleet, *bodies: dict[str, Any]) -> None:
    fleet.push(*bodies)
    run(fleet, "merge", "--allow-empty")


def test_revert_a_counter_others_kept_incrementing(fleet: Fleet) -> None:
    d = fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 5))
    merged(fleet, d)
    merged(fleet, fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 2), tick=2))
    r = run(fleet, "revert", d["id"], "--json")
    out = json.loads(r.stdout)
    assert out["tick"] == 1 and [x["path"] for x in out["docs"]] == ["state/posts/ada-1.json"]
    assert doc(fleet, "state/posts/ada-1.json")["score"] == 7  # nothing changes before the merge
    m = run(fleet, "merge")
    assert f"reverted: {d['id']}" in m.stdout
    assert doc(fleet, "state/posts/ada-1.json")["score"] == 2  # cleo's +2 stays
    assert json.loads(fleet.read("state/ledger/3/_reverts.jsonl"))["status"] == "applied"
    run(fleet, "replay", "--check")
    # exactly once: asked again, it is refused
    r = run(fleet, "revert", d["id"], code=1)
    assert r.output.strip() == f"fleet: {d['id']}: already reverted, in tick 3"


def test_a_create_that_others_built_on_is_refused_naming_them(fleet: Fleet) -> None:
    post = {**json.loads(fleet.read("state/posts/ada-1.json")), "id": "ada-9", "score": 0, "tick": 1}
    d = fleet.delta("ada", Op("create", "posts", "ada-9", (), post))
    merged(fleet, d)
    later = fleet.delta("eli", Op("incr", "posts", "ada-9", ("score",), 1), tick=2)
    merged(fleet, later)
    head = fleet.main()
    r = run(fleet, "revert", d["id"], code=1)
    assert len(r.output.strip().splitlines()) == 1
    assert f"later changes built on it: posts/ada-9 the document: delta {later['id']} (eli, tick 2)" in r.output
    assert fleet.main() == head


def test_a_create_nobody_touched_is_removed(fleet: Fleet) -> None:
    post = {**json.loads(fleet.read("state/posts/ada-1.json")), "id": "ada-9", "score": 0, "tick": 1}
    d = fleet.delta("ada", Op("create", "posts", "ada-9", (), post), Op("incr", "agents", "ada", ("karma",), 1))
    merged(fleet, d)
    run(fleet, "revert", d["id"])
    run(fleet, "merge")
    assert doc(fleet, "state/posts/ada-9.json") is None
    assert doc(fleet, "state/agents/ada.json") == json.loads(fleet.git.show("main~3", "state/agents/ada.json"))
    run(fleet, "replay", "--check")


def test_a_field_set_again_later_is_refused(fleet: Fleet) -> None:
    d = fleet.delta("ada", Op("set", "agents", "ada", ("bio",), "one"))
    merged(fleet, d)
    later = fleet.delta("ada", Op("set", "agents", "ada", ("bio",), "two"), tick=2)
    merged(fleet, later)
    r = run(fleet, "revert", d["id"], code=1)
    assert f"agents/ada bio: delta {later['id']} (ada, tick 2)" in r.output


def test_the_next_ticks_deltas_apply_after_the_revert(fleet: Fleet) -> None:
    d = fleet.delta("ada", Op("set", "agents", "ada", ("bio",), "one"))
    merged(fleet, d)
    run(fleet, "revert", d["id"])
    # the next tick's own deltas come after the revert: the bio is set again in the same merge
    merged(fleet, fleet.delta("ada", Op("set", "agents", "ada", ("bio",), "two"), tick=2))
    assert doc(fleet, "state/agents/ada.json")["bio"] == "two"
    run(fleet, "replay", "--check")


def test_a_revert_whose_document_moved_before_the_merge_is_refused_by_the_merge(fleet: Fleet) -> None:
    import subprocess

    from fleet import canonical

    d = fleet.delta("ada", Op("set", "agents", "ada", ("bio",), "one"))
    merged(fleet, d)
    run(fleet, "revert", d["id"])
    edited = {**doc(fleet, "state/agents/ada.json"), "bio": "by hand"}
    (fleet.path / "state/agents/ada.json").write_bytes(canonical.dumps(edited))
    subprocess.run(["git", "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qam", "edit"], cwd=fleet.path,
                   check=True)
    m = run(fleet, "merge")
    assert f"revert of {d['id']} refused: state/agents/ada.json changed since `fleet revert` looked at it" in m.stdout
    assert doc(fleet, "state/agents/ada.json")["bio"] == "by hand"
    rec = json.loads(fleet.read("state/ledger/2/_reverts.jsonl"))
    assert rec["status"] == "refused" and "state/resolutions/revert-" not in "".join(
        fleet.git.ls_tree("refs/heads/main", "state/"))
    run(fleet, "replay", "--check")


def test_an_item_appended_again_later_is_refused_naming_that_delta(fleet: Fleet) -> None:
    # the later append changed nothing on main (the item was there), but without the delta it
    # would have appended it: main's state alone cannot tell, so the revert must look at the ops
    item = {"id": "m1", "text": "note 1", "tick": 1}
    d = fleet.delta("basil", Op("append", "agents", "basil", ("memory",), item))
    merged(fleet, d)
    later = fleet.delta("basil", Op("append", "agents", "basil", ("memory",), item), tick=2)
    merged(fleet, later)
    r = run(fleet, "revert", d["id"], code=1)
    assert f"agents/basil memory.m1: delta {later['id']} (basil, tick 2)" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_a_member_added_again_later_stays_after_the_revert(fleet: Fleet) -> None:
    tags = doc(fleet, "state/posts/ada-1.json")["tags"]
    d = fleet.delta("ada", Op("add", "posts", "ada-1", ("tags",), "t9"), Op("incr", "agents", "ada", ("karma",), 1))
    merged(fleet, d)
    merged(fleet, fleet.delta("ada", Op("add", "posts", "ada-1", ("tags",), "t9"), tick=2))
    karma = doc(fleet, "state/agents/ada.json")["karma"]
    run(fleet, "revert", d["id"])
    run(fleet, "merge")
    assert doc(fleet, "state/posts/ada-1.json")["tags"] == sorted({*tags, "t9"})  # tick 2 adds it without d too
    assert doc(fleet, "state/agents/ada.json")["karma"] == karma - 1
    run(fleet, "replay", "--check")


@pytest.mark.parametrize("first, again", [
    (Op("set", "agents", "ada", ("bio",), "one"), Op("set", "agents", "ada", ("bio",), "one")),
    (Op("incr", "agents", "ada", ("karma",), 2), Op("set", "agents", "ada", ("karma",), 5)),
])
def test_a_field_set_later_is_refused_even_to_the_value_main_has(fleet: Fleet, first: Op, again: Op) -> None:
    d = fleet.delta("ada", first)
    merged(fleet, d)
    later = fleet.delta("ada", again, tick=2)
    merged(fleet, later)
    r = run(fleet, "revert", d["id"], code=1)
    assert f"agents/ada {first.path[0]}: delta {later['id']} (ada, tick 2)" in r.output


@pytest.mark.parametrize("what, says", [
    ("t9-w9-nothing", "t9-w9-nothing: no delta with this id in the fleet's history"),
    ("../x", "../x: not a delta id"),
])
def test_unknown_deltas_are_one_line(fleet: Fleet, what: str, says: str) -> None:
    r = run(fleet, "revert", what, code=1)
    assert r.output.strip().startswith(f"fleet: {says}") and len(r.output.strip().splitlines()) == 1


def test_quarantined_held_noop_and_pending_deltas_are_refused_with_the_reason(fleet: Fleet) -> None:
    bad = fleet.delta("nobody", Op("incr", "posts", "ada-1", ("score",), 1), worker="w3")
    noop = fleet.delta("dara", meta={"noop": "nothing to say"}, worker="w4")
    a = fleet.delta("ada", Op("set", "posts", "ada-1", ("channel",), "general"), worker="w1")
    b = fleet.delta("ada", Op("set", "posts", "ada-1", ("channel",), "ideas"), worker="w2")
    merged(fleet, bad, noop, a, b)
    assert "was quarantined in tick 1" in run(fleet, "revert", bad["id"], code=1).output
    assert "an explicit empty delta (no-op)" in run(fleet, "revert", noop["id"], code=1).output
    r = run(fleet, "revert", a["id"], code=1)
    assert "is held in conflict c-" in r.output and "fleet resolve c-" in r.output
    waiting = fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1), tick=2)
    fleet.push(waiting)
    assert "not merged yet" in run(fleet, "revert", waiting["id"], code=1).output


# -- the property: revert == the delta never came ------------------------------------------
AGENTS = ["ada", "basil", "cleo"]


def op_for(kind: str, agent: str, n: int) -> Op:
    if kind == "score":
        return Op("incr", "posts", "ada-1", ("score",), n)
    if kind == "karma":
        return Op("incr", "agents", agent, ("karma",), n)
    if kind == "bio":
        return Op("set", "agents", agent, ("bio",), f"bio {n}")
    if kind in ("tag", "untag") and agent in ("ada", "cleo"):  # on their own posts (basil may not: quarantined)
        return Op("add" if kind == "tag" else "remove", "posts", f"{agent}-1", ("tags",), f"t{n}")
    return Op("append", "agents", agent, ("memory",), {"id": f"m{n}", "text": f"note {n}", "tick": 1})


delta_st = st.tuples(st.sampled_from(AGENTS),
                     st.lists(st.tuples(st.sampled_from(["score", "karma", "bio", "tag", "untag", "memory"]),
                                        st.integers(1, 4)), min_size=1, max_size=3))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tpl") / "fleet"
    init(path)
    return path


def copy(template: Path, where: Path) -> Fleet:
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(template, where, symlinks=True)
    return Fleet(where)


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # shrinking whole fleets takes many minutes
@given(ticks=st.lists(st.lists(delta_st, min_size=1, max_size=3), min_size=1, max_size=3), data=st.data())
def test_revert_equals_never_came_or_names_what_built_on_it(template: Path, tmp_path: Path, ticks: Any,
                                                            data: Any) -> None:
    a, b = copy(template, tmp_path / "a"), copy(template, tmp_path / "b")
    bodies: list[list[dict[str, Any]]] = []
    for t, deltas in enumerate(ticks, start=1):
        seen: set[tuple[str, str]] = set()
        tick_bodies = []
        for i, (agent, ops) in enumerate(deltas):
            body = a.delta(agent, *[op_for(k, agent, n) for k, n in ops], tick=t, worker=f"w{i + 1}",
                           utc=f"2026-11-22T10:0{t}:0{i}.000000Z")
            if body["ops"] and (agent, body["worker"]) not in seen:
                seen.add((agent, body["worker"]))
                tick_bodies.append(body)
        bodies.append(tick_bodies)
    flat = [x for tb in bodies for x in tb]
    target = data.draw(st.sampled_from(flat))
    for tb in bodies:
        merged(a, *tb)
        rest = [x for x in tb if x["id"] != target["id"]]
        merged(b, *rest)
    touched = sorted({f"state/{o['collection']}/{o['id']}.json" for o in target["ops"]})
    before = {p: doc(a, p) for p in touched}
    r = a.fleet("revert", target["id"])
    assert "Traceback" not in r.output
    event("reverted" if r.exit_code == 0 else "refused: " + r.output.split(": ", 2)[-1][:30])
    if r.exit_code == 0:
        run(a, "merge")
        for p in touched:
            assert doc(a, p) == doc(b, p), (p, before[p])
        run(a, "replay", "--check")
    else:
        assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
        others = {x["id"] for x in flat if x["id"] != target["id"]}
        named = {i for i in others if i in r.output}
        nothing = ("would change nothing", "was quarantined", "explicit empty delta")
        assert named or "conflict c-" in r.output or any(n in r.output for n in nothing), r.output
        if any(n in r.output for n in nothing):  # it changed nothing: both worlds agree already
            assert all(doc(a, p) == doc(b, p) for p in touched)


def test_revert_asked_again_before_the_merge_commits_nothing_and_says_so(fleet: Fleet) -> None:
    before = doc(fleet, "state/posts/ada-1.json").get("score")
    d = fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 5))
    merged(fleet, d)
    first = json.loads(run(fleet, "revert", d["id"], "--json").stdout)
    head = fleet.main()
    assert first["already"] is False and first["commit"] == head
    for _ in range(2):
        r = run(fleet, "revert", d["id"])
        assert r.stdout.strip() == (f"already recorded: state/resolutions/revert-{d['id']}.json on the fleet's main "
                                    f"(commit {head[:12]}) reverts {d['id']}; nothing to do")
        assert fleet.main() == head  # no second, empty commit
    again = json.loads(run(fleet, "revert", d["id"], "--json").stdout)
    assert again["already"] is True and again["commit"] == head
    run(fleet, "merge")
    assert doc(fleet, "state/posts/ada-1.json").get("score") == before  # reverted once
    run(fleet, "replay", "--check")
