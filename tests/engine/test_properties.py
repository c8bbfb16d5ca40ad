"""Properties of the merge engine over generated ticks of the example world.

The generator mixes deltas that apply, deltas out of an agent's authority,
deltas whose result breaks a schema, deltas that compete for one field, ahead
ticks, unknown agents and collections, copies, reused ids and files that are
not deltas at all. Whatever it draws, the engine must be order-independent,
idempotent, replayable and all-or-nothing per delta.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet import canonical, schemas
from fleet.commands.init import init
from fleet.delta import Arrival, Delta, Op, file_path, from_body, make
from fleet.engine import TickResult, conflict_id, merge_tick, replay_tick
from fleet.engine.apply import Applier
from fleet.state import MemorySnapshot

AGENTS = ("ada", "basil", "cleo", "dara", "eli", "fen")
POSTS = ("ada-1", "cleo-1")
CHANNELS = ("general", "ideas", "tools")
WORKERS = ("w1", "w2", "w3")
UTCS = tuple(f"2026-05-01T12:00:0{i}.000000Z" for i in range(4))  # few, so ties happen

# Counters no generated op sets: their change is the sum of applied increments.
# (agents/fen karma is also set by the generator, to make mixed conflicts.)
COUNTERS = (
    [("posts", p, f) for p in POSTS for f in ("score", "comment_count")]
    + [("agents", a, "karma") for a in AGENTS if a != "fen"]
    + [("channels", c, "post_count") for c in CHANNELS]
)

# Reasons decided before any op is looked at.
TRIAGE = ("is ahead of the next tick", "was merged long ago", "is not in state/config.json agents",
          "is reused with different content", "was applied in tick", "already took its turn of tick")

PROPERTY = settings(max_examples=int(os.environ.get("FLEET_PROPERTY_EXAMPLES", "100")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> MemorySnapshot:
    """The example world of a fresh `fleet init`, in memory."""
    root = tmp_path_factory.mktemp("world") / "fleet"
    init(root)
    return MemorySnapshot({
        p.relative_to(root).as_posix(): p.read_bytes()
        for top in ("state", "schemas")
        for p in sorted((root / top).rglob("*"))
        if p.is_file()
    })


# -- generating ticks --------------------------------------------------------------


OWN_POST = {"ada": "ada-1", "cleo": "cleo-1"}


@functools.cache
def allowed_ops(agent: str) -> st.SearchStrategy[Op]:
    """Ops config.json lets the agent do; several compete with each other."""
    post = OWN_POST.get(agent, "ada-1")
    tagged = st.sampled_from(POSTS) if agent == "ada" else st.just(post)  # ada has a grant on tags
    options = [
        st.builds(lambda p, by: Op("incr", "posts", p, ("score",), by), st.sampled_from(POSTS), st.sampled_from([-2, 1, 3])),
        st.builds(lambda p, by: Op("incr", "posts", p, ("comment_count",), by), st.sampled_from(POSTS), st.integers(0, 2)),
        st.just(Op("incr", "posts", "ada-1", ("comment_count",), -1)),  # allowed once: the count is 1
        st.builds(lambda a, by: Op("incr", "agents", a, ("karma",), by), st.sampled_from(AGENTS), st.sampled_from([1, -1])),
        st.builds(lambda c, by: Op("incr", "channels", c, ("post_count",), by), st.sampled_from(CHANNELS), st.integers(0, 2)),
        st.builds(lambda k, c: Op(k, "channels", c, ("members",), agent), st.sampled_from(["add", "remove"]), st.sampled_from(CHANNELS)),
        st.builds(lambda v: Op("set", "agents", agent, ("bio",), v), st.sampled_from(["", "hello", "hi"])),
        st.builds(lambda i, t: Op("append", "agents", agent, ("memory",), {"id": i, "text": t}),
                  st.sampled_from(["m1", "m2"]), st.sampled_from(["t1", "t2"])),
        st.just(Op("set", "agents", agent, ("memory",), [])),  # competes with appends
        st.builds(lambda i, body: Op("create", "comments", i, (), {"id": i, "post": "ada-1", "author": agent, "body": body}),
                  st.sampled_from(["k1", "k2"]), st.sampled_from(["hi", "yo"])),
        st.just(Op("create", "reactions", "r1", (), {"id": "r1", "post": "cleo-1", "agent": agent, "kind": "like"})),
    ]
    if agent in OWN_POST or agent == "ada":
        options += [
            st.builds(lambda p, k, v: Op(k, "posts", p, ("tags",), v), tagged, st.sampled_from(["add", "remove"]),
                      st.sampled_from(["a", "b", "history", "testing"])),
            st.builds(lambda p, v: Op("set", "posts", p, ("tags",), v), tagged, st.sampled_from([["a"], ["b"]])),
        ]
    if agent in OWN_POST:
        options.append(st.builds(lambda v: Op("set", "posts", post, ("title",), v), st.sampled_from(["T1", "T2"])))
    if agent == "fen":  # fen's karma is also set: a mixed conflict with increments
        options += [st.builds(lambda v: Op("set", "agents", "fen", ("karma",), v), st.sampled_from([5, 7])),
                    st.just(Op("delete", "reactions", "fen-ada-1-like"))]
    if agent == "eli":
        options.append(st.just(Op("delete", "comments", "eli-1")))
    if agent == "cleo":
        options.append(st.just(Op("delete", "posts", "cleo-1")))
    return st.one_of(options)


@functools.cache
def refused_ops(agent: str) -> st.SearchStrategy[Op]:
    """Ops outside the agent's authority, or whose result breaks a schema or JSON."""
    other = "basil" if agent != "basil" else "dara"
    return st.one_of(
        st.sampled_from([
            Op("incr", "posts", "ada-1", ("score",), 2**63 - 1),  # three of these overflow 64 bits
            Op("incr", "posts", "cleo-1", ("comment_count",), -1),  # below the minimum of 0
            Op("incr", "channels", "ideas", ("post_count",), -2),
            Op("incr", "agents", other, ("karma",), 0.5),  # karma is an integer
            Op("set", "agents", other, ("bio",), "not yours"),
            Op("set", "agents", agent, ("bio",), "x" * 501),
            Op("set", "agents", agent, ("mood",), "calm"),  # not in the agent schema
            Op("set", "agents", agent, ("memory", "m1"), {"id": "m1", "text": "t1"}),  # through a list
            Op("append", "agents", other, ("memory",), {"id": "m1", "text": "t1"}),
            Op("set", "posts", "cleo-1" if agent != "cleo" else "ada-1", ("title",), "mine"),
            Op("set", "posts", OWN_POST.get(agent, "ada-1"), ("tags",), ["a", "a"]),
            Op("remove", "channels", "general", ("members",), other),
            Op("create", "comments", "k1", (), {"id": "k1", "post": "ada-1", "author": other, "body": "hi"}),
            Op("create", "comments", "k2", (), {"id": "k2", "post": "ada-1", "author": agent, "body": ""}),
            Op("delete", "comments", "eli-1") if agent != "eli" else Op("delete", "posts", "ada-1"),
            Op("incr", "widgets", "w", ("n",), 1),  # no such collection
            Op("incr", "posts", "nope", ("score",), 1),  # no such document
        ]),
    )


