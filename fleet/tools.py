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

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from fleet import canonical, schemas, tick_messages, tick_tasks
from fleet.authority import Authority, refusal_of
from fleet.config import CONFIG_PATH, Config
from fleet.delta import Op
from fleet.errors import FleetError
from fleet.ids import is_safe_id, printable
from fleet.refs import MISSING, Scope, Text, render
from fleet.world import ITEMS, NOOP, Reader, Tool, View, _Loader


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


# -- declarations no call can satisfy (`fleet validate`) ----------------------
def declaration_problems(cfg: Config, read: Reader) -> list[tuple[str, str]]:
    """(file, 'key: what') for each tool whose declaration no call can ever turn
    into a valid document, found before any tick runs it:

    * a fixed part of an effect's value (no ``{reference}`` anywhere in it: a
      number, a plain string, an object or list of such) that the collection's
      schema refuses where the effect writes it (``"title": -1`` where titles are
      strings). What a reference gives is not known here, and is never judged;
      the parts of the schema that apply at a place are read only as far as they
      surely apply (properties, items, additionalProperties, ``$ref`` within the
      schema, allOf), so a part that could be valid is never named;
    * an input schema whose bounds no value meets: a minimum above its maximum
      (minLength, minItems, minProperties, minimum, the exclusive ones), or a
      length beyond ``limits.max_delta_bytes`` for a value an effect writes whole
      into the delta, where its type leaves no other value.

    Every tool that loads is checked, even in a world with other problems
    (fleet.world.check reports those, and the tools they break)."""
    tools = _Loader(cfg, read).tools()
    docs = _DocSchemas(cfg, read)
    out: list[tuple[str, str]] = []
    for name in sorted(tools):
        tool = tools[name]
        key = f"tools.{name}" if tool.source == CONFIG_PATH else name
        lines = _fixed_value_problems(tool, docs) + _bound_problems(tool, cfg.limits.max_delta_bytes)
        out += [(tool.source, f"{key}.{line}") for line in lines]
    return out


_Pointer = tuple[str, ...]  # a place in a schema, as keys (a list's index as digits)
_ANY_KEY = "\0any"  # in an input path: a key additionalProperties gives, never one a reference names
_LEGACY = ("draft-03", "draft-04", "draft-06", "draft-07")  # where "$ref" hides the keywords beside it


