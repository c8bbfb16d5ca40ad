"""The merge engine one op and one rule at a time, in memory.

Every test starts from the example world of `fleet init`, read into a
MemorySnapshot, merges a few deltas with ``merge_tick`` and looks at the files
the tick would commit. No git is involved: the engine is a pure function.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest

from fleet import canonical, schemas
from fleet.commands.init import init
from fleet.delta import Arrival, Op, file_path, make
from fleet.engine import TickResult, conflict_id, merge_tick, replay_tick
from fleet.state import MemorySnapshot

_seq = itertools.count(1)


# -- the world and how to talk to it ---------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """state/ and schemas/ of a fresh `fleet init`, as path -> bytes."""
    root = tmp_path_factory.mktemp("world") / "fleet"
    init(root)
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for top in ("state", "schemas")
        for p in sorted((root / top).rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def base(world: dict[str, bytes]) -> MemorySnapshot:
    return MemorySnapshot(world)


def edit(files: dict[str, bytes], path: str, change: Callable[[Any], None]) -> MemorySnapshot:
    """A snapshot whose JSON file ``path`` went through ``change``."""
    files = dict(files)
    obj = json.loads(files[path])
    change(obj)
    files[path] = canonical.dumps(obj)
    return MemorySnapshot(files)


def with_policy(files: dict[str, bytes], key: str, policy: str) -> MemorySnapshot:
    return edit(files, "state/config.json", lambda c: c["policies"].__setitem__(key, policy))


def _path(dotted: str) -> tuple[str, ...]:
    return tuple(dotted.split("."))


def create(coll: str, doc_id: str, doc: dict[str, Any]) -> Op:
    return Op("create", coll, doc_id, (), doc)


def set_(coll: str, doc_id: str, path: str, value: Any) -> Op:
    return Op("set", coll, doc_id, _path(path), value)


def incr(coll: str, doc_id: str, path: str, by: Any = 1) -> Op:
    return Op("incr", coll, doc_id, _path(path), by)


def add(coll: str, doc_id: str, path: str, value: Any) -> Op:
    return Op("add", coll, doc_id, _path(path), value)


def remove(coll: str, doc_id: str, path: str, value: Any) -> Op:
    return Op("remove", coll, doc_id, _path(path), value)


def append(coll: str, doc_id: str, path: str, item: dict[str, Any]) -> Op:
    return Op("append", coll, doc_id, _path(path), item)


def delete(coll: str, doc_id: str) -> Op:
    return Op("delete", coll, doc_id)


def delta(agent: str, *ops: Op, tick: int = 1, worker: str = "w1", stream: str | None = None,
          meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A delta body; each new one sorts after the previous ones in its tick (utc)."""
    n = next(_seq)
    stream = stream or f"s-{agent}"
    if meta is None:
        meta = {} if ops else {"noop": "nothing to do"}
    return make(tick=tick, worker=worker, stream=stream, agent=agent, ops=list(ops), meta=meta,
                utc=f"2026-05-01T12:00:00.{n:06d}Z", delta_id=f"t{tick}-{worker}-{stream}-{n:06d}")


def arrival(body: dict[str, Any], source: str | None = None) -> Arrival:
    return Arrival(source or f"refs/heads/fleet/t{body['tick']}/{body['worker']}", file_path(body), canonical.dumps(body))


def merge(snap: MemorySnapshot, *items: dict[str, Any] | Arrival) -> TickResult:
    return merge_tick(snap, [i if isinstance(i, Arrival) else arrival(i) for i in items])


def after(snap: MemorySnapshot, result: TickResult) -> MemorySnapshot:
    return snap.after(result.writes, result.deletes)


def read(snap: MemorySnapshot, coll: str, doc_id: str) -> Any:
    data = snap.read(snap.config.collections[coll].doc_path(doc_id))
    return None if data is None else json.loads(data)


def applied(result: TickResult) -> list[str]:
    return [d.id for d in result.applied]


def refused(result: TickResult) -> dict[str, str]:
    """Quarantined delta id (or file path, when unparseable) -> reason."""
    return {(q["delta"]["id"] if "delta" in q else q["path"]): q["reason"] for q in result.quarantined}


def fleet_doc(snap: MemorySnapshot) -> dict[str, Any]:
    return json.loads(snap.read("state/fleet.json"))


def conflict(snap: MemorySnapshot, coll: str, doc_id: str, path: str) -> dict[str, Any] | None:
    data = snap.read(f"state/conflicts/{conflict_id(coll, doc_id, _path(path))}.json")
    return None if data is None else json.loads(data)


def assert_valid_conflicts(snap: MemorySnapshot) -> None:
    for p in snap.under("state/conflicts"):
        body = json.loads(snap.read(p))
        assert schemas.first_error(schemas.protocol("conflict"), body) is None, (p, body)


COMMENT = {"id": "eli-2", "post": "ada-1", "author": "eli", "body": "Numbers, please."}


# -- create ----------------------------------------------------------------------


def test_create_writes_a_canonical_document(base: MemorySnapshot) -> None:
    d = delta("eli", create("comments", "eli-2", COMMENT))
    r = merge(base, d)
    assert applied(r) == [d["id"]] and not r.quarantined
    assert r.writes["state/comments/eli-2.json"] == canonical.dumps(COMMENT)
    assert read(after(base, r), "comments", "eli-2") == COMMENT


def test_create_of_an_existing_document_is_quarantined(base: MemorySnapshot) -> None:
    before = read(base, "comments", "eli-1")
    d = delta("eli", create("comments", "eli-1", {**before, "body": "rewritten"}))
    r = merge(base, d)
    assert "already exists" in refused(r)[d["id"]]
    assert "state/comments/eli-1.json" not in r.writes
    assert read(after(base, r), "comments", "eli-1") == before


def test_two_identical_creates_of_one_id_both_apply(base: MemorySnapshot) -> None:
    a = delta("eli", create("comments", "eli-2", COMMENT), stream="one")
    b = delta("eli", create("comments", "eli-2", COMMENT), stream="two")
    r = merge(base, b, a)
    assert applied(r) == [a["id"], b["id"]] and not r.quarantined
    assert read(after(base, r), "comments", "eli-2") == COMMENT


def test_two_different_creates_of_one_id_first_in_delta_order_stands(base: MemorySnapshot) -> None:
    first = delta("eli", create("comments", "eli-2", COMMENT), stream="one")
    second = delta("eli", create("comments", "eli-2", {**COMMENT, "body": "Other words."}), stream="two")
    r = merge(base, second, first)
    assert applied(r) == [first["id"]]
    assert f"already created in this tick by delta {first['id']}" in refused(r)[second["id"]]
    assert read(after(base, r), "comments", "eli-2") == COMMENT