def ops_for(agent: str) -> st.SearchStrategy[Op]:
    """Mostly allowed ops, often competing; about one in four refused."""
    return st.one_of(allowed_ops(agent), allowed_ops(agent), allowed_ops(agent), refused_ops(agent))


def arrival(body: dict[str, Any], source: str | None = None, path: str | None = None) -> Arrival:
    return Arrival(source or f"refs/heads/fleet/t{body['tick']}/{body['worker']}", path or file_path(body), canonical.dumps(body))


@st.composite
def ticks(draw: st.DrawFn, max_deltas: int = 10, tick: int = 1, tag: str = "s") -> list[Arrival]:
    """The delta files the merge of ``tick`` finds: deltas (some late, some
    ahead), copies, second turns of a stream, forgeries and junk. ``tag`` keeps
    stream names apart."""
    bodies: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, max_deltas))):
        agent = draw(st.sampled_from(AGENTS * 3 + ("zed",)))  # zed is in no config
        ops = draw(st.lists(ops_for(agent), max_size=3))
        meta: dict[str, Any] = {} if ops else {"noop": "nothing to do"}
        if draw(st.booleans()):
            meta["usage"] = {"input_tokens": draw(st.integers(0, 50)), "output_tokens": 3, "cost_usd": 0.001}
        t = draw(st.sampled_from([tick, tick, tick, tick + 1, max(1, tick - 1)]))  # ahead, late
        worker = draw(st.sampled_from(WORKERS))
        bodies.append(make(tick=t, worker=worker, stream=f"{tag}{i}", agent=agent, ops=ops, meta=meta,
                           utc=draw(st.sampled_from(UTCS)), delta_id=f"t{t}-{worker}-{tag}{i}-{i:04d}"))
    # rivals: the same agent, in another stream, changes a field another delta
    # changes, to another value: conflicts that a policy decides or holds;
    # copycats: any agent sends the very same create
    for k, b in enumerate(draw(st.lists(st.sampled_from(bodies), max_size=3))):
        for op in b["ops"]:
            if op["op"] not in ("create", "set", "append"):
                continue
            agent, rival = b["agent"], copy.deepcopy(op)
            if op["op"] == "create":
                agent = draw(st.sampled_from(AGENTS))
            elif op["op"] == "set":
                rival["value"] = ["rival"] if isinstance(op["value"], list) else 9 if isinstance(op["value"], int) else "rival"
            else:
                rival["item"]["text"] = "rival"
            rival_worker = draw(st.sampled_from(WORKERS))
            bodies.append(make(tick=b["tick"], worker=rival_worker, stream=f"{tag}r{k}", agent=agent,
                               ops=[Op.from_json(rival)], meta={}, utc=draw(st.sampled_from(UTCS)),
                               delta_id=f"t{b['tick']}-{rival_worker}-{tag}r{k}"))
            break
    arrivals = [arrival(b) for b in bodies]
    kinds = ["copy", "reuse", "junk", "misplaced", "again"]
    for j, kind in enumerate(draw(st.lists(st.sampled_from(kinds), max_size=3))):
        b = draw(st.sampled_from(bodies))
        if kind == "again":  # a second turn of its stream: another id, maybe another worker and time
            worker = draw(st.sampled_from(WORKERS))
            again = make(tick=b["tick"], worker=worker, stream=b["stream"], agent=b["agent"],
                         ops=[Op.from_json(o) for o in b["ops"]], meta=b["meta"], utc=draw(st.sampled_from(UTCS)),
                         delta_id=f"t{b['tick']}-{worker}-{b['stream']}-again{j}")
            arrivals.append(arrival(again, source="inbox"))
        elif kind == "copy":
            arrivals.append(arrival(b, source="inbox"))
        elif kind == "reuse":  # one id, other content
            twin = {**b, "ops": b["ops"] + [Op("incr", "posts", "ada-1", ("score",), 100 + j).to_json()]}
            arrivals.append(arrival(twin, source="inbox"))
        elif kind == "junk":
            arrivals.append(Arrival("inbox", f"deltas/{b['worker']}/junk/{j}.json", b'{"id": "half a file'))
        else:
            other = next(w for w in WORKERS if w != b["worker"])
            arrivals.append(arrival(b, path=f"deltas/{other}/{b['stream']}/{b['id']}.json"))
    return arrivals


