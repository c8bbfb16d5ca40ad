"""How a model's tool calls become delta ops, by the tools the world declares.

A provider returns tool calls; this module checks each call against the
agent's own tools (fleet.world): the input schema, then the preconditions on
main as the tick started and on what the same turn made, and turns the
effects into ops for the acting agent. The acting agent is never a parameter:
a call cannot act for another agent, and the merge's authority rules still
decide. A call that fails is recorded in the delta's ``meta.rejected`` and
never applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet import canonical, schemas, tick_messages, tick_tasks
from fleet.authority import Authority, refusal_of
from fleet.delta import Op
from fleet.ids import is_safe_id, printable
from fleet.refs import MISSING, Scope, render
from fleet.world import NOOP, Tool, View


@dataclass(frozen=True)
class ToolCall:
    name: str
    input: Any


def whole_numbers(value: Any) -> Any:
    """``value`` with each float that holds a whole number (``2.0``, ``-0.0``) written
    as that number (``2``, ``0``): JSON tells them apart in no way, and a schema's
    ``integer`` takes both, so a model's ``2.0`` would turn a world's whole-number
    fields (counters added to, ids numbered) into ``7.0`` for good. Beyond 2**53 a
    float holds no exact whole number: it is left as it is."""
    if type(value) is float:
        return int(value) if value.is_integer() and abs(value) <= 2**53 else value
    if type(value) is dict:
        return {k: whole_numbers(v) for k, v in value.items()}
    if type(value) is list:
        return [whole_numbers(v) for v in value]
    return value


@dataclass
class Conversion:
    ops: list[Op]
    rejected: list[dict[str, Any]]
    noop: str | None
    tasks: list[dict[str, Any]] = field(default_factory=list)  # outcomes of task tools (fleet.tick_tasks)
    messages: list[dict[str, Any]] = field(default_factory=list)  # send_message calls (fleet.tick_messages)
    acks: list[str] = field(default_factory=list)  # ack_message calls


def to_ops(agent: str, tick: int, calls: list[ToolCall], view: View, tools: dict[str, Tool],
           declared: frozenset[str] | set[str] = frozenset(), *, task: dict[str, Any] | None = None,
           task_tools: tuple[str, ...] = (), message_tools: tuple[str, ...] = (),
           inbox_ids: frozenset[str] | set[str] = frozenset(), cfg: Any = None) -> Conversion:
    """Turn one turn's tool calls into ops; reject what is malformed or out of reach.

    ``tools``: the tools this agent may use (config agents.<id>.actions);
    ``declared``: every tool of the world, to say why another is refused;
    ``task``: the task the agent holds this tick, which ``task_tools`` report on;
    ``message_tools``: the bus's tools it has, ``inbox_ids`` the messages it was
    shown, ``cfg`` the config they are checked against.
    """
    turn = _Turn(view)
    outcomes: list[dict[str, Any]] = []
    said: dict[str, list[Any]] = {"messages": [], "acks": []}
    ops: list[Op] = []
    rejected: list[dict[str, Any]] = []
    dropped = 0
    noop: str | None = None
    for n, call in enumerate(calls, 1):
        try:
            if not isinstance(call.name, str) or not is_safe_id(call.name):
                raise _Reject("the tool's name is not a tool name")
            if call.name in tick_tasks.TOOLS and call.name in task_tools:
                outcomes.append(_task_call(call, task, outcomes))
                continue
            if call.name in tick_messages.TOOLS and call.name in message_tools:
                key, entry = _message_call(call, agent, cfg, inbox_ids, said)
                said[key].append(entry)
                continue
            if call.name not in tools and call.name != NOOP:
                if call.name in declared or call.name in tick_tasks.TOOLS or call.name in tick_messages.TOOLS:
                    raise _Reject(f"tool {call.name!r} is not among this agent's actions")
                raise _Reject(f"unknown tool {call.name!r}")
            try:
                canonical.check(call.input, max_depth=INPUT_DEPTH)
            except canonical.JSONProblem as e:
                raise _Reject(f"input is not JSON fleet can keep: {e}") from None
            call = ToolCall(call.name, whole_numbers(call.input))
            new = turn.call(agent, tick, n, call, tools.get(call.name))
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
    acted = outcomes or said["messages"] or said["acks"]
    if not ops and noop is None and not acted:
        noop = "no valid action" if rejected else "no action"
    return Conversion(ops, rejected, noop if not ops and not acted else None, outcomes, said["messages"], said["acks"])


def _task_call(call: ToolCall, task: dict[str, Any] | None, done: list[dict[str, Any]]) -> dict[str, Any]:
    """The outcome a task tool's call reports, or why it is rejected."""
    try:
        canonical.check(call.input, max_depth=4)
    except canonical.JSONProblem as e:
        raise _Reject(f"input is not JSON fleet can keep: {e}") from None
    problem = schemas.first_error(_TASK_VALIDATORS[call.name], call.input)
    if problem:
        raise _Reject(f"input does not match the tool's schema: {problem}")
    if done:
        raise _Reject(f"the outcome of task {done[0]['task']} is reported already this turn")
    try:
        return tick_tasks.outcome(task, call.name, call.input)
    except ValueError as e:
        raise _Reject(str(e)) from None