def test_create_whose_doc_id_differs_is_quarantined(base: MemorySnapshot) -> None:
    d = delta("eli", create("comments", "eli-2", {**COMMENT, "id": "eli-3"}))
    r = merge(base, d)
    assert "'id' must be 'eli-2'" in refused(r)[d["id"]]
    assert not any(p.startswith("state/comments/") for p in r.writes)


def test_create_of_a_document_owned_by_another_agent_is_quarantined(base: MemorySnapshot) -> None:
    d = delta("basil", create("comments", "eli-2", COMMENT))  # author: eli
    r = merge(base, d)
    assert "agent basil may not create comments/eli-2 (owner: eli" in refused(r)[d["id"]]
    assert read(after(base, r), "comments", "eli-2") is None


@pytest.mark.parametrize("intruder_first", [True, False])
def test_identical_create_by_an_unauthorised_agent_is_refused_in_any_order(
    base: MemorySnapshot, intruder_first: bool
) -> None:
    """Authority holds for every create, not only the first one in the tick."""
    if intruder_first:
        intruder, owner = delta("basil", create("comments", "eli-2", COMMENT)), delta("eli", create("comments", "eli-2", COMMENT))
    else:
        owner, intruder = delta("eli", create("comments", "eli-2", COMMENT)), delta("basil", create("comments", "eli-2", COMMENT))
    assert (intruder["utc"] < owner["utc"]) == intruder_first
    r = merge(base, owner, intruder)
    assert applied(r) == [owner["id"]]
    assert "agent basil may not create comments/eli-2" in refused(r)[intruder["id"]]
    assert read(after(base, r), "comments", "eli-2") == COMMENT


@pytest.mark.parametrize("blocker", ["intruder", "invalid"])
def test_a_refused_create_does_not_block_a_later_one(base: MemorySnapshot, blocker: str) -> None:
    if blocker == "intruder":  # basil may not create a comment authored by eli
        first = delta("basil", create("comments", "eli-2", {**COMMENT, "body": "spam"}))
    else:  # eli's own, but an empty body breaks the comment schema
        first = delta("eli", create("comments", "eli-2", {**COMMENT, "body": ""}), stream="one")
    later = delta("eli", create("comments", "eli-2", COMMENT))
    r = merge(base, later, first)
    assert applied(r) == [later["id"]], refused(r)
    assert "already created" not in refused(r)[first["id"]]
    assert read(after(base, r), "comments", "eli-2") == COMMENT


def test_one_delta_creating_one_document_twice_differently_is_quarantined(base: MemorySnapshot) -> None:
    d = delta("eli", create("comments", "eli-2", COMMENT), create("comments", "eli-2", {**COMMENT, "body": "Other."}))
    r = merge(base, d)
    assert "creates it twice, with different content" in refused(r)[d["id"]]
    assert read(after(base, r), "comments", "eli-2") is None


# -- set ---------------------------------------------------------------------------


def test_set_by_a_single_writer_applies(base: MemorySnapshot) -> None:
    d = delta("cleo", set_("posts", "cleo-1", "title", "Git, 1975"))
    r = merge(base, d)
    assert applied(r) == [d["id"]] and not r.held
    assert read(after(base, r), "posts", "cleo-1")["title"] == "Git, 1975"


def test_two_writers_of_the_same_value_agree(base: MemorySnapshot) -> None:
    a = delta("ada", set_("posts", "cleo-1", "tags", ["unix"]))
    b = delta("cleo", set_("posts", "cleo-1", "tags", ["unix"]))
    r = merge(base, a, b)
    assert applied(r) == [a["id"], b["id"]] and not r.held
    assert read(after(base, r), "posts", "cleo-1")["tags"] == ["unix"]


def _tags_duel(snap: MemorySnapshot, first: str = "ada", second: str = "cleo") -> tuple[TickResult, MemorySnapshot]:
    """Two agents set posts/cleo-1 tags to different values in one tick (arriving in reverse)."""
    a = delta(first, set_("posts", "cleo-1", "tags", [first]))
    b = delta(second, set_("posts", "cleo-1", "tags", [second]))
    r = merge(snap, b, a)
    assert applied(r) == [a["id"], b["id"]], r.quarantined
    return r, after(snap, r)


def test_policy_hold_keeps_the_value_and_holds_a_conflict(world: dict[str, bytes]) -> None:
    r, s = _tags_duel(MemorySnapshot(world))
    assert r.held == [conflict_id("posts", "cleo-1", ("tags",))]
    assert read(s, "posts", "cleo-1")["tags"] == ["history"]
    assert conflict(s, "posts", "cleo-1", "tags")["policy"] == "hold"


def test_policy_lww_takes_the_last_delta_in_order(world: dict[str, bytes]) -> None:
    r, s = _tags_duel(with_policy(world, "posts/tags", "lww"))
    assert not r.held
    assert read(s, "posts", "cleo-1")["tags"] == ["cleo"]  # cleo's delta is the later one


def test_policy_priority_takes_the_highest_priority_agent(world: dict[str, bytes]) -> None:
    r, s = _tags_duel(with_policy(world, "posts/tags", "priority"), first="cleo", second="ada")
    assert not r.held
    assert read(s, "posts", "cleo-1")["tags"] == ["ada"]  # ada has priority 1, cleo 0


def test_policy_priority_tie_is_held(world: dict[str, bytes]) -> None:
    snap = with_policy(world, "posts/tags", "priority")
    snap = edit(snap.files, "state/config.json", lambda c: c["agents"]["cleo"].__setitem__("priority", 1))
    r, s = _tags_duel(snap)
    assert r.held
    assert read(s, "posts", "cleo-1")["tags"] == ["history"]
    assert "tie at priority 1" in conflict(s, "posts", "cleo-1", "tags")["reason"]


def test_policy_authority_takes_the_owners_value(world: dict[str, bytes]) -> None:
    r, s = _tags_duel(with_policy(world, "posts/tags", "authority"), first="cleo", second="ada")
    assert not r.held
    assert read(s, "posts", "cleo-1")["tags"] == ["cleo"]  # cleo owns cleo-1


def test_policy_authority_without_the_owner_is_held(world: dict[str, bytes]) -> None:
    snap = with_policy(world, "posts/tags", "authority")
    snap = edit(snap.files, "state/config.json",
                lambda c: c["agents"]["basil"].__setitem__("grants", {"posts": ["set:tags"]}))
    r, s = _tags_duel(snap, first="ada", second="basil")
    assert r.held
    assert read(s, "posts", "cleo-1")["tags"] == ["history"]
    assert "did not write" in conflict(s, "posts", "cleo-1", "tags")["reason"]