# -- looking at results --------------------------------------------------------------


def after(snap: MemorySnapshot, r: TickResult) -> MemorySnapshot:
    return snap.after(r.writes, r.deletes)


def doc(snap: MemorySnapshot, coll: str, doc_id: str) -> Any:
    data = snap.read(snap.config.collections[coll].doc_path(doc_id))
    return None if data is None else json.loads(data)


def counter(snap: MemorySnapshot, coll: str, doc_id: str, field: str) -> Any:
    d = doc(snap, coll, doc_id)
    return None if d is None else d.get(field, 0)


def incr_sum(deltas: list[Delta], coll: str, doc_id: str, field: str) -> Any:
    return sum(op.arg for d in deltas for op in d.ops
               if op.op == "incr" and (op.collection, op.id, op.path) == (coll, doc_id, (field,)))


def signature(r: TickResult) -> tuple[Any, ...]:
    """Everything a merge decides, in a comparable form."""
    return (
        r.writes,
        r.deletes,
        [d.id for d in r.applied],
        sorted(canonical.dumps_line(q) for q in r.quarantined),
        r.held,
        r.late,
        r.docs_changed,
        len(r.duplicates),
    )


def identity(a: Arrival) -> tuple[str, str] | None:
    """(id, digest) of a parseable delta file, else None."""
    try:
        body = canonical.parse(a.data)
    except canonical.JSONProblem:
        return None
    return body["id"], canonical.digest(body)


