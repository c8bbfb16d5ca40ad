"""``Applier.sequential`` carries hot documents: the same decisions as recombining.

Once a tick has a culprit, the engine decides delta by delta, in delta order,
which deltas stand. Its definition: a delta stands when every document it
touches, recombined from main with the ops of the deltas that stood before it
and its own, takes all its ops and stays valid. Recombining costs O(k^2) for k
deltas on one document, so the engine carries such a document from delta to
delta instead (``Carried``). These tests hold the two together: the
definition is written out here, the slow way, as the reference.

The world is a test-only collection whose schema bounds counters, sets and
lists (so deltas that break it are culprits), with fields under ``hold``,
``lww`` and ``priority``, a settable owner field, and a held conflict on main.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet import canonical
from fleet.commands.init import init
from fleet.delta import Delta, Op, make
from fleet.engine.apply import Applier, DocKey, Entry, combine, doc_problem
from fleet.engine.conflicts import OpenHere, conflict_id
from fleet.state import MemorySnapshot

AGENTS = ("ada", "basil", "cleo", "dara")
DOCS = ("x1", "x2", "x3")  # x3 does not exist until a delta creates it
NOTE_IDS = ("n1", "n2", "n3", "n4")
NOTE_TEXTS = ("short", "other", "x" * 30)  # the last is too long: a culprit
STATUSES = ("open", "closed", "bogus")  # bogus breaks the schema

ITEM_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "item",
    "type": "object",
    "required": ["id", "author"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "author": {"type": "string"},
        "status": {"enum": ["open", "closed"]},
        "title": {"type": "string", "maxLength": 12},
        "label": {"type": "string"},
        "topic": {"type": "string"},
        "score": {"type": "integer", "minimum": -3, "maximum": 6},
        "likes": {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "maxItems": 3},
        "notes": {"type": "array", "maxItems": 3, "items": {
            "type": "object", "required": ["id", "text"], "additionalProperties": False,
            "properties": {"id": {"type": "string"}, "text": {"type": "string", "maxLength": 20}}}},
        "meta": {"type": "object"},
    },
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> MemorySnapshot:
    """The example world of `fleet init` plus the test collection ``items``."""
    root = tmp_path_factory.mktemp("world") / "fleet"
    init(root)
    files = {p.relative_to(root).as_posix(): p.read_bytes()
             for top in ("state", "schemas") for p in sorted((root / top).rglob("*")) if p.is_file()}
    cfg = json.loads(files["state/config.json"])
    cfg["collections"]["items"] = {
        "schema": "item.schema.json",
        "owner": "author",
        "own": ["create", "set", "incr", "add", "remove", "append", "delete"],
        "others": ["incr:score", "set:status", "set:label", "set:title", "set:topic", "append:notes",
                   "add:likes@self", "remove:likes@self", "set:meta"],
    }
    cfg["policies"].update({"items/status": "lww", "items/label": "priority", "items/title": "hold",
                            "items/topic": "hold"})
    for n, a in enumerate(AGENTS):
        cfg["agents"][a]["priority"] = n % 2
    files["state/config.json"] = canonical.dumps(cfg)
    files["schemas/item.schema.json"] = canonical.dumps(ITEM_SCHEMA)
    snap = MemorySnapshot(files)
    coll = snap.config.collections["items"]
    files[coll.doc_path("x1")] = canonical.dumps({"id": "x1", "author": "ada", "score": 1, "likes": ["basil"],
                                                  "notes": [{"id": "n1", "text": "short"}], "title": "hi"})
    files[coll.doc_path("x2")] = canonical.dumps({"id": "x2", "author": "cleo", "topic": "a"})
    # a held conflict on main, on x2's topic: later sets of it join the conflict
    cid = conflict_id("items", "x2", ("topic",))
    held = {"id": cid, "collection": "items", "doc": "x2", "path": ["topic"], "policy": "hold",
            "reason": "policy 'hold': a person decides", "opened_tick": 0, "base": "a",
            "candidates": [{"delta": f"t0-w1-s{a}-00000{n}", "agent": a, "worker": "w1", "tick": 0,
                            "utc": f"2026-05-01T11:00:0{n}.000000Z", "value": v}
                           for n, (a, v) in enumerate((("ada", "b"), ("basil", "c")))]}
    files[f"state/conflicts/{cid}.json"] = canonical.dumps(held)
    return MemorySnapshot(files)


def ops_for(agent: str) -> st.SearchStrategy[Op]:
    doc = st.sampled_from(DOCS)
    return st.one_of(
        st.builds(lambda i, by: Op("incr", "items", i, ("score",), by), doc, st.sampled_from([1, 2, -1])),
        st.builds(lambda i, v: Op("set", "items", i, ("status",), v), doc, st.sampled_from(STATUSES)),
        st.builds(lambda i, v: Op("set", "items", i, ("label",), v), doc, st.sampled_from(("p", "q"))),
        st.builds(lambda i, v: Op("set", "items", i, ("title",), v), doc, st.sampled_from(("hi", "yo", "x" * 20))),
        st.builds(lambda i, v: Op("set", "items", i, ("topic",), v), doc, st.sampled_from(("a", "d"))),
        st.builds(lambda i, v: Op("set", "items", i, ("meta",), v), doc, st.sampled_from(({}, {"k": 1}))),
        st.builds(lambda i, v: Op("incr", "items", i, ("meta", "k"), v), doc, st.sampled_from((1, 2))),
        st.builds(lambda i, v: Op("set", "items", i, ("author",), v), doc, st.sampled_from(AGENTS)),
        st.builds(lambda i: Op("add", "items", i, ("likes",), agent), doc),
        st.builds(lambda i: Op("remove", "items", i, ("likes",), agent), doc),
        st.builds(lambda i, n, t: Op("append", "items", i, ("notes",), {"id": n, "text": t}),
                  doc, st.sampled_from(NOTE_IDS), st.sampled_from(NOTE_TEXTS)),
        st.just(Op("create", "items", "x3", (), {"id": "x3", "author": agent})),
        st.builds(lambda i: Op("delete", "items", i), st.sampled_from(("x2", "x3"))),
    )


_serial = itertools.count(1)


@st.composite
def ticks(draw: st.DrawFn, hot: bool) -> list[Delta]:
    """Deltas in delta order; ``hot``: most ops land on one document's few fields."""
    deltas = []
    for n in range(draw(st.integers(1, 24))):
        agent = draw(st.sampled_from(AGENTS))
        if hot:
            op = st.one_of(
                st.builds(lambda t, i: Op("append", "items", "x1", ("notes",), {"id": i, "text": t}),
                          st.sampled_from(NOTE_TEXTS), st.sampled_from(NOTE_IDS)),
                st.builds(lambda v: Op("set", "items", "x1", ("status",), v), st.sampled_from(STATUSES)),
                st.builds(lambda v: Op("set", "items", "x1", ("label",), v), st.sampled_from(("p", "q"))),
                st.builds(lambda by: Op("incr", "items", "x1", ("score",), by), st.sampled_from([1, 2, -1])),
                ops_for(agent),
            )
        else:
            op = ops_for(agent)
        ops = draw(st.lists(op, min_size=1, max_size=3))
        body = make(tick=1, worker="w1", stream=f"s-{agent}", agent=agent, ops=ops, meta={},
                    utc=f"2026-05-01T12:00:00.{n:06d}Z", delta_id=f"t1-w1-s-{agent}-{n:04d}-{next(_serial)}")
        deltas.append(Delta(id=body["id"], tick=1, utc=body["utc"], worker="w1", stream=body["stream"], agent=agent,
                            ops=tuple(ops), meta={}, body=body, line=canonical.dumps_line(body)))
    return deltas