class _DocSchema:
    """A collection's document schema, read to say which of its parts surely apply
    at a place of a document, each with its validator."""

    def __init__(self, root: Any, validators: Any) -> None:
        self.root = root
        self.validators = validators
        meta = root.get("$schema") if isinstance(root, dict) else None
        self.legacy = isinstance(meta, str) and any(d in meta for d in _LEGACY)
        # A "$id" below the root moves where "#/..." resolves inside it: such a schema's $ref is not followed.
        self.refs = not _nested_id(root)

    def node(self, ptr: _Pointer) -> Any:
        node = self.root
        for key in ptr:
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return None
        return node

    def applying(self, start: list[_Pointer]) -> list[_Pointer]:
        """``start`` and the parts that apply wherever they do: what a ``$ref`` within
        the schema names, and each of an ``allOf`` (at most 256 parts)."""
        out: list[_Pointer] = []
        todo, seen = list(reversed(start)), set()
        while todo and len(out) < 256:
            ptr = todo.pop()
            if ptr in seen:
                continue
            seen.add(ptr)
            out.append(ptr)
            node = self.node(ptr)
            if not isinstance(node, dict):
                continue
            ref = node.get("$ref")
            if self.refs and isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
                todo.append(tuple(t.replace("~1", "/").replace("~0", "~") for t in unquote(ref[1:]).split("/")[1:]))
            if self.legacy and "$ref" in node:
                continue  # (draft 7 and before: the keywords beside "$ref" are ignored)
            subs = node.get("allOf")
            if isinstance(subs, list):
                todo += [(*ptr, "allOf", str(i)) for i in reversed(range(len(subs)))]
        return out

    def below(self, parts: list[_Pointer], step: str | None) -> list[_Pointer]:
        """The parts that surely apply at field ``step`` (ITEMS: at each item) of a
        place where ``parts`` apply."""
        found: list[_Pointer] = []
        for ptr in parts:
            node = self.node(ptr)
            if not isinstance(node, dict) or (self.legacy and "$ref" in node):
                continue
            if step is ITEMS:
                if isinstance(node.get("items"), (dict, bool)) and "prefixItems" not in node:
                    found.append((*ptr, "items"))  # (not a tuple's items: an item's place is not known)
                continue
            props = node.get("properties")
            if isinstance(props, dict) and step in props:
                found.append((*ptr, "properties", step))
            elif "patternProperties" not in node and isinstance(node.get("additionalProperties"), (dict, bool)):
                found.append((*ptr, "additionalProperties"))
        return self.applying(found)

    def at(self, place: tuple[str | None, ...]) -> list[_Pointer]:
        parts = self.applying([()])
        for step in place:
            parts = self.below(parts, step)
        return parts

    def refusal(self, value: Any, place: tuple[str | None, ...]) -> tuple[list[Any], str] | None:
        """(where in ``value``, why) a part of the schema that applies at ``place``
        refuses ``value``, or None."""
        for ptr in self.at(place):
            validator = self.validators.get("#" + "".join("/" + k.replace("~", "~0").replace("/", "~1") for k in ptr))
            if validator is None:
                continue
            try:
                problem = schemas.first_error(validator, value)
                if problem is None:
                    continue
                where = list(next(iter(validator.iter_errors(value))).instance_path)
            except (ValueError, RecursionError, StopIteration):  # the validator gave up on it: judged by none
                continue
            shown = printable("/" + "/".join(str(p) for p in where), 200)
            return where, problem.removeprefix(f"at {shown}: ")
        return None


def _nested_id(root: Any) -> bool:
    """Whether a schema object below ``root`` has its own "$id" (or "id", the older drafts' word)."""
    todo: list[Any] = [v for k, v in root.items() if k not in _INSTANCE_KEYWORDS] if isinstance(root, dict) else []
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo += node
        elif isinstance(node, dict):
            if isinstance(node.get("$id"), str) or isinstance(node.get("id"), str):
                return True
            todo += [v for k, v in node.items() if k not in _INSTANCE_KEYWORDS]
    return False


_INSTANCE_KEYWORDS = frozenset(["enum", "const", "default", "examples"])  # values, not schemas


class _DocSchemas:
    """Each collection's document schema, read once: None when missing, not JSON or
    not usable (fleet.world.check and the schema file's own check say so)."""

    def __init__(self, cfg: Config, read: Reader) -> None:
        self.cfg = cfg
        self.read = read
        self.found: dict[str, _DocSchema | None] = {}

    def of(self, collection: str) -> _DocSchema | None:
        if collection not in self.found:
            self.found[collection] = self._load(collection)
        return self.found[collection]

    def _load(self, collection: str) -> _DocSchema | None:
        coll = self.cfg.collections.get(collection)
        rel = f"schemas/{coll.schema}" if coll else ""
        data = self.read(rel) if coll else None
        if data is None:
            return None
        import jsonschema_rs  # (loaded by the schema's compiling below in any case)

        try:
            schemas.compile_bytes(data, rel)  # refuses a $ref out of the schema, by name, before any is resolved
            root = canonical.parse(data)
            validators = jsonschema_rs.validator_map_for(root, retriever=schemas._no_retrieval)
        except (FleetError, canonical.JSONProblem, ValueError, jsonschema_rs.ReferencingError):
            return None
        return _DocSchema(root, validators)


def _fixed(value: Any) -> Any:
    """A compiled template as the JSON it always gives, or MISSING where it names anything."""
    if isinstance(value, Text):
        return MISSING if value.refs else value.text(Scope({}))
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out[k] = _fixed(v)
            if out[k] is MISSING:
                return MISSING
        return out
    if isinstance(value, list):
        items = [_fixed(v) for v in value]
        return MISSING if any(v is MISSING for v in items) else items
    return value