def within_authority(base: MemorySnapshot, creates: dict[tuple[str, str], Any], agent: str, op: Op) -> bool:
    """What state/config.json allows ``agent`` to do with ``op``; the owner
    comes from the document (on main, or created in this tick)."""
    cfg = base.config
    coll = cfg.collections[op.collection]
    target = op.arg if op.op == "create" else creates.get((op.collection, op.id)) or doc(base, op.collection, op.id)
    owner = coll.owner_of(op.id, target)
    rules = cfg.agents[agent].grants.get(coll.name, ()) + (coll.own if owner == agent else ()) + coll.others
    value = op.arg if op.op in ("set", "add", "remove") else None
    return any(rule.allows(op.op, op.path, value, agent) for rule in rules)


def assert_each_arrival_lands_once(arrivals: list[Arrival], r: TickResult) -> None:
    assert len(r.applied) + len(r.quarantined) + len(r.duplicates) == len(arrivals)
    ids = [d.id for d in r.applied]
    assert len(ids) == len(set(ids))
    turns = [(d.tick, d.agent, d.stream) for d in r.applied]
    assert len(turns) == len(set(turns)), "a stream took two turns in one tick"
    held_back = Counter((q["source"], q["path"]) for q in r.quarantined) + Counter((a.source, a.path) for a in r.duplicates)
    rest = Counter((a.source, a.path) for a in arrivals)
    rest.subtract(held_back)
    assert all(v >= 0 for v in rest.values()), "a quarantine record or duplicate names no arrival"
    assert sorted(p for (_, p), n in rest.items() for _ in range(n)) == sorted(file_path(d.body) for d in r.applied)
    applied = {(d.id, d.digest) for d in r.applied}
    assert not any("delta" in q and (q["delta"]["id"], canonical.digest(q["delta"])) in applied for q in r.quarantined)


def assert_nothing_else_lost(base: MemorySnapshot, r: TickResult) -> None:
    """A delta the merge refused (not for its tick, its agent or its id) does
    not apply on top of the applied deltas before it in delta order: it was
    refused for what it does, and bad input took no good delta down with it."""
    for q in r.quarantined:
        if "delta" in q and not any(t in q["reason"] for t in TRIAGE):
            refused = from_body(q["delta"], Arrival("quarantine", file_path(q["delta"]), b""), base.config.limits)
            # the merge's own rules (a replay takes what a merge decided, under the rules of its day)
            before = sorted([d for d in r.applied if d.key < refused.key] + [refused], key=lambda d: d.key)
            assert Applier(base, base.config, base.tick + 1).run(before).culprits, (refused.id, q["reason"])


def assert_files_valid(snap: MemorySnapshot) -> None:
    """Every document, conflict and the fleet document on 'main' is valid."""
    cfg = snap.config
    for p in snap.paths():
        parts = p.split("/")
        if parts[0] != "state" or p in ("state/config.json",) or parts[1] in ("ledger", "quarantine"):
            continue
        if len(parts) == 2 and p != "state/fleet.json":
            continue  # the world's declarations (tools, prompt), checked by fleet.world
        body = json.loads(snap.files[p])
        if p == "state/fleet.json":
            validator = schemas.protocol("fleet")
        elif parts[1] == "conflicts":
            validator = schemas.protocol("conflict")
        else:
            validator = snap.validator(parts[1])
            assert cfg.collections[parts[1]].doc_path(body["id"]) == p
        assert schemas.first_error(validator, body) is None, (p, body)


# -- (a) order ---------------------------------------------------------------------


@PROPERTY
@given(arrivals=ticks(), later=ticks(max_deltas=6, tick=2, tag="n"), order=st.randoms(use_true_random=False))
def test_any_arrival_order_gives_the_same_tick(
    base: MemorySnapshot, arrivals: list[Arrival], later: list[Arrival], order: Any
) -> None:
    shuffled = list(arrivals)
    order.shuffle(shuffled)
    one, two = merge_tick(base, arrivals), merge_tick(base, shuffled)
    assert signature(one) == signature(two)
    # and again on top of a tick that left conflicts, ledger and quarantine behind
    s1 = after(base, one)
    both = later + arrivals
    reordered = list(both)
    order.shuffle(reordered)
    assert signature(merge_tick(s1, both)) == signature(merge_tick(s1, reordered))


# -- (b) idempotence -----------------------------------------------------------------


