"""Where a collection's schema says integer, a document the merge writes holds an
integer: an incr by 1.0 or a create with "tick": 2e0 is refused (JSON Schema counts
2.0 as an integer, and a counter that became a float loses increments past 2**53).
A replay takes what the ledger applied, as it was."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.delta import Op
from fleet.engine import replay_tick
from fleet.state import MemorySnapshot
from tests.engine.test_ops import COMMENT, after, applied, delta, merge, read, refused
from tests.engine.test_ops import world as world  # noqa: F401  (the fixture)

_WHOLE = st.integers(-10**6, 10**6)


@settings(max_examples=40, deadline=None)
@given(by=st.one_of(st.integers(0, 10**6).map(float), st.floats(0, 1e6)), field=st.sampled_from(
    [("posts", "ada-1", ("score",), "ada"), ("posts", "ada-1", ("comment_count",), "eli"),
     ("agents", "ada", ("karma",), "basil")]))
def test_a_float_never_lands_where_the_schema_says_integer(world: dict[str, bytes], by: float,
                                                           field: tuple[str, str, tuple[str, ...], str]) -> None:
    snap = MemorySnapshot(world)
    coll, doc_id, path, agent = field
    before = read(snap, coll, doc_id)
    d = delta(agent, Op("incr", coll, doc_id, path, by))
    ok = delta(agent, Op("incr", coll, doc_id, path, 1), stream="s-ok")
    r = merge(snap, d)
    # a whole float by this rule, any other by the schema's type
    assert "is not an integer in the JSON text" in refused(r)[d["id"]] or 'not of type "integer"' in refused(r)[d["id"]]
    assert read(after(snap, r), coll, doc_id) == before
    r2 = merge(snap, ok)
    assert applied(r2) == [ok["id"]] and type(read(after(snap, r2), coll, doc_id)[path[0]]) is int


@settings(max_examples=20, deadline=None)
@given(tick=st.integers(0, 10**6).map(float))
def test_a_create_with_a_whole_float_for_an_integer_is_refused(world: dict[str, bytes], tick: float) -> None:
    snap = MemorySnapshot(world)
    d = delta("eli", Op("create", "comments", "eli-2", (), {**COMMENT, "tick": tick}))
    r = merge(snap, d)
    assert "is not an integer in the JSON text" in refused(r)[d["id"]], refused(r)


def test_a_replay_takes_what_the_ledger_applied_as_it_was(world: dict[str, bytes]) -> None:
    """A history merged before the rule (a counter made 2.0) still replays."""
    snap = MemorySnapshot(world)
    d = delta("ada", Op("incr", "posts", "ada-1", ("score",), 1.0))
    from fleet.delta import parse
    from tests.engine.test_ops import arrival

    limits = snap.config.limits
    r = replay_tick(snap, [parse(arrival(d), limits)], [])
    post: Any = read(after(snap, r), "posts", "ada-1")
    assert type(post["score"]) is float