def test_policy_authority_owner_with_two_values_is_held(base: MemorySnapshot) -> None:
    a = delta("ada", set_("agents", "ada", "bio", "one"), stream="one")
    b = delta("ada", set_("agents", "ada", "bio", "two"), stream="two")
    r = merge(base, a, b)
    s = after(base, r)
    assert r.held and read(s, "agents", "ada")["bio"] == ""
    c = conflict(s, "agents", "ada", "bio")
    assert c["policy"] == "authority" and "set several values" in c["reason"]


def test_within_one_delta_the_last_set_of_a_field_counts(base: MemorySnapshot) -> None:
    d = delta("ada", set_("agents", "ada", "bio", "draft"), set_("agents", "ada", "bio", "final"))
    r = merge(base, d)
    assert applied(r) == [d["id"]] and not r.held
    assert read(after(base, r), "agents", "ada")["bio"] == "final"


# -- incr ------------------------------------------------------------------------


def test_incr_from_several_deltas_adds_up(base: MemorySnapshot) -> None:
    ds = [delta("basil", incr("posts", "ada-1", "score", 2)), delta("cleo", incr("posts", "ada-1", "score", 5)),
          delta("fen", incr("posts", "ada-1", "score", -3), incr("posts", "ada-1", "score", 1))]
    r = merge(base, *ds)
    assert len(r.applied) == 3
    assert read(after(base, r), "posts", "ada-1")["score"] == 5


def test_incr_of_a_missing_field_counts_from_zero(world: dict[str, bytes]) -> None:
    snap = edit(world, "state/posts/ada-1.json", lambda d: d.pop("score"))
    r = merge(snap, delta("basil", incr("posts", "ada-1", "score", 3)))
    assert read(after(snap, r), "posts", "ada-1")["score"] == 3


def test_incr_of_a_value_that_is_not_a_number_is_quarantined(base: MemorySnapshot) -> None:
    d = delta("ada", incr("agents", "ada", "name", 1))
    r = merge(base, d)
    assert "name is not a number" in refused(r)[d["id"]]
    assert read(after(base, r), "agents", "ada")["name"] == "Ada"


def test_incr_beyond_what_json_on_disk_holds_is_quarantined_not_a_crash(base: MemorySnapshot) -> None:
    big = 2**63 - 1
    ds = [delta(a, incr("posts", "ada-1", "score", big)) for a in ("basil", "cleo", "dara")]
    r = merge(base, *ds)
    assert applied(r) == [ds[0]["id"], ds[1]["id"]]  # 2**64 - 2 still fits in 64 bits
    assert "state/posts/ada-1.json" in refused(r)[ds[2]["id"]]
    assert read(after(base, r), "posts", "ada-1")["score"] == 2 * big


# -- add / remove ----------------------------------------------------------------


def test_add_and_remove_keep_a_sorted_set(base: MemorySnapshot) -> None:
    r = merge(base, delta("cleo", add("posts", "cleo-1", "tags", "unix"), add("posts", "cleo-1", "tags", "git")),
              delta("ada", add("posts", "cleo-1", "tags", "history")))  # already there: once
    assert read(after(base, r), "posts", "cleo-1")["tags"] == ["git", "history", "unix"]


def test_remove_takes_a_member_out(base: MemorySnapshot) -> None:
    r = merge(base, delta("cleo", remove("posts", "cleo-1", "tags", "history"), remove("posts", "cleo-1", "tags", "absent")))
    assert not r.quarantined
    assert read(after(base, r), "posts", "cleo-1")["tags"] == []


@pytest.mark.parametrize("remover_first", [True, False])
def test_add_wins_over_remove_in_the_same_tick(base: MemorySnapshot, remover_first: bool) -> None:
    rm = delta("cleo", remove("posts", "cleo-1", "tags", "history"))
    ad = delta("ada", add("posts", "cleo-1", "tags", "history"))
    r = merge(base, *((rm, ad) if remover_first else (ad, rm)))
    assert len(r.applied) == 2
    assert read(after(base, r), "posts", "cleo-1")["tags"] == ["history"]


def test_add_to_something_that_is_not_a_set_is_quarantined(base: MemorySnapshot) -> None:
    d = delta("ada", add("agents", "ada", "memory", "x"), add("agents", "ada", "name", "x"))
    r = merge(base, d)
    assert "is not a set of scalars" in refused(r)[d["id"]]


# -- append ----------------------------------------------------------------------


def _note(i: str, text: str = "remember") -> dict[str, Any]:
    return {"id": i, "text": text}


def test_append_adds_new_items_in_delta_order(base: MemorySnapshot) -> None:
    one = delta("ada", append("agents", "ada", "memory", _note("zz")), append("agents", "ada", "memory", _note("mm")), stream="one")
    two = delta("ada", append("agents", "ada", "memory", _note("aa")), stream="two")
    r = merge(base, two, one)
    s = after(base, r)
    assert [m["id"] for m in read(s, "agents", "ada")["memory"]] == ["zz", "mm", "aa"]
    # and a later tick appends after what is there
    r2 = merge(s, delta("ada", append("agents", "ada", "memory", _note("bb")), tick=2))
    assert [m["id"] for m in read(after(s, r2), "agents", "ada")["memory"]] == ["zz", "mm", "aa", "bb"]


def test_append_of_the_same_item_twice_lands_once(base: MemorySnapshot) -> None:
    a = delta("ada", append("agents", "ada", "memory", _note("m1")), stream="one")
    b = delta("ada", append("agents", "ada", "memory", _note("m1")), stream="two")
    r = merge(base, a, b)
    s = after(base, r)
    assert len(r.applied) == 2 and not r.held
    assert read(s, "agents", "ada")["memory"] == [_note("m1")]
    r2 = merge(s, delta("ada", append("agents", "ada", "memory", _note("m1")), tick=2))  # already there
    assert len(r2.applied) == 1 and not r2.quarantined
    assert read(after(s, r2), "agents", "ada")["memory"] == [_note("m1")]


def test_append_of_one_id_with_different_items_is_held(base: MemorySnapshot) -> None:
    a = delta("ada", append("agents", "ada", "memory", _note("m1", "first")), stream="one")
    b = delta("ada", append("agents", "ada", "memory", _note("m1", "second")), stream="two")
    r = merge(base, b, a)
    s = after(base, r)
    assert len(r.applied) == 2 and r.held == [conflict_id("agents", "ada", ("memory", "m1"))]
    assert read(s, "agents", "ada")["memory"] == []
    c = conflict(s, "agents", "ada", "memory.m1")
    assert [(x["delta"], x["value"]) for x in c["candidates"]] == [
        (a["id"], _note("m1", "first")), (b["id"], _note("m1", "second"))]
    assert_valid_conflicts(s)


def test_append_over_an_existing_item_with_other_content_is_quarantined(base: MemorySnapshot) -> None:
    s = after(base, merge(base, delta("ada", append("agents", "ada", "memory", _note("m1", "first")))))
    d = delta("ada", append("agents", "ada", "memory", _note("m1", "changed")), tick=2)
    r = merge(s, d)
    assert "item 'm1' already exists with other content" in refused(r)[d["id"]]
    assert read(after(s, r), "agents", "ada")["memory"] == [_note("m1", "first")]