@PROPERTY
@given(arrivals=ticks(), order=st.randoms(use_true_random=False))
def test_merging_the_same_files_again_changes_nothing(base: MemorySnapshot, arrivals: list[Arrival], order: Any) -> None:
    r1 = merge_tick(base, arrivals)
    s1 = after(base, r1)
    resent = list(arrivals)
    order.shuffle(resent)
    r2 = merge_tick(s1, resent)
    assert not r2.applied, [d.id for d in r2.applied]
    assert not r2.quarantined, r2.quarantined
    assert len(r2.duplicates) == len(arrivals)
    s2 = after(s1, r2)
    unchanged = {p: b for p, b in s1.files.items() if p != "state/fleet.json"}
    assert {p: b for p, b in s2.files.items() if p != "state/fleet.json"} == unchanged


@PROPERTY
@given(arrivals=ticks(), split=st.data())
def test_a_set_split_over_two_merges_then_resent_applies_each_delta_once(
    base: MemorySnapshot, arrivals: list[Arrival], split: st.DataObject
) -> None:
    first = [a for a in arrivals if split.draw(st.booleans())]
    r1 = merge_tick(base, first)
    s1 = after(base, r1)
    r2 = merge_tick(s1, arrivals)  # everything, the first part again included
    s2 = after(s1, r2)
    r3 = merge_tick(s2, arrivals)
    assert not r3.applied and not r3.quarantined
    applied = r1.applied + r2.applied
    ids = [d.id for d in applied]
    assert len(ids) == len(set(ids)), "a delta was applied twice"
    # every delta ends applied or quarantined, exactly once over both merges
    decided = Counter((d.id, d.digest) for d in applied) + Counter(
        (q["delta"]["id"], canonical.digest(q["delta"])) for q in r1.quarantined + r2.quarantined if "delta" in q)
    assert {i: decided[i] for i in {identity(a) for a in arrivals} - {None}} == dict.fromkeys(decided, 1)
    for coll, doc_id, field in COUNTERS:
        end = counter(s2, coll, doc_id, field)
        if end is not None:
            assert end - counter(base, coll, doc_id, field) == incr_sum(applied, coll, doc_id, field), (coll, doc_id, field)
    assert json.loads(s2.read("state/fleet.json"))["totals"]["applied"] == len(applied)
    assert_files_valid(s2)


# -- (c) replay ----------------------------------------------------------------------


@PROPERTY
@given(arrivals=ticks(), later=ticks(max_deltas=6, tick=2, tag="n"))
def test_replay_equals_the_incremental_merge(base: MemorySnapshot, arrivals: list[Arrival], later: list[Arrival]) -> None:
    r1 = merge_tick(base, arrivals)
    re1 = replay_tick(base, list(reversed(r1.applied)), r1.quarantined)
    assert (re1.writes, re1.deletes, re1.late) == (r1.writes, r1.deletes, r1.late)
    # a second tick: late deltas, open conflicts to join, a ledger to extend
    s1 = after(base, r1)
    r2 = merge_tick(s1, later + arrivals)
    re2 = replay_tick(s1, r2.applied, list(reversed(r2.quarantined)))
    assert (re2.writes, re2.deletes, re2.late) == (r2.writes, r2.deletes, r2.late)


# -- (d) all or nothing --------------------------------------------------------------


@PROPERTY
@given(arrivals=ticks(max_deltas=12))
def test_each_delta_applies_whole_or_not_at_all(base: MemorySnapshot, arrivals: list[Arrival]) -> None:
    r = merge_tick(base, arrivals)
    s = after(base, r)
    assert_each_arrival_lands_once(arrivals, r)
    # counters move by exactly the increments of applied deltas: a refused
    # delta moved none of its counters, an applied one moved all of them
    for coll, doc_id, field in COUNTERS:
        end = counter(s, coll, doc_id, field)
        if end is not None:
            assert end - counter(base, coll, doc_id, field) == incr_sum(r.applied, coll, doc_id, field), (coll, doc_id, field)
    # a document that was not there before comes from an applied delta's create
    creates = {(op.collection, op.id): op.arg for d in r.applied for op in d.ops if op.op == "create"}
    for coll in ("comments", "reactions"):
        for p in s.under(f"state/{coll}"):
            if base.read(p) is None:
                body = json.loads(s.read(p))
                assert creates.get((coll, body["id"])) == body
    # every op of an applied delta is within its agent's authority
    for d in r.applied:
        for op in d.ops:
            assert within_authority(base, creates, d.agent, op), (d.id, op)
    # every member an applied delta adds is there, unless the document is
    # gone or the field is held in a conflict
    for d in r.applied:
        for op in d.ops:
            if op.op == "add" and conflict_id(op.collection, op.id, op.path) not in r.held:
                target = doc(s, op.collection, op.id)
                assert target is None or op.arg in target[op.path[0]], (d.id, op)
    assert_nothing_else_lost(base, r)
    assert_files_valid(s)
    f = json.loads(s.read("state/fleet.json"))
    assert f["last"]["applied"] == len(r.applied) and f["last"]["quarantined"] == len(r.quarantined)
    # tokens count whether the delta applied or not: they were spent. A quarantined delta
    # counts what it says, read from its record (the delta, or the file's JSON if the
    # schema refused it), each figure at most the delta schema's 10^9
    spent = [d.meta for d in r.applied] + [meta_of(q) for q in r.quarantined]
    assert f["last"]["usage"]["input_tokens"] == sum(input_tokens(m) for m in spent)