def _fixed_parts(value: Any, place: tuple[str | None, ...], at: str
                 ) -> Iterator[tuple[Any, tuple[str | None, ...], str]]:
    """(value, its place in the document, its key in the declaration) for each
    largest part of a value template that names nothing: written as it is."""
    fixed = _fixed(value)
    if fixed is not MISSING:
        yield fixed, place, at
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _fixed_parts(v, (*place, k), f"{at}.{printable(k, 80)}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _fixed_parts(v, (*place, ITEMS), f"{at}[{i}]")


def _fixed_value_problems(tool: Tool, docs: _DocSchemas) -> list[str]:
    """'effects[i].value...: why' for each fixed part of an effect's value that the
    collection's schema refuses where it is written: the created document's fields
    (its 'id' is the effect's own), the value set at the path, the member added,
    the item appended. (An incr's value is an amount, not what the field becomes.)"""
    out = []
    for i, e in enumerate(tool.effects):
        schema = docs.of(e.doc.collection)
        if schema is None or e.op not in ("create", "set", "add", "append"):
            continue  # (each of these has a value: None is a fixed null)
        at = f"effects[{i}].value"
        if e.op == "create":
            parts = [p for k, v in (e.value.items() if isinstance(e.value, dict) else ()) if k != "id"
                     for p in _fixed_parts(v, (k,), f"{at}.{printable(k, 80)}")]
        else:
            parts = list(_fixed_parts(e.value, (*e.path, ITEMS) if e.op in ("add", "append") else e.path, at))
        for value, place, key in parts:
            refused = schema.refusal(value, place)
            if refused is None:
                continue
            where, why = refused
            inner = "".join(f"[{p}]" if isinstance(p, int) else f".{printable(str(p), 80)}" for p in where)
            field = ".".join(["items" if p is ITEMS else printable(str(p), 80) for p in place]
                             + [printable(str(p), 80) for p in where])
            coll = docs.cfg.collections[e.doc.collection]
            calls = f"every call of {tool.name} that makes this effect" if e.when else f"every call of {tool.name}"
            out.append(f"{key}{inner}: {why} ({e.doc.collection} documents' {field}, schemas/{coll.schema}): "
                       f"{calls} would be quarantined")
    return out


_LENGTHS = {"string": ("minLength", "maxLength"), "array": ("minItems", "maxItems"),
            "object": ("minProperties", "maxProperties")}


def _bound_problems(tool: Tool, limit: int) -> list[str]:
    """'input...: why' for each place of the tool's input schema whose own bounds no
    value of its types meets: a call that gives a value there is always rejected
    (every call, where the place is required). Read from the root through
    properties, items, prefixItems, additionalProperties and allOf; a place below
    one already named is not read."""
    meta = tool.input_schema.get("$schema")
    legacy = isinstance(meta, str) and any(d in meta for d in _LEGACY)
    written = _written(tool)
    out = []
    todo: deque[tuple[Any, str, tuple[str | None, ...], bool]] = deque([(tool.input_schema, "input", (), True)])
    while todo:
        schema, at, path, required = todo.popleft()
        if not isinstance(schema, dict) or (legacy and "$ref" in schema):
            continue  # (draft 7 and before: the keywords beside "$ref" are ignored)
        whole = any(path[: len(p)] == p for p in written)
        why = _impossible(schema, limit if whole else None)
        if why:
            then = f"no call of {tool.name} can pass its input schema" if required else \
                f"no call of {tool.name} can give a value there"
            out.append(f"{at}: {why}: {then}")
            continue
        needed = schema.get("required")  # (a field it requires is given whenever it is, if it is surely an object)
        needed = needed if isinstance(needed, list) and schema.get("type") in ("object", ["object"]) else []
        props = schema.get("properties")
        for k, sub in (props.items() if isinstance(props, dict) else ()):
            todo.append((sub, f"{at}.properties.{printable(k, 80)}", (*path, k), required and k in needed))
        items, prefix = schema.get("items"), schema.get("prefixItems")
        for word, tuple_ in (("prefixItems", prefix), ("items", items)):  # (a list of items: draft 7's tuple)
            if isinstance(tuple_, list):
                todo += [(sub, f"{at}.{word}[{i}]", (*path, ITEMS), False) for i, sub in enumerate(tuple_)]
        if isinstance(items, dict):
            todo.append((items, f"{at}.items", (*path, ITEMS), False))
        if isinstance(schema.get("additionalProperties"), dict):
            todo.append((schema["additionalProperties"], f"{at}.additionalProperties", (*path, _ANY_KEY), False))
        subs = schema.get("allOf")
        todo += [(sub, f"{at}.allOf[{i}]", path, required) for i, sub in enumerate(subs if isinstance(subs, list) else ())]
    return out


def _written(tool: Tool) -> set[tuple[str, ...]]:
    """The input paths whose value an effect that always applies (no 'when') writes
    whole into its op: a whole-string reference, "{input.title}" (not a cut one)."""
    found: set[tuple[str, ...]] = set()
    todo = [e.value for e in tool.effects if not e.when]
    while todo:
        value = todo.pop()
        if isinstance(value, Text) and value.whole is not None and value.whole.root == "input":
            found.add(value.whole.path)
        elif isinstance(value, dict):
            todo += value.values()
        elif isinstance(value, list):
            todo += value
    return found


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _impossible(schema: dict[str, Any], limit: int | None) -> str | None:
    """Why no value of the types ``schema`` allows meets its own bounds, or None
    (None too where it names no type: a value of another kind is free of them).
    ``limit``: the size at least which no value fits in a delta, for a value
    written whole into one."""
    kind = schema.get("type")
    kinds = [kind] if isinstance(kind, str) else kind if isinstance(kind, list) else []
    if not kinds:
        return None
    reasons = []
    for k in kinds:
        why = _dead(schema, k, limit) if isinstance(k, str) else None
        if why is None:
            return None
        reasons.append(why)
    return "; ".join(dict.fromkeys(reasons))


def _dead(schema: dict[str, Any], kind: str, limit: int | None) -> str | None:
    """Why no value of ``kind`` meets ``schema``'s bounds, or None."""
    if kind in _LENGTHS:
        least, most = _LENGTHS[kind]
        lo, hi = _number(schema.get(least)), _number(schema.get(most))
        if lo is not None and hi is not None and lo > hi:
            return f"{least} {lo} is more than {most} {hi}"
        if lo is not None and limit is not None and lo >= limit:
            return (f"{least} {lo} is not less than limits.max_delta_bytes ({limit}, {CONFIG_PATH}), and an "
                    "effect writes the value whole into the delta")
        return None
    if kind not in ("number", "integer"):
        return None
    lo_key, lo, lo_open = _edge(schema, "minimum", "exclusiveMinimum", max)
    hi_key, hi, hi_open = _edge(schema, "maximum", "exclusiveMaximum", min)
    if lo is None or hi is None:
        return None
    if lo > hi or (lo == hi and (lo_open or hi_open)):
        return f"{lo_key} {lo} is {'more than' if lo > hi else 'not less than'} {hi_key} {hi}"
    if kind == "integer":
        first = math.floor(lo) + 1 if lo_open else math.ceil(lo)
        last = math.ceil(hi) - 1 if hi_open else math.floor(hi)
        if first > last:
            return f"{lo_key} {lo} and {hi_key} {hi} leave no integer between them"
    return None


def _edge(schema: dict[str, Any], inclusive: str, exclusive: str,
          tighter: Any) -> tuple[str, int | float | None, bool]:
    """(the keyword, the bound, whether it is exclusive) of one side of a number's
    range: the tighter of the two keywords (draft 4's boolean exclusive* marks the
    inclusive one exclusive)."""
    at, open_ = _number(schema.get(inclusive)), False
    key = inclusive
    flag = schema.get(exclusive)
    edge = _number(flag)
    if isinstance(flag, bool):
        open_ = flag and at is not None
    elif edge is not None and (at is None or tighter(edge, at) == edge):
        key, at, open_ = exclusive, edge, True
    return key, at, open_