def test_one_delta_appending_two_items_with_one_id_is_quarantined(base: MemorySnapshot) -> None:
    d = delta("ada", append("agents", "ada", "memory", _note("m1", "a")), append("agents", "ada", "memory", _note("m1", "b")))
    r = merge(base, d)
    assert d["id"] in refused(r)
    assert not r.held
    s = after(base, r)
    assert read(s, "agents", "ada")["memory"] == [] and not s.under("state/conflicts")


def test_a_self_contradicting_append_is_quarantined_even_beside_a_rival(base: MemorySnapshot) -> None:
    torn = delta("ada", append("agents", "ada", "memory", _note("m1", "a")), append("agents", "ada", "memory", _note("m1", "b")),
                 stream="one")
    rival = delta("ada", append("agents", "ada", "memory", _note("m1", "c")), stream="two")
    r = merge(base, torn, rival)
    assert "the delta appends two different items with id 'm1'" in refused(r)[torn["id"]]
    assert applied(r) == [rival["id"]] and not r.held
    assert read(after(base, r), "agents", "ada")["memory"] == [_note("m1", "c")]


# -- delete ----------------------------------------------------------------------


def test_delete_wins_over_every_other_op_in_the_tick(base: MemorySnapshot) -> None:
    ds = [delta("ada", add("posts", "cleo-1", "tags", "x")),
          delta("fen", incr("posts", "cleo-1", "score", 1)),
          delta("cleo", delete("posts", "cleo-1")),
          delta("cleo", set_("posts", "cleo-1", "title", "late edit"), stream="other")]
    r = merge(base, *ds)
    assert len(r.applied) == 4 and not r.quarantined
    assert r.deletes == ["state/posts/cleo-1.json"]
    assert read(after(base, r), "posts", "cleo-1") is None


def test_delete_by_another_agent_is_quarantined(base: MemorySnapshot) -> None:
    d = delta("basil", delete("posts", "cleo-1"))
    r = merge(base, d)
    assert "agent basil may not delete posts/cleo-1" in refused(r)[d["id"]]
    assert not r.deletes


def test_delete_closes_the_documents_held_conflicts(base: MemorySnapshot) -> None:
    r1, s1 = _tags_duel(base)
    assert s1.under("state/conflicts")
    r2 = merge(s1, delta("cleo", delete("posts", "cleo-1"), tick=2))
    s2 = after(s1, r2)
    assert read(s2, "posts", "cleo-1") is None
    assert not s2.under("state/conflicts")
    assert fleet_doc(s2)["open_conflicts"] == 0


# -- paths -----------------------------------------------------------------------


def _with_prefs(files: dict[str, bytes]) -> MemorySnapshot:
    """The agent schema with a free-form object field, for nested paths."""
    return edit(files, "schemas/agent.schema.json", lambda s: s["properties"].__setitem__("prefs", {"type": "object"}))


def test_nested_set_creates_the_intermediate_objects(world: dict[str, bytes]) -> None:
    snap = _with_prefs(world)
    r = merge(snap, delta("ada", set_("agents", "ada", "prefs.theme.color", "blue"), set_("agents", "ada", "prefs.font", "mono")))
    assert not r.quarantined
    assert read(after(snap, r), "agents", "ada")["prefs"] == {"font": "mono", "theme": {"color": "blue"}}


def test_set_through_a_value_that_is_not_an_object_is_quarantined(base: MemorySnapshot) -> None:
    d = delta("ada", set_("agents", "ada", "name.first", "A"))
    r = merge(base, d)
    assert "crosses a value that is not an object" in refused(r)[d["id"]]


def test_overlapping_paths_from_two_deltas_are_one_held_conflict(world: dict[str, bytes]) -> None:
    snap = _with_prefs(world)
    snap = after(snap, merge(snap, delta("ada", set_("agents", "ada", "prefs", {"theme": "light"}))))
    outer = delta("ada", set_("agents", "ada", "prefs", {"theme": "dark"}), tick=2, stream="one")
    inner = delta("ada", set_("agents", "ada", "prefs.theme", "blue"), tick=2, stream="two")
    r = merge(snap, inner, outer)
    s = after(snap, r)
    assert len(r.applied) == 2
    assert r.held == [conflict_id("agents", "ada", ("prefs",))]
    assert read(s, "agents", "ada")["prefs"] == {"theme": "light"}
    c = conflict(s, "agents", "ada", "prefs")
    assert c["base"] == {"theme": "light"}
    assert [x["delta"] for x in c["candidates"]] == [outer["id"], inner["id"]]
    assert [[o["path"] for o in x["ops"]] for x in c["candidates"]] == [[["prefs"]], [["prefs", "theme"]]]
    assert_valid_conflicts(s)


def test_different_kinds_of_change_to_one_field_are_held(base: MemorySnapshot) -> None:
    a = delta("ada", set_("agents", "ada", "karma", 10))
    b = delta("basil", incr("agents", "ada", "karma", 1))
    r = merge(base, b, a)
    s = after(base, r)
    assert len(r.applied) == 2 and r.held
    assert read(s, "agents", "ada")["karma"] == 0
    c = conflict(s, "agents", "ada", "karma")
    assert c["policy"] == "mixed" and c["base"] == 0
    assert {x["agent"]: [o["op"] for o in x["ops"]] for x in c["candidates"]} == {"ada": ["set"], "basil": ["incr"]}
    assert_valid_conflicts(s)


def test_one_delta_competing_with_itself_is_quarantined_not_held(world: dict[str, bytes]) -> None:
    snap = _with_prefs(world)
    mixed = delta("ada", set_("agents", "ada", "karma", 5), incr("agents", "ada", "karma", 1), stream="one")
    nested = delta("ada", set_("agents", "ada", "prefs", {}), set_("agents", "ada", "prefs.x", 1), stream="two")
    fine = delta("ada", set_("agents", "ada", "bio", "ok"), stream="three")
    r = merge(snap, mixed, nested, fine)
    assert set(refused(r)) == {mixed["id"], nested["id"]}
    assert applied(r) == [fine["id"]] and not r.held
    s = after(snap, r)
    assert read(s, "agents", "ada")["karma"] == 0 and "prefs" not in read(s, "agents", "ada")


# -- authority -------------------------------------------------------------------


def test_an_agent_changes_its_own_document_but_not_anothers(base: MemorySnapshot) -> None:
    own = delta("ada", set_("agents", "ada", "bio", "tests first"))
    other = delta("basil", set_("agents", "ada", "bio", "ada is wrong"))
    r = merge(base, own, other)
    assert applied(r) == [own["id"]]
    reason = refused(r)[other["id"]]
    assert "agent basil may not set agents/ada bio (owner: ada" in reason and "collections.agents" in reason
    assert read(after(base, r), "agents", "ada")["bio"] == "tests first"