def meta_of(record: dict) -> dict:
    """A quarantine record's delta meta, as far as its content can be read."""
    body = record.get("delta")
    if body is None:
        try:
            body = json.loads(record.get("raw", ""))
        except ValueError:
            return {}
    meta = body.get("meta") if isinstance(body, dict) else None
    return meta if isinstance(meta, dict) else {}


def input_tokens(meta: dict) -> int:
    usage = meta.get("usage")
    v = usage.get("input_tokens", 0) if isinstance(usage, dict) else 0
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v or v in (float("inf"), float("-inf")):
        return 0
    return math.ceil(min(max(v, 0), 10 ** 9))


# Ops that basil, dara, eli and fen may not do, on documents that sort
# before, after and beside posts/ada-1.
ELSEWHERE = (
    Op("set", "agents", "ada", ("bio",), "not yours"),
    Op("set", "posts", "cleo-1", ("title",), "not yours"),
    Op("create", "reactions", "x1", (), {"id": "x1", "post": "ada-1", "agent": "ada", "kind": "like"}),
    Op("incr", "widgets", "w", ("n",), 1),
    Op("set", "posts", "ada-1", ("title",), "not yours"),
)


@PROPERTY
@given(plan=st.lists(st.tuples(st.sampled_from(("basil", "dara", "eli", "fen")), st.sampled_from([-1, -1, 1]),
                               st.sampled_from((None,) + ELSEWHERE)), min_size=2, max_size=6))
def test_a_refused_delta_takes_no_valid_one_down(base: MemorySnapshot, plan: list[tuple[str, int, Op | None]]) -> None:
    """Deltas compete for posts/ada-1's one comment (comment_count >= 0);
    some also carry an op that is refused on its own."""
    bodies = [make(tick=1, worker="w1", stream=f"s{i}", agent=agent, meta={}, utc=UTCS[0], delta_id=f"t1-w1-s{i}",
                   ops=[Op("incr", "posts", "ada-1", ("comment_count",), by)] + ([bad] if bad else []))
              for i, (agent, by, bad) in enumerate(plan)]
    r = merge_tick(base, [arrival(b) for b in bodies])
    assert {d.id for d in r.applied}.isdisjoint(b["id"] for b, (_, _, bad) in zip(bodies, plan) if bad)
    assert_nothing_else_lost(base, r)
    count = counter(after(base, r), "posts", "ada-1", "comment_count")
    assert count == 1 + incr_sum(r.applied, "posts", "ada-1", "comment_count") and count >= 0


# -- (f) the sequential pass's shortcut ----------------------------------------------


@PROPERTY
@given(arrivals=ticks(max_deltas=14), later=ticks(max_deltas=6, tick=2, tag="n"))
def test_carrying_commutative_documents_forward_decides_as_recombining_does(
    base: MemorySnapshot, arrivals: list[Arrival], later: list[Arrival]
) -> None:
    """Once a tick has a culprit, documents whose ops so far replay one delta
    at a time (increments, adds, agreeing sets, appends) are carried forward
    delta by delta instead of recombined from the base; every decision and
    every byte must be what recombining gives."""
    from fleet.engine.apply import Carried

    fast = merge_tick(base, arrivals)
    fast2 = merge_tick(after(base, fast), later + arrivals)
    takes = Carried.takes
    Carried.takes = lambda *a, **kw: False  # type: ignore[method-assign]
    try:
        slow = merge_tick(base, arrivals)
        slow2 = merge_tick(after(base, slow), later + arrivals)
    finally:
        Carried.takes = takes  # type: ignore[method-assign]
    assert signature(fast) == signature(slow)
    assert signature(fast2) == signature(slow2)