def one_at_a_time(applier: Applier, deltas: list[Delta]) -> dict[str, str]:
    """The definition of the sequential decision, the slow way: every delta's
    documents recombined from main with every op that stood before it."""
    cfg = applier.cfg
    open_by_doc: dict[DocKey, OpenHere] = {}
    for c in applier.open_conflicts().values():
        open_by_doc.setdefault((c.collection, c.doc), {})[c.path] = c
    accepted: dict[DocKey, list[Entry]] = {}
    refused: dict[str, str] = {}
    for d in deltas:
        mine: dict[DocKey, list[Entry]] = {}
        for op in d.ops:
            mine.setdefault((op.collection, op.id), []).append((d, op))
        reason = None
        for key, ops in mine.items():
            coll = cfg.collections[key[0]]
            path = coll.doc_path(key[1])
            out = combine(coll, key[1], applier.base.read(path), accepted.get(key, []) + ops,
                          open_by_doc.get(key, {}), applier.authority, applier.tick, applier.meanings)
            if out.errors:
                reason = out.errors.get(d.id) or next(iter(out.errors.values()))
            elif out.doc is not None:
                problem = doc_problem(applier.base, coll, key[1], out.doc)
                if problem:
                    reason = f"would make {path} invalid: {problem}"
            if reason:
                break
        if reason:
            refused[d.id] = reason
        else:
            for key, ops in mine.items():
                accepted.setdefault(key, []).extend(ops)
    return refused


