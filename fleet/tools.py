"""What an agent may do, as tools with JSON Schema inputs, and how calls become ops.

A provider returns tool calls; this module checks each call against its
schema and the world, and turns it into delta ops for the acting agent. The
acting agent is never a parameter: a call cannot act for another agent. A call
that fails is recorded in the delta's ``meta.rejected`` and never applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs

from fleet import canonical, schemas
from fleet.delta import Op
from fleet.ids import is_safe_id, printable

ID = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"}
NOOP = "do_nothing"

TOOLS: list[dict[str, Any]] = [
    {"name": "post", "description": "Publish a new post in a channel.",
     "input_schema": {"type": "object", "additionalProperties": False, "required": ["channel", "title", "body"],
                      "properties": {"channel": ID, "title": {"type": "string", "minLength": 1, "maxLength": 200},
                                     "body": {"type": "string", "maxLength": 4000},
                                     "tags": {"type": "array", "items": {"type": "string", "maxLength": 40}, "maxItems": 10}}}},
    {"name": "comment", "description": "Comment on an existing post.",
     "input_schema": {"type": "object", "additionalProperties": False, "required": ["post", "body"],
                      "properties": {"post": ID, "body": {"type": "string", "minLength": 1, "maxLength": 2000}}}},
    {"name": "react", "description": "React to a post: like, insight, disagree or laugh.",
     "input_schema": {"type": "object", "additionalProperties": False, "required": ["post", "kind"],
                      "properties": {"post": ID, "kind": {"enum": ["like", "insight", "disagree", "laugh"]}}}},
    {"name": "follow", "description": "Follow another agent.",
     "input_schema": {"type": "object", "additionalProperties": False, "required": ["agent"],
                      "properties": {"agent": ID}}},
    {"name": "remember", "description": "Write a short note to your own memory for later ticks.",
     "input_schema": {"type": "object", "additionalProperties": False, "required": ["text"],
                      "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 500}}}},
    {"name": "update_bio", "description": "Replace your own bio.",
     "input_schema": {"type": "object", "additionalProperties": False, "required": ["bio"],
                      "properties": {"bio": {"type": "string", "maxLength": 500}}}},
    {"name": NOOP, "description": "Do nothing this tick, and say why.",
     "input_schema": {"type": "object", "additionalProperties": False, "required": ["reason"],
                      "properties": {"reason": {"type": "string", "maxLength": 500}}}},
]
_VALIDATORS = {t["name"]: jsonschema_rs.validator_for(t["input_schema"]) for t in TOOLS}
REACTION_SCORE = {"like": 1, "insight": 1, "disagree": 0, "laugh": 1}


@dataclass(frozen=True)
class ToolCall:
    name: str
    input: Any


@dataclass
class World:
    """What the tools need to know of the state at main."""

    agents: set[str]
    channels: set[str]
    posts: dict[str, str]  # post id -> author
    following: set[tuple[str, str]] = field(default_factory=set)
    reactions: set[str] = field(default_factory=set)


@dataclass
class Conversion:
    ops: list[Op]
    rejected: list[dict[str, Any]]
    noop: str | None


def to_ops(agent: str, tick: int, calls: list[ToolCall], world: World,
           allowed: tuple[str, ...] | None = None) -> Conversion:
    """Turn one turn's tool calls into ops; reject what is malformed or out of reach.

    ``allowed``: the tools this agent may use (config agents.<id>.actions).
    """
    ops: list[Op] = []
    rejected: list[dict[str, Any]] = []
    dropped = 0
    noop: str | None = None
    for n, call in enumerate(calls, 1):
        try:
            if not isinstance(call.name, str) or not is_safe_id(call.name):
                raise _Reject("the tool's name is not a tool name")
            if allowed is not None and call.name not in allowed and call.name != NOOP:
                raise _Reject(f"tool {call.name!r} is not among this agent's actions")
            try:
                canonical.check(call.input, max_depth=INPUT_DEPTH)
            except canonical.JSONProblem as e:
                raise _Reject(f"input is not JSON fleet can keep: {e}") from None
            new = _one(agent, tick, n, call, world)
        except _Reject as e:
            if len(rejected) < MAX_REJECTED:
                rejected.append(_rejection(call, str(e)))
            else:
                dropped += 1
            continue
        if new is None:
            noop = call.input.get("reason") or "no action"
        else:
            ops.extend(new)
    if dropped:
        rejected.append({"tool": "", "reason": f"{dropped} more rejected call(s) not recorded (at most {MAX_REJECTED} are)"})
    if not ops and noop is None:
        noop = "no valid action" if rejected else "no action"
    return Conversion(ops, rejected, noop if not ops else None)


class _Reject(Exception):
    pass


# A rejected call is recorded compactly, so that what a model sends can never
# push the delta past limits.max_delta_bytes and cost the turn's valid calls.
MAX_REJECTED = 20
EXCERPT = 200
# A tool input may nest 48 levels: the delta wraps it at most 16 deeper (a
# document in an op in a delta), within the 64 the merge reads.
INPUT_DEPTH = canonical.MAX_DEPTH - 16
KEPT_DEPTH = 8  # a rejected input is kept whole only if this shallow (and small)


def _rejection(call: ToolCall, reason: str) -> dict[str, Any]:
    """What a rejected call was, in bounded size: its tool, the reason, and the
    input as sent if it is small and JSON fleet can keep, else its size, digest
    and first characters."""
    name = call.name if isinstance(call.name, str) else repr(call.name)
    out: dict[str, Any] = {"tool": printable(name, 80), "reason": printable(reason, 2 * EXCERPT)}
    try:
        canonical.check(call.input, max_depth=KEPT_DEPTH)
        line = canonical.dumps_line(call.input)
    except (canonical.JSONProblem, TypeError, ValueError):  # not JSON fleet can write: describe it
        line = repr(call.input)[: 4 * EXCERPT].encode("utf-8", errors="replace")
    else:
        if len(line) <= 2 * EXCERPT:
            return {**out, "input": call.input}
    text = line.decode("utf-8", errors="replace")
    return {**out, "input_bytes": len(line), "input_digest": canonical.digest_line(line),
            "input_excerpt": printable(text, EXCERPT)}


def _one(agent: str, tick: int, n: int, call: ToolCall, world: World) -> list[Op] | None:
    v = _VALIDATORS.get(call.name)
    if v is None:
        raise _Reject(f"unknown tool {call.name!r}")
    try:
        problem = schemas.first_error(v, call.input)
    except (ValueError, RecursionError) as e:  # the validator gave up on it
        problem = f"cannot be checked ({type(e).__name__})"
    if problem:
        raise _Reject(f"input does not match the tool's schema: {problem}")
    a = call.input
    if call.name == NOOP:
        return None
    if call.name == "post":
        if a["channel"] not in world.channels:
            raise _Reject(f"no channel {a['channel']!r}")
        pid = f"{agent}-t{tick}-{n}"
        doc = {"id": pid, "channel": a["channel"], "author": agent, "title": a["title"], "body": a["body"],
               "tick": tick, "tags": sorted(set(a.get("tags", []))), "score": 0, "comment_count": 0}
        world.posts[pid] = agent
        return [Op("create", "posts", pid, (), doc), Op("incr", "channels", a["channel"], ("post_count",), 1),
                Op("incr", "agents", agent, ("post_count",), 1)]
    if call.name == "comment":
        if a["post"] not in world.posts:
            raise _Reject(f"no post {a['post']!r}")
        cid = f"{agent}-t{tick}-{n}"
        return [Op("create", "comments", cid, (), {"id": cid, "post": a["post"], "author": agent, "body": a["body"], "tick": tick}),
                Op("incr", "posts", a["post"], ("comment_count",), 1)]
    if call.name == "react":
        author = world.posts.get(a["post"])
        if author is None:
            raise _Reject(f"no post {a['post']!r}")
        rid = f"{agent}-{a['post']}-{a['kind']}"
        if rid in world.reactions:
            raise _Reject(f"already reacted {a['kind']} to {a['post']}")
        world.reactions.add(rid)
        ops = [Op("create", "reactions", rid, (), {"id": rid, "post": a["post"], "agent": agent, "kind": a["kind"], "tick": tick})]
        if REACTION_SCORE[a["kind"]]:
            ops.append(Op("incr", "posts", a["post"], ("score",), REACTION_SCORE[a["kind"]]))
            if author != agent:
                ops.append(Op("incr", "agents", author, ("karma",), 1))
        return ops
    if call.name == "follow":
        other = a["agent"]
        if other == agent or other not in world.agents:
            raise _Reject(f"cannot follow {other!r}")
        if (agent, other) in world.following:
            raise _Reject(f"already following {other}")
        world.following.add((agent, other))
        fid = f"{agent}--{other}"
        return [Op("create", "follows", fid, (), {"id": fid, "follower": agent, "followee": other, "tick": tick})]
    if call.name == "remember":
        return [Op("append", "agents", agent, ("memory",), {"id": f"m{tick}-{n}", "tick": tick, "text": a["text"]})]
    if call.name == "update_bio":
        return [Op("set", "agents", agent, ("bio",), a["bio"])]
    raise _Reject(f"unknown tool {call.name!r}")  # pragma: no cover - guarded by _VALIDATORS
