"""An op whose path crosses a value that is no object (bio.x where bio is a string)
can apply in no order: it is quarantined, never held beside a change that can apply,
and that change is decided as if the mistake were not there."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.delta import Op
from fleet.state import MemorySnapshot
from tests.engine.test_ops import after, applied, delta, merge, read, refused
from tests.engine.test_ops import world as world  # noqa: F401  (the fixture)

# ada's own document: scalars and arrays, none an object
_NOT_OBJECTS = ["bio", "name", "persona", "karma", "post_count", "interests", "memory"]
_SUB = st.text(st.sampled_from("abcxyz"), min_size=1, max_size=3)


def _op(kind: str, path: tuple[str, ...]) -> Op:
    arg: Any = {"set": "words", "incr": 1, "add": "member", "append": {"id": "m1", "text": "hi"}}[kind]
    return Op(kind, "agents", "ada", path, arg)


@st.composite
def cases(draw: Any) -> tuple[Op, Op | None, bool]:
    field = draw(st.sampled_from(_NOT_OBJECTS))
    bad = _op(draw(st.sampled_from(["set", "incr", "add", "append"])),
              (field, *draw(st.lists(_SUB, min_size=1, max_size=3))))
    good: Op | None = draw(st.sampled_from([
        Op("set", "agents", "ada", ("bio",), "a new bio"),
        Op("incr", "agents", "ada", ("karma",), 2),
        Op("set", "agents", "ada", (field,), "plain") if field in ("bio", "name", "persona") else
        Op("incr", "agents", "ada", (field,), 3) if field in ("karma", "post_count") else
        Op("add", "agents", "ada", (field,), "rust"),
        None,
    ]))
    return bad, good, draw(st.booleans())


@settings(max_examples=80, deadline=None)
@given(case=cases())
def test_a_path_through_a_value_that_is_no_object_is_quarantined_in_any_order(
        world: dict[str, bytes], case: tuple[Op, Op | None, bool]) -> None:
    snap = MemorySnapshot(world)
    bad_op, good_op, bad_first = case
    made = {}
    for name in (["bad", "good"] if bad_first else ["good", "bad"]):  # delta order: the order they are made
        op = bad_op if name == "bad" else good_op
        if op is not None:
            made[name] = delta("ada", op, stream=f"s-{name}")
    bad, good = made["bad"], made.get("good")
    r = merge(snap, *made.values())
    assert "crosses a value that is not an object" in refused(r)[bad["id"]], refused(r)
    assert not after(snap, r).under("state/conflicts")  # nothing held for a person
    if good is not None:
        alone = merge(snap, good)
        assert applied(r) == applied(alone), (refused(r), refused(alone))
        assert {k: v for k, v in refused(r).items() if k != bad["id"]} == refused(alone)
        assert read(after(snap, r), "agents", "ada") == read(after(snap, alone), "agents", "ada")


def test_a_history_that_held_such_an_op_still_replays(world: dict[str, bytes]) -> None:
    """Merged before this rule, the mistake and its competitor were held together, both
    in the ledger: a replay takes them as the merge did, and holds them again."""
    from fleet.delta import parse
    from fleet.engine import replay_tick
    from tests.engine.test_ops import arrival

    snap = MemorySnapshot(world)
    bad = delta("ada", Op("set", "agents", "ada", ("bio", "x"), "through a string"), stream="s-bad")
    good = delta("ada", Op("set", "agents", "ada", ("bio",), "a new bio"), stream="s-good")
    r = replay_tick(snap, [parse(arrival(d), snap.config.limits) for d in (bad, good)], [])
    assert after(snap, r).under("state/conflicts")  # held, as it was