PROPERTY = settings(max_examples=int(os.environ.get("FLEET_PROPERTY_EXAMPLES", "100")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@PROPERTY
@given(deltas=ticks(hot=False))
def test_sequential_decides_as_recombining_from_main(world: MemorySnapshot, deltas: list[Delta]) -> None:
    assert Applier(world, world.config, 1).sequential(deltas) == one_at_a_time(Applier(world, world.config, 1), deltas)


@PROPERTY
@given(deltas=ticks(hot=True))
def test_sequential_on_a_hot_document_decides_as_recombining(world: MemorySnapshot, deltas: list[Delta]) -> None:
    assert Applier(world, world.config, 1).sequential(deltas) == one_at_a_time(Applier(world, world.config, 1), deltas)


def _appends(n: int, culprit_at: int) -> list[Delta]:
    deltas = []
    for i in range(n):
        text = "x" * 30 if i == culprit_at else f"note {i}"
        op = Op("append", "items", "x1", ("notes",), {"id": f"m{i}", "text": text[:30]})
        body = make(tick=1, worker="w1", stream="s-basil", agent="basil", ops=[op], meta={},
                    utc=f"2026-05-01T12:00:00.{i:06d}Z", delta_id=f"t1-w1-s-basil-{i:06d}")
        deltas.append(Delta(id=body["id"], tick=1, utc=body["utc"], worker="w1", stream="s-basil", agent="basil",
                            ops=(op,), meta={}, body=body, line=canonical.dumps_line(body)))
    return deltas


def test_a_hot_document_is_combined_once_per_delta(world: MemorySnapshot, monkeypatch: pytest.MonkeyPatch) -> None:
    """k appends to one document with a culprit: k combines of one delta's ops
    each (the sum of entries combined grows as k, not k^2), and the culprit
    and the deltas the schema's maxItems then refuses are named."""
    import fleet.engine.apply as apply_mod

    sizes: list[int] = []
    real = apply_mod.combine

    def counting(*a: Any, **kw: Any) -> Any:
        sizes.append(len(a[3]))
        return real(*a, **kw)

    monkeypatch.setattr(apply_mod, "combine", counting)
    deltas = _appends(40, culprit_at=1)
    refused = Applier(world, world.config, 1).sequential(deltas)
    assert list(refused)[0] == deltas[1].id and "invalid" in refused[deltas[1].id]
    # x1 holds one note and maxItems is 3: m0 and m2 stand, every later one is refused
    assert [d.id for d in deltas if d.id not in refused] == [deltas[0].id, deltas[2].id]
    assert sizes == [1] * 40
    monkeypatch.undo()
    assert refused == one_at_a_time(Applier(world, world.config, 1), deltas)


def _delta(agent: str, n: int, *ops: Op) -> Delta:
    body = make(tick=1, worker="w1", stream=f"s-{agent}", agent=agent, ops=list(ops), meta={},
                utc=f"2026-05-01T12:00:01.{n:06d}Z", delta_id=f"t1-w1-s-{agent}-x{n:05d}")
    return Delta(id=body["id"], tick=1, utc=body["utc"], worker="w1", stream=body["stream"], agent=agent,
                 ops=ops, meta={}, body=body, line=canonical.dumps_line(body))


def test_sets_of_one_field_carry_only_when_the_policy_would_agree(world: MemorySnapshot) -> None:
    """status is lww, label priority, title hold: each a run of sets with one
    culprit, decided as recombining from main decides them."""
    for field, values in (("status", ["open", "closed", "bogus", "open"]), ("label", ["p", "q", "p"]),
                          ("title", ["hi", "yo", "x" * 20, "hi"])):
        deltas = [_delta(AGENTS[n % 4], n, Op("set", "items", "x1", (field,), v)) for n, v in enumerate(values)]
        assert Applier(world, world.config, 1).sequential(deltas) == one_at_a_time(Applier(world, world.config, 1), deltas)


@PROPERTY
@given(deltas=ticks(hot=True))
def test_a_whole_tick_is_the_same_with_and_without_carrying(world: MemorySnapshot, deltas: list[Delta]) -> None:
    """Through merge_tick (the fast pass, the blame of one document, the
    sequential pass): every file of the tick and every verdict is what
    recombining from main everywhere gives."""
    from fleet.delta import Arrival, file_path
    from fleet.engine import merge_tick
    from fleet.engine.apply import Carried

    arrivals = [Arrival("refs/heads/fleet/t1/w1", file_path(d.body), canonical.dumps(d.body)) for d in deltas]
    fast = merge_tick(world, arrivals)
    takes = Carried.takes
    Carried.takes = lambda *a, **kw: False  # type: ignore[method-assign]
    try:
        slow = merge_tick(world, arrivals)
    finally:
        Carried.takes = takes  # type: ignore[method-assign]
    assert (fast.writes, fast.deletes, fast.quarantined, [d.id for d in fast.applied]) == \
        (slow.writes, slow.deletes, slow.quarantined, [d.id for d in slow.applied])
    assert len(fast.applied) + len(fast.quarantined) == len(deltas)