_TASK_VALIDATORS = {n: schemas.compile_schema(d["input_schema"], f"fleet's tool {n}")
                    for n, d in tick_tasks.DEFINITIONS.items()}
_MESSAGE_VALIDATORS = {n: schemas.compile_schema(d["input_schema"], f"fleet's tool {n}")
                       for n, d in tick_messages.DEFINITIONS.items()}
_SAID_LIMITS = {"messages": tick_messages.MAX_SENT, "acks": tick_messages.MAX_ACKS}


def _message_call(call: ToolCall, agent: str, cfg: Any, inbox_ids: frozenset[str] | set[str],
                  said: dict[str, list[Any]]) -> tuple[str, Any]:
    """What a message tool's call adds to the delta, or why it is rejected."""
    try:
        canonical.check(call.input, max_depth=4)
    except canonical.JSONProblem as e:
        raise _Reject(f"input is not JSON fleet can keep: {e}") from None
    problem = schemas.first_error(_MESSAGE_VALIDATORS[call.name], call.input)
    if problem:
        raise _Reject(f"input does not match the tool's schema: {problem}")
    if cfg is None:
        raise _Reject("the message bus is not open to this turn")
    try:
        key, entry = tick_messages.call(cfg, agent, call.name, call.input, set(inbox_ids))
    except ValueError as e:
        raise _Reject(str(e)) from None
    if len(said[key]) >= _SAID_LIMITS[key]:
        raise _Reject(f"at most {_SAID_LIMITS[key]} {key} in one turn")
    if key == "acks" and entry in said["acks"]:
        raise _Reject(f"message {entry} is acked already this turn")
    return key, entry


class _Reject(Exception):
    pass


class Preview:
    """One turn's calls checked one after another as :func:`to_ops` checks them
    (a later call sees what an earlier one created or deleted), making no ops:
    for a provider that tries a call before it sends it."""

    def __init__(self, view: View) -> None:
        self._turn = _Turn(view)

    def why_not(self, agent: str, tick: int, n: int, call: ToolCall, tool: Tool | None) -> str | None:
        """Why ``call``, the turn's ``n``-th, would be rejected; None if it would not (it then counts as made)."""
        try:
            self._turn.call(agent, tick, n, call, tool)
        except _Reject as e:
            return str(e)
        return None


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