def test_others_rules_allow_only_the_listed_path(base: MemorySnapshot) -> None:
    ok = delta("basil", incr("agents", "ada", "karma", 1))
    bad = delta("basil", incr("agents", "ada", "post_count", 1))
    r = merge(base, ok, bad)
    assert applied(r) == [ok["id"]] and bad["id"] in refused(r)


def test_self_rules_allow_the_agent_only_itself(base: MemorySnapshot) -> None:
    leave = delta("fen", remove("channels", "general", "members", "fen"))
    kick = delta("fen", remove("channels", "general", "members", "ada"), stream="s-fen-2")
    r = merge(base, leave, kick)
    assert applied(r) == [leave["id"]]
    assert "agent fen may not remove channels/general members" in refused(r)[kick["id"]]
    assert read(after(base, r), "channels", "general")["members"] == ["ada", "basil", "cleo", "dara", "eli"]


def test_grants_extend_an_agents_rules_to_others_documents(base: MemorySnapshot) -> None:
    granted = delta("ada", add("posts", "cleo-1", "tags", "git"))
    not_granted = delta("ada", set_("posts", "cleo-1", "title", "mine now"))
    no_grant = delta("basil", add("posts", "cleo-1", "tags", "garden"))
    r = merge(base, granted, not_granted, no_grant)
    assert applied(r) == [granted["id"]]
    assert set(refused(r)) == {not_granted["id"], no_grant["id"]}
    post = read(after(base, r), "posts", "cleo-1")
    assert post["tags"] == ["git", "history"] and post["title"].startswith("Git is")


def test_an_unknown_agent_is_quarantined(base: MemorySnapshot) -> None:
    d = delta("zed", incr("posts", "ada-1", "score", 1))
    r = merge(base, d)
    assert "agent 'zed' is not in state/config.json agents" in refused(r)[d["id"]]
    assert read(after(base, r), "posts", "ada-1")["score"] == 0


def test_an_unknown_collection_is_quarantined(base: MemorySnapshot) -> None:
    d = delta("ada", incr("widgets", "w1", "n", 1))
    r = merge(base, d)
    assert "unknown collection 'widgets'" in refused(r)[d["id"]]
    assert not any(p.startswith("state/widgets") for p in r.writes)


def test_an_op_on_a_missing_document_is_quarantined(base: MemorySnapshot) -> None:
    d = delta("basil", incr("posts", "nope", "score", 1))
    r = merge(base, d)
    assert "incr posts/nope score: no such document" in refused(r)[d["id"]]


def test_an_op_on_a_document_created_in_the_same_tick_applies(base: MemorySnapshot) -> None:
    make_it = delta("eli", create("comments", "eli-2", COMMENT))
    edit_it = delta("eli", set_("comments", "eli-2", "body", "Numbers and error bars."), stream="two")
    r = merge(base, edit_it, make_it)
    assert len(r.applied) == 2
    assert read(after(base, r), "comments", "eli-2")["body"] == "Numbers and error bars."


# -- validity and atomicity ------------------------------------------------------


def test_a_schema_invalid_result_quarantines_only_the_culprit(base: MemorySnapshot) -> None:
    good_same_doc = delta("ada", set_("agents", "ada", "interests", ["proofs"]), stream="one")
    culprit = delta("ada", set_("agents", "ada", "bio", "x" * 501), stream="two")
    good_same_doc_later = delta("ada", incr("agents", "ada", "post_count", 1), stream="three")
    good_elsewhere = delta("cleo", set_("posts", "cleo-1", "title", "Older than it looks"))
    r = merge(base, culprit, good_elsewhere, good_same_doc_later, good_same_doc)
    reason = refused(r)[culprit["id"]]
    assert "would make state/agents/ada.json invalid" in reason and "schemas/agent.schema.json" in reason
    assert set(applied(r)) == {good_same_doc["id"], good_same_doc_later["id"], good_elsewhere["id"]}
    s = after(base, r)
    assert read(s, "agents", "ada")["interests"] == ["proofs"]
    assert read(s, "agents", "ada")["post_count"] == 2
    assert read(s, "agents", "ada")["bio"] == ""
    assert read(s, "posts", "cleo-1")["title"] == "Older than it looks"


def test_among_competing_increments_the_later_one_that_breaks_the_schema_is_quarantined(base: MemorySnapshot) -> None:
    first = delta("basil", incr("posts", "ada-1", "comment_count", -1))
    second = delta("cleo", incr("posts", "ada-1", "comment_count", -1))
    r = merge(base, second, first)
    assert applied(r) == [first["id"]]
    assert "at /comment_count" in refused(r)[second["id"]]
    assert read(after(base, r), "posts", "ada-1")["comment_count"] == 0


@pytest.mark.parametrize("bad_doc", ["posts/cleo-1", "comments/eli-1"])
def test_a_refused_delta_does_not_take_a_valid_one_down_with_it(base: MemorySnapshot, bad_doc: str) -> None:
    """basil's delta is refused for its op on another document; the
    comment_count it would have used up must not count against cleo's."""
    coll, doc_id = bad_doc.split("/")
    bad = delta("basil", incr("posts", "ada-1", "comment_count", -1), set_(coll, doc_id, "body", "mine"))
    good = delta("cleo", incr("posts", "ada-1", "comment_count", -1))
    r = merge(base, good, bad)
    assert "agent basil may not set" in refused(r)[bad["id"]]
    assert applied(r) == [good["id"]], refused(r)
    assert read(after(base, r), "posts", "ada-1")["comment_count"] == 0


def test_a_refusal_two_documents_away_does_not_take_a_valid_delta_down(base: MemorySnapshot) -> None:
    """basil's +2 lets cleo's -1 on cleo-1 pass; cleo's -1 on ada-1 uses up
    the comment dara decrements. basil is refused (its reaction is not its
    own), so cleo's delta fails too: dara's -1 alone would have applied."""
    basil = delta("basil", incr("posts", "cleo-1", "comment_count", 2),
                  create("reactions", "x1", {"id": "x1", "post": "ada-1", "agent": "eli", "kind": "like"}))
    cleo = delta("cleo", incr("posts", "cleo-1", "comment_count", -1), incr("posts", "ada-1", "comment_count", -1))
    dara = delta("dara", incr("posts", "ada-1", "comment_count", -1))
    r = merge(base, basil, cleo, dara)
    assert set(refused(r)) == {basil["id"], cleo["id"]}
    assert applied(r) == [dara["id"]]


def test_a_delta_with_one_bad_op_applies_none_of_its_ops(base: MemorySnapshot) -> None:
    d = delta("basil", incr("posts", "ada-1", "score", 5), incr("agents", "cleo", "karma", 1),
              add("channels", "tools", "members", "basil"), set_("posts", "cleo-1", "title", "not mine"))
    r = merge(base, d)
    assert "agent basil may not set posts/cleo-1 title" in refused(r)[d["id"]]
    assert not r.applied and r.docs_changed == 0
    assert not any(p.startswith(("state/posts/", "state/agents/", "state/channels/", "state/ledger/")) for p in r.writes)
    rec = r.quarantined[0]
    assert rec["delta"] == d and rec["path"] == file_path(d) and rec["worker"] == "w1"


def test_a_delta_whose_valid_ops_break_another_document_applies_none(base: MemorySnapshot) -> None:
    d = delta("ada", set_("agents", "ada", "bio", "fine"), incr("posts", "cleo-1", "score", 1),
              set_("agents", "ada", "name", "x" * 81))
    r = merge(base, d)
    assert "at /name" in refused(r)[d["id"]]
    s = after(base, r)
    assert read(s, "agents", "ada")["bio"] == "" and read(s, "posts", "cleo-1")["score"] == 0


# -- held conflicts --------------------------------------------------------------


def test_a_held_conflict_keeps_every_value_and_the_base(base: MemorySnapshot) -> None:
    a = delta("ada", set_("posts", "cleo-1", "tags", ["a"]))
    b = delta("cleo", set_("posts", "cleo-1", "tags", ["b"]), worker="w2")
    c = delta("cleo", set_("posts", "cleo-1", "tags", ["a"]), worker="w3", stream="again")
    r = merge(base, c, b, a)
    s = after(base, r)
    cid = conflict_id("posts", "cleo-1", ("tags",))
    assert r.held == [cid]
    assert read(s, "posts", "cleo-1")["tags"] == ["history"]
    assert conflict(s, "posts", "cleo-1", "tags") == {
        "id": cid, "collection": "posts", "doc": "cleo-1", "path": ["tags"],
        "policy": "hold", "reason": "policy 'hold': a person decides", "opened_tick": 1,
        "base": ["history"],
        "candidates": [
            {"delta": x["id"], "agent": x["agent"], "worker": x["worker"], "tick": 1, "utc": x["utc"], "value": v}
            for x, v in ((a, ["a"]), (b, ["b"]), (c, ["a"]))
        ],
    }
    assert_valid_conflicts(s)
    f = fleet_doc(s)
    assert f["open_conflicts"] == 1 and f["last"]["held"] == 1 and f["last"]["applied"] == 3


def test_a_later_set_of_a_held_field_joins_the_conflict(base: MemorySnapshot) -> None:
    _, s1 = _tags_duel(base)
    before = conflict(s1, "posts", "cleo-1", "tags")
    later = delta("cleo", set_("posts", "cleo-1", "tags", ["settled"]), tick=2)
    r = merge(s1, later)
    s2 = after(s1, r)
    assert applied(r) == [later["id"]] and r.held == [before["id"]]
    assert read(s2, "posts", "cleo-1")["tags"] == ["history"]
    c = conflict(s2, "posts", "cleo-1", "tags")
    assert c["opened_tick"] == 1 and c["base"] == ["history"] and c["policy"] == "hold"
    assert c["candidates"][:2] == before["candidates"]
    assert c["candidates"][2]["delta"] == later["id"] and c["candidates"][2]["value"] == ["settled"]
    assert fleet_doc(s2)["open_conflicts"] == 1


# -- ticks: late, stale, ahead ---------------------------------------------------


def _advance(snap: MemorySnapshot, ticks: int) -> MemorySnapshot:
    for _ in range(ticks):
        snap = after(snap, merge_tick(snap, []))
    return snap


def test_a_late_delta_within_the_window_is_applied_and_counted(base: MemorySnapshot) -> None:
    s1 = after(base, merge(base, delta("basil", incr("posts", "ada-1", "score", 1))))
    late = delta("cleo", incr("posts", "ada-1", "score", 10), tick=1)  # same worker, same tick folder
    late_w2 = delta("dara", incr("posts", "ada-1", "score", 100), tick=1, worker="w2")
    now = delta("eli", incr("posts", "ada-1", "score", 1000), tick=2)
    r = merge(s1, now, late_w2, late)
    s2 = after(s1, r)
    assert len(r.applied) == 3 and r.late == 2 and not r.quarantined
    assert read(s2, "posts", "ada-1")["score"] == 1111
    ledger = [json.loads(x)["id"] for x in s2.read("state/ledger/1/w1.jsonl").splitlines()]
    assert len(ledger) == 2 and late["id"] in ledger
    assert late_w2["id"] in s2.read("state/ledger/1/w2.jsonl").decode()
    f = fleet_doc(s2)
    assert f["tick"] == 2 and f["last"]["late"] == 2 and f["totals"]["late"] == 2 and f["totals"]["applied"] == 4


def test_a_delta_older_than_the_window_is_quarantined(base: MemorySnapshot) -> None:
    window = base.config.limits.window
    snap = _advance(base, window + 1)  # main at window + 1: ticks >= 2 still accepted
    stale = delta("basil", incr("posts", "ada-1", "score", 1), tick=1)
    oldest = delta("cleo", incr("posts", "ada-1", "score", 1), tick=2)
    r = merge(snap, stale, oldest)
    assert applied(r) == [oldest["id"]] and r.late == 1
    assert "limits.window" in refused(r)[stale["id"]] and "merged long ago" in refused(r)[stale["id"]]
    assert read(after(snap, r), "posts", "ada-1")["score"] == 1


def test_a_delta_ahead_of_the_next_tick_is_quarantined(base: MemorySnapshot) -> None:
    ahead = delta("basil", incr("posts", "ada-1", "score", 1), tick=2)
    r = merge(base, ahead)
    assert "tick 2 is ahead of the next tick (1)" in refused(r)[ahead["id"]]
    assert read(after(base, r), "posts", "ada-1")["score"] == 0


# -- duplicates ------------------------------------------------------------------


def test_the_same_delta_from_two_sources_applies_once(base: MemorySnapshot) -> None:
    d = delta("basil", incr("posts", "ada-1", "score", 1))
    r = merge(base, arrival(d), arrival(d, source="inbox"))
    assert applied(r) == [d["id"]] and len(r.duplicates) == 1 and not r.quarantined
    assert read(after(base, r), "posts", "ada-1")["score"] == 1


def test_one_id_with_different_content_is_quarantined(base: MemorySnapshot) -> None:
    d = delta("basil", incr("posts", "ada-1", "score", 1))
    forged = {**d, "ops": [incr("posts", "ada-1", "score", 50).to_json()], "utc": d["utc"].replace("12:00", "12:01")}
    r = merge(base, arrival(forged, source="inbox"), arrival(d))
    assert applied(r) == [d["id"]]
    assert r.quarantined[0]["delta"] == forged
    assert "is reused with different content" in r.quarantined[0]["reason"]
    assert read(after(base, r), "posts", "ada-1")["score"] == 1