class _Turn:
    """One turn's calls against main as the tick started, plus what this turn
    created or deleted, so a later call of the same turn sees its own work."""

    def __init__(self, view: View) -> None:
        self.view = view
        self.made: dict[tuple[str, str], dict[str, Any] | None] = {}  # None: deleted this turn
        self.calls: dict[str, int] = {}  # accepted calls per tool
        self._authority: Authority | None = None

    def doc(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        key = (collection, doc_id)
        if key in self.made:
            return self.made[key]
        return self.view.get(collection, doc_id)

    def call(self, agent: str, tick: int, n: int, call: ToolCall, tool: Tool | None) -> list[Op] | None:
        if tool is None:  # do_nothing
            if not isinstance(call.input, dict) or not isinstance(call.input.get("reason", ""), str):
                raise _Reject("input does not match the tool's schema: do_nothing takes {\"reason\": text}")
            return None
        try:
            problem = schemas.first_error(tool.validator, call.input)
        except (ValueError, RecursionError) as e:  # the validator gave up on it
            problem = f"cannot be checked ({type(e).__name__})"
        if problem:
            raise _Reject(f"input does not match the tool's schema: {problem}")
        if tool.max is not None and self.calls.get(tool.name, 0) >= tool.max:
            raise _Reject(f"at most {tool.max} call(s) of {tool.name} in one turn (its 'max')")
        names: dict[str, Any] = {"input": _with_defaults(tool.input_schema, call.input), "agent": agent,
                                 "tick": tick, "n": n, "id": f"{agent}-t{tick}-{n}"}
        scope = Scope(names)
        for alias, ref in tool.needs:
            doc_id = ref.id_in(scope)
            doc = self.doc(ref.collection, doc_id) if doc_id else None
            if doc is None:
                raise _Reject(f"no {ref.collection} document {_shown(ref.id.value(scope))} ({tool.name}: needs {ref.source})")
            names[alias] = doc
        for ref in tool.absent:
            doc_id = ref.id_in(scope)
            if doc_id and self.doc(ref.collection, doc_id) is not None:
                raise _Reject(f"{ref.collection}/{doc_id} exists already ({tool.name}: absent {ref.source})")
        for cond in tool.checks:
            if not cond.holds(scope):
                raise _Reject(f"{tool.name}: {cond.why_not(scope)}")
        ops: list[Op] = []
        made: dict[tuple[str, str], dict[str, Any] | None] = {}
        for eff in tool.effects:
            if not all(c.holds(scope) for c in eff.when):
                continue
            doc_id = eff.doc.id_in(scope)
            if doc_id is None:
                raise _Reject(f"{eff.doc.source} gives {_shown(eff.doc.id.value(scope))}, which is not a document id")
            value = render(eff.value, scope) if eff.value is not None else None
            if value is MISSING:
                raise _Reject(f"{eff.op} {eff.doc.source}: its value names something the call did not give")
            if eff.op == "create":
                value = {**(value or {}), "id": doc_id}
                made[(eff.doc.collection, doc_id)] = value
            elif eff.op == "delete":
                made[(eff.doc.collection, doc_id)] = None
            ops.append(Op(eff.op, eff.doc.collection, doc_id, eff.path, value))
        self._authorized(agent, ops)
        self.made.update(made)
        self.calls[tool.name] = self.calls.get(tool.name, 0) + 1
        return ops


    def _authorized(self, agent: str, ops: list[Op]) -> None:
        """Refuse the call if the collection's rules would not let ``agent`` apply one of
        its ops (a create naming another agent as the owner, say): the merge quarantines
        a delta with such an op whole, the turn's other calls with it. The owner is read
        as the merge reads it, from the document as this turn leaves it."""
        cfg = self.view.snap.config
        if agent not in cfg.agents:
            return
        if self._authority is None:
            self._authority = Authority(cfg)
        now: dict[tuple[str, str], dict[str, Any] | None] = {}  # the documents as this call's ops leave them
        for op in ops:
            coll = cfg.collections.get(op.collection)
            if coll is None:
                continue
            key = (op.collection, op.id)
            doc = op.arg if op.op == "create" else now[key] if key in now else self.doc(*key)
            owner = coll.owner_of(op.id, doc if isinstance(doc, dict) else None)
            if not self._authority.allows_agent(coll, owner, agent, op):
                raise _Reject(refusal_of(agent, op, coll, owner))
            if op.op in ("create", "delete"):
                now[key] = op.arg if op.op == "create" else None


def _with_defaults(schema: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The input with the defaults its schema declares for fields the call left out."""
    props = schema.get("properties") or {}
    out = dict(given)
    for name, sub in props.items():
        if name not in out and isinstance(sub, dict) and "default" in sub:
            out[name] = sub["default"]
    return out


def _shown(value: Any) -> str:
    return "(missing)" if value is MISSING else repr(printable(str(value), 80))