def test_copies_of_a_refused_reused_id_are_one_quarantine_record(base: MemorySnapshot) -> None:
    d = delta("basil", incr("posts", "ada-1", "score", 1))
    forged = {**d, "ops": [incr("posts", "ada-1", "score", 50).to_json()], "utc": d["utc"].replace("12:00", "12:01")}
    r = merge(base, arrival(d), arrival(forged, source="inbox"), arrival(forged, source="refs/heads/fleet/t1/w9"))
    assert applied(r) == [d["id"]] and len(r.quarantined) == 1 and len(r.duplicates) == 1
    assert r.quarantined[0]["delta"] == forged


def _forgery(d: dict[str, Any], below: bool) -> dict[str, Any]:
    """Same id, tick, utc and worker, other content, whose digest sorts below
    (or above) the original's: the only thing left to order the two."""
    for by in range(2, 200):
        forged = {**d, "ops": [incr("posts", "ada-1", "score", by).to_json()]}
        if (canonical.digest(forged) < canonical.digest(d)) == below:
            return forged
    raise AssertionError("no forgery found")


@pytest.mark.parametrize("forgery_first", [True, False])
def test_a_resent_delta_is_a_duplicate_even_next_to_a_forgery(base: MemorySnapshot, forgery_first: bool) -> None:
    d = delta("basil", incr("posts", "ada-1", "score", 1))
    s1 = after(base, merge(base, d))
    forged = _forgery(d, below=forgery_first)
    r = merge(s1, arrival(d, source="inbox"), arrival(forged))
    assert not r.applied and len(r.duplicates) == 1 and r.duplicates[0].source == "inbox"
    assert [q["delta"] for q in r.quarantined] == [forged]
    assert "was applied in tick 1 with different content" in r.quarantined[0]["reason"]


def test_resending_an_applied_delta_is_a_silent_duplicate(base: MemorySnapshot) -> None:
    d = delta("basil", incr("posts", "ada-1", "score", 1))
    s1 = after(base, merge(base, d))
    r = merge(s1, arrival(d, source="inbox"))
    assert not r.applied and not r.quarantined and len(r.duplicates) == 1
    s2 = after(s1, r)
    assert read(s2, "posts", "ada-1")["score"] == 1
    forged = {**d, "ops": [incr("posts", "ada-1", "score", 50).to_json()]}
    r2 = merge(s2, forged)
    assert "was applied in tick 1 with different content" in refused(r2)[d["id"]]
    assert read(after(s2, r2), "posts", "ada-1")["score"] == 1


def test_resending_a_quarantined_delta_is_not_quarantined_twice(base: MemorySnapshot) -> None:
    bad = delta("basil", set_("posts", "cleo-1", "title", "not mine"))
    ahead = delta("basil", incr("posts", "ada-1", "score", 1), tick=2)
    garbage = Arrival("inbox", "deltas/w1/s1/x.json", b"{not json")
    r1 = merge(base, bad, ahead, garbage)
    assert len(r1.quarantined) == 3
    s1 = after(base, r1)
    r2 = merge(s1, bad, ahead, garbage)  # a merge that raced the first one
    assert not r2.applied and not r2.quarantined and len(r2.duplicates) == 3
    s2 = after(s1, r2)
    assert read(s2, "posts", "ada-1")["score"] == 0
    assert fleet_doc(s2)["totals"]["quarantined"] == 3


# -- files that are not deltas ---------------------------------------------------


def test_an_empty_delta_with_a_reason_is_applied(base: MemorySnapshot) -> None:
    noop = delta("ada", meta={"noop": "nothing worth saying"})
    failed = delta("basil", meta={"error": "the model timed out"})
    r = merge(base, noop, failed)
    assert applied(r) == [noop["id"], failed["id"]] and r.docs_changed == 0
    assert set(json.loads(x)["id"] for x in after(base, r).read("state/ledger/1/w1.jsonl").splitlines()) == {
        noop["id"], failed["id"]}


@pytest.mark.parametrize(
    "change, rule",
    [
        (lambda b: (b.__setitem__("ops", []), b.__setitem__("meta", {})), "schemas/delta.schema.json"),  # empty, no reason
        (lambda b: b["meta"].__setitem__("error", "boom"), "schemas/delta.schema.json"),  # error with ops
        (lambda b: b.__setitem__("tick", 0), "schemas/delta.schema.json"),
        (lambda b: b["ops"][0].__setitem__("by", "1"), "schemas/delta.schema.json"),
        (lambda b: b.__setitem__("extra", 1), "schemas/delta.schema.json"),
    ],
)
def test_a_delta_that_breaks_the_delta_schema_is_quarantined(base: MemorySnapshot, change: Callable, rule: str) -> None:
    d = delta("basil", incr("posts", "ada-1", "score", 1))
    change(d)
    r = merge(base, d)
    assert not r.applied and len(r.quarantined) == 1
    assert rule in r.quarantined[0]["reason"]


def test_malformed_oversized_and_misplaced_files_are_quarantined(base: MemorySnapshot) -> None:
    good = delta("basil", incr("posts", "ada-1", "score", 1))
    big = delta("ada", set_("agents", "ada", "bio", "x" * 70_000))
    intruder = delta("cleo", incr("posts", "ada-1", "score", 1), worker="w2")
    r = merge(base,
              good,
              Arrival("inbox", "deltas/w1/s1/broken.json", b'{"id": "x", '),
              arrival(big),
              Arrival("refs/heads/fleet/t1/w1", "deltas/w1/s/" + intruder["id"] + ".json", canonical.dumps(intruder)))
    assert applied(r) == [good["id"]]
    why = {q["path"]: q for q in r.quarantined}
    assert "malformed JSON" in why["deltas/w1/s1/broken.json"]["reason"]
    assert why["deltas/w1/s1/broken.json"]["raw"] == '{"id": "x", ' and why["deltas/w1/s1/broken.json"]["worker"] == "w1"
    assert "over limits.max_delta_bytes" in why[file_path(big)]["reason"]
    assert "another worker's directory" in why["deltas/w1/s/" + intruder["id"] + ".json"]["reason"]
    s = after(base, r)
    assert read(s, "posts", "ada-1")["score"] == 1
    lines = s.read("state/quarantine/1/w1.jsonl").splitlines()
    assert len(lines) == 3 and lines == sorted(lines)


# -- what the tree keeps ---------------------------------------------------------


def test_the_ledger_and_quarantine_keep_a_bounded_window(base: MemorySnapshot) -> None:
    window = base.config.limits.window
    snap = base
    for t in range(1, window + 4):
        r = merge(snap, delta("basil", incr("posts", "ada-1", "score", 1), tick=t),
                  delta("basil", set_("posts", "cleo-1", "title", "no"), tick=t))
        assert len(r.applied) == 1 and len(r.quarantined) == 1
        snap = after(snap, r)
        for folder in ("state/ledger", "state/quarantine"):
            ticks = {int(p.split("/")[2]) for p in snap.under(folder)}
            assert len(ticks) <= window + 1 and max(ticks) == t
    assert {int(p.split("/")[2]) for p in snap.under("state/ledger")} == set(range(3, window + 4))
    assert {int(p.split("/")[2]) for p in snap.under("state/quarantine")} == set(range(3, window + 4))
    assert read(snap, "posts", "ada-1")["score"] == window + 3
    assert fleet_doc(snap)["totals"]["applied"] == window + 3


def test_usage_and_cost_add_up_in_the_fleet_document(base: MemorySnapshot) -> None:
    def usage(i: int, o: int, cost: float) -> dict[str, Any]:
        return {"usage": {"input_tokens": i, "output_tokens": o, "cache_read_input_tokens": 1, "cost_usd": cost}}

    r1 = merge(base, delta("ada", set_("agents", "ada", "bio", "a"), meta=usage(100, 10, 0.1)),
               delta("basil", meta={"noop": "quiet", **usage(50, 5, 0.2)}))
    s1 = after(base, r1)
    f1 = fleet_doc(s1)
    assert f1["last"]["usage"] == {"input_tokens": 150, "output_tokens": 15, "cache_read_input_tokens": 2,
                                   "cache_creation_input_tokens": 0, "cost_usd": 0.3}
    assert f1["totals"]["usage"] == f1["last"]["usage"]
    assert f1["last_utc"] == max(d.utc for d in r1.applied)
    # a quarantined delta's tokens were spent all the same: they count
    r2 = merge(s1, delta("cleo", meta={"noop": "quiet", **usage(1, 1, 0.000001)}, tick=2),
               delta("dara", set_("agents", "ada", "bio", "not mine"), meta=usage(7, 1, 0.05), tick=2))
    assert len(r2.quarantined) == 1
    f2 = fleet_doc(after(s1, r2))
    assert f2["last"]["usage"]["cost_usd"] == 0.050001
    assert f2["totals"]["usage"]["cost_usd"] == 0.350001
    assert f2["totals"]["usage"]["input_tokens"] == 158
    assert f2["totals"]["applied"] == 3 and f2["tick"] == 2


def test_replay_of_a_tick_gives_the_same_files(base: MemorySnapshot) -> None:
    s1 = after(base, merge(base, *_tags_duel_bodies()))
    r = merge(s1, delta("cleo", set_("posts", "cleo-1", "tags", ["x"]), tick=2),
              delta("basil", incr("posts", "ada-1", "score", 1), tick=1),
              delta("basil", set_("posts", "cleo-1", "title", "no"), tick=2),
              delta("eli", create("comments", "eli-2", COMMENT), tick=2))
    again = replay_tick(s1, list(reversed(r.applied)), list(reversed(r.quarantined)))
    assert again.writes == r.writes and again.deletes == r.deletes and again.late == r.late == 1


def _tags_duel_bodies() -> list[dict[str, Any]]:
    return [delta("ada", set_("posts", "cleo-1", "tags", ["ada"])), delta("cleo", set_("posts", "cleo-1", "tags", ["cleo"]))]


def test_the_world_is_the_example_world(world: dict[str, bytes]) -> None:
    """Guard: the tests above run on the example world that `fleet init` ships."""
    snap = MemorySnapshot(world)
    assert sorted(snap.config.agents) == ["ada", "basil", "cleo", "dara", "eli", "fen"]
    assert sorted(snap.config.collections) == ["agents", "channels", "comments", "follows", "posts", "reactions"]
    assert snap.tick == 0 and not snap.under("state/ledger") and read(snap, "posts", "cleo-1")["tags"] == ["history"]


def test_the_owner_field_and_fixed_fields_cannot_be_set(base: MemorySnapshot) -> None:
    """A set must not hand a document to another agent, nor move what config fixes."""
    r = merge(base, delta("ada", set_("posts", "ada-1", "author", "basil")),
              delta("ada", set_("posts", "ada-1", "tick", 7), stream="s2"),
              delta("ada", set_("posts", "ada-1", "title", "Still mine"), stream="s3"))
    reasons = sorted(q["reason"] for q in r.quarantined)
    assert len(reasons) == 2 and all("is fixed once the document exists" in x for x in reasons)
    post = json.loads(after(base, r).read("state/posts/ada-1.json"))
    assert post["author"] == "ada" and post["tick"] == 0 and post["title"] == "Still mine"


def test_an_agents_stream_takes_one_turn_a_tick_whichever_copies_arrive(base: MemorySnapshot) -> None:
    """Two turns of one (tick, agent, stream) under other ids (a worker's outbox merged
    with a rerun's, a rerun with another worker count): the first in delta order
    applies, the other is quarantined naming it, in any order of arrival; another
    stream of the agent is a turn of its own."""
    first = delta("ada", incr("agents", "ada", "karma", 1), stream="s1")
    again = delta("ada", incr("agents", "ada", "karma", 1), stream="s1", worker="w2")
    other = delta("ada", incr("agents", "ada", "karma", 5), stream="s2")
    for items in ((first, again, other), (other, again, first)):
        r = merge(base, *items)
        assert applied(r) == [first["id"], other["id"]]
        assert refused(r) == {again["id"]: f"agent ada already took its turn of tick 1 in stream s1 "
                                           f"(delta {first['id']}): one turn a stream a tick"}
        assert read(after(base, r), "agents", "ada")["karma"] == read(base, "agents", "ada")["karma"] + 6


def test_a_late_second_turn_is_refused_by_the_ledger_of_its_tick(base: MemorySnapshot) -> None:
    """A turn of tick 1 arriving when tick 2 merges, its stream's turn of tick 1 applied
    already (by another worker): quarantined, not applied as a second turn."""
    first = delta("ada", incr("agents", "ada", "karma", 1), stream="s1", worker="w1")
    s1 = after(base, merge(base, first))
    late = delta("ada", incr("agents", "ada", "karma", 1), stream="s1", worker="w3")
    now = delta("basil", incr("agents", "basil", "karma", 1), tick=2)
    r = merge(s1, late, now)
    assert applied(r) == [now["id"]]
    assert "already took its turn of tick 1 in stream s1" in refused(r)[late["id"]]
    ok = delta("ada", incr("agents", "ada", "karma", 1), stream="s9", worker="w3")  # another stream: late, applied
    assert applied(merge(s1, ok)) == [ok["id"]]
