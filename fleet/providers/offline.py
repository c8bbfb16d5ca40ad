"""The offline provider: deterministic agents that need no network and no key.

It knows no world: it chooses among the agent's own tools, with inputs made
from each tool's input schema and from main as the tick started (a field the
tool looks up as ``<collection>/{input.FIELD}`` gets the id of a document
that exists). Like a model that reads its prompt, it tries a few such calls
against the tool's preconditions (``needs``, ``absent``, ``check``) and sends
the first that meets them; now and then none does, or it does not look, and
the call is one the tools reject, as real models' are. For a given seed, tick
and agent it always chooses the same, whatever the number of workers. It
reports the prompt it was given as its input tokens.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import re
from typing import Any

from fleet import canonical
from fleet.prompt import tokens
from fleet.providers import OFFLINE_MODEL, TurnRequest, TurnResult
from fleet.refs import Scope, refs_in
from fleet.tools import Preview, ToolCall
from fleet.world import NOOP, Tool, View

_WORDS = ("git", "tick", "delta", "merge", "ledger", "replay", "schema", "worker", "stream", "conflict",
          "garden", "history", "design", "error bars", "poem", "test", "benchmark", "patience")
MAX_DEPTH = 6  # of a made-up input
MAX_ITEMS = 16  # a made-up array holds at most this many, whatever minItems says
MAX_TEXT = 4000  # a made-up string, whatever minLength says


def _int(value: Any, default: int) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e12 else default
ATTEMPTS = 8  # calls tried against the tools' preconditions before one is sent anyway
CARELESS = 0.05  # how often a call is sent untried


class OfflineProvider:
    name = "offline"
    model = OFFLINE_MODEL

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def price(self, model: str) -> None:
        return None  # offline turns cost nothing

    def _rng(self, tick: int, agent: str) -> random.Random:
        key = hashlib.sha256(f"{self.seed}\0{tick}\0{agent}".encode()).digest()
        return random.Random(int.from_bytes(key[:8], "big"))

    async def turn(self, request: TurnRequest) -> TurnResult:
        rng = self._rng(request.tick, request.agent)
        # input field -> the ids it may take, by tool; a tool with a lookup that finds nothing is not usable
        hints = {t.name: h for _, t in sorted(request.specs.items()) if (h := _ids_for(t, request.view)) is not None}
        usable = [request.specs[name] for name in hints]
        calls: list[ToolCall] = []
        task = request.task
        offered = {t.get("name") for t in request.tools}
        if task is not None and offered & {"complete_task", "fail_task"}:  # its task first, most often done
            if "complete_task" in offered and ("fail_task" not in offered or rng.random() < 0.8):
                calls.append(ToolCall("complete_task", {"task": task["id"], "result": f"{request.agent} did {task['id']}."}))
            else:
                calls.append(ToolCall("fail_task", {"task": task["id"], "reason": f"{request.agent} could not finish it."}))
        calls += _bus_calls(self._rng(request.tick, request.agent + "\0bus"), request, offered)
        preview = Preview(request.view)
        for _ in range(rng.choice((1, 1, 2, 3))):
            if not usable or rng.random() < 0.05:
                calls.append(ToolCall(NOOP, {"reason": "nothing worth doing"}))
                continue
            careless = rng.random() < CARELESS
            for _ in range(1 if careless else ATTEMPTS):
                tool = rng.choice(usable)
                maker = _Maker(rng, request, hints[tool.name], _Fits(tool, request))
                call = ToolCall(tool.name, maker.value(tool.input_schema, tool.input_schema, 0, ""))
                if preview.why_not(request.agent, request.tick, len(calls) + 1, call, tool) is None:
                    break
            calls.append(call)
        prompt_tokens = request.prompt.total_tokens if request.prompt else 0
        tool_tokens = tokens(canonical.dumps_line(request.tools).decode())
        out = sum(tokens(canonical.dumps_line({"name": c.name, "input": c.input}).decode()) for c in calls)
        usage = {"input_tokens": prompt_tokens + tool_tokens, "output_tokens": out,
                 "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "cost_usd": 0.0}
        return TurnResult(calls, self.model, usage)

    async def aclose(self) -> None:
        return None


def _bus_calls(rng: random.Random, request: TurnRequest, offered: set[Any]) -> list[ToolCall]:
    """Now and then a note to another agent, and an ack of the oldest message read,
    for an agent on the message bus (its own generator: the world's calls stay as they were)."""
    calls = []
    if "ack_message" in offered and request.inbox and rng.random() < 0.7:
        calls.append(ToolCall("ack_message", {"id": request.inbox[0]["id"]}))
    others = _Without(_everyone(request.view.snap.config), request.agent)
    if "send_message" in offered and others and rng.random() < 0.6:
        to = rng.choice(others)
        calls.append(ToolCall("send_message", {"to": to, "type": "note",
                                               "body": f"{request.agent} to {to}, tick {request.tick}: {rng.choice(_WORDS)}"}))
    return calls


_EVERYONE: dict[int, tuple[Any, list[str]]] = {}  # id(config) -> (config, its agents sorted)


def _everyone(cfg: Any) -> list[str]:
    """The agents of ``cfg``, sorted once per config, not once per turn."""
    found = _EVERYONE.get(id(cfg))
    if found is None or found[0] is not cfg:
        _EVERYONE.clear()  # one config at a time: a worker's
        found = _EVERYONE[id(cfg)] = (cfg, sorted(cfg.agents))
    return found[1]


class _Without:
    """A sorted list without one of its items, as a sequence (what random.choice
    takes), without copying the list for each turn."""

    def __init__(self, items: list[str], left_out: str) -> None:
        at = bisect.bisect_left(items, left_out)
        self.items, self.at = items, at if at < len(items) and items[at] == left_out else None

    def __len__(self) -> int:
        return len(self.items) - (self.at is not None)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __getitem__(self, i: int) -> str:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.items[i + 1 if self.at is not None and i >= self.at else i]


def _ids_for(tool: Tool, view: View) -> dict[str, list[str]] | None:
    """Input field -> ids it may take, for fields the tool looks up as
    ``<collection>/{input.FIELD}``; None if one of them has no document at all
    (the tool cannot be used on this world yet)."""
    out: dict[str, list[str]] = {}
    for _, ref in tool.needs:
        whole = ref.id.whole
        if whole is not None and whole.root == "input" and len(whole.path) == 1:
            ids = view.ids(ref.collection)  # from the listing: no document is read for its id
            if not ids:
                return None
            out[whole.path[0]] = ids
    return out


SAMPLE = 64  # ids of a collection tried for one input field


class _Fits:
    """Whether an id suits an input field, by the tool's preconditions that
    depend on no other input field: ``needs`` and ``absent`` whose ids are
    made of it and the call, ``check`` conditions on those and on it (a
    ticket that is the agent's, a review that exists for it)."""

    CALL = frozenset(("agent", "tick", "n", "id"))

    def __init__(self, tool: Tool, request: TurnRequest) -> None:
        self.tool, self.request = tool, request

    def __call__(self, name: str, value: str) -> bool:
        def own(refs: Any, aliases: set[str]) -> bool:
            return all(r.root in self.CALL or r.root in aliases or (r.root == "input" and r.path[:1] == (name,))
                       for r in refs)

        r = self.request
        names: dict[str, Any] = {"input": {name: value}, "agent": r.agent, "tick": r.tick, "n": 1,
                                 "id": f"{r.agent}-t{r.tick}-1"}
        scope = Scope(names)
        aliases: set[str] = set()
        for alias, ref in self.tool.needs:
            if own(ref.id.refs, set()):
                doc_id = ref.id_in(scope)
                doc = r.view.get(ref.collection, doc_id) if doc_id else None
                if doc is None:
                    return False
                names[alias] = doc
                aliases.add(alias)
        for ref in self.tool.absent:
            if own(ref.id.refs, aliases):
                doc_id = ref.id_in(scope)
                if doc_id and r.view.get(ref.collection, doc_id) is not None:
                    return False
        return all(c.holds(scope) for c in self.tool.checks
                   if own([*refs_in(c.left), *refs_in(c.right)], aliases))


class _Maker:
    """An input that a schema accepts, or nearly: enough for a tool to be tried."""

    def __init__(self, rng: random.Random, request: TurnRequest, hints: dict[str, list[str]],
                 fits: Any = None) -> None:
        self.rng, self.request, self.hints, self.fits = rng, request, hints, fits

    def _id(self, name: str) -> str:
        """An id for an input field the tool looks up: one that suits it, if a sample of them has one."""
        ids = self.hints[name]
        if self.fits is not None:
            for candidate in self.rng.sample(ids, min(len(ids), SAMPLE)):
                if self.fits(name, candidate):
                    return candidate
        return self.rng.choice(ids)

    def value(self, schema: Any, root: dict[str, Any], depth: int, name: str) -> Any:
        rng = self.rng
        if not isinstance(schema, dict) or depth > MAX_DEPTH:
            return None
        if "$ref" in schema and isinstance(schema["$ref"], str) and schema["$ref"].startswith("#/"):
            target: Any = root
            for part in schema["$ref"][2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            return self.value({**target, **{k: v for k, v in schema.items() if k != "$ref"}}, root, depth + 1, name)
        if depth == 1 and name in self.hints:
            return self._id(name)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return rng.choice(schema["enum"])
        for key in ("oneOf", "anyOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self.value(rng.choice(schema[key]), root, depth + 1, name)
        kind = schema.get("type", "object" if "properties" in schema else "string")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object":
            props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
            required = set(schema.get("required") or [])
            return {k: self.value(sub, root, depth + 1, k) for k, sub in sorted(props.items())
                    if k in required or rng.random() < 0.5}
        if kind == "array":
            lo = min(_int(schema.get("minItems"), 0), MAX_ITEMS)  # a schema may ask for more than any call holds
            hi = max(lo, min(_int(schema.get("maxItems"), lo + 2), lo + 2))
            items = [self.value(schema.get("items", {}), root, depth + 1, name) for _ in range(rng.randint(lo, hi))]
            if schema.get("uniqueItems"):
                seen: list[Any] = []
                items = [i for i in items if not (i in seen or seen.append(i))]
            return items
        if kind in ("integer", "number"):
            lo = _int(schema.get("minimum"), 0)
            hi = _int(schema.get("maximum"), lo + 10)
            n = rng.randint(lo, max(lo, min(hi, lo + 1_000_000)))
            return n if kind == "integer" else float(n)
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "null":
            return None
        return self._text(schema, name)

    def _text(self, schema: dict[str, Any], name: str) -> str:
        rng, r = self.rng, self.request
        topic = rng.choice(_WORDS)
        pattern = schema.get("pattern")
        if isinstance(pattern, str):  # an id-like field: a slug, if the pattern takes it
            slug = f"{topic.replace(' ', '-')}-{rng.randint(1, 99)}"
            try:
                if re.search(pattern, slug):
                    return slug
            except re.error:
                pass
        text = f"{r.agent} on {topic} at tick {r.tick}" if name not in ("reason",) else "nothing worth doing"
        lo, hi = min(_int(schema.get("minLength"), 0), MAX_TEXT), _int(schema.get("maxLength"), 200)
        while len(text) < lo:
            text += f" {rng.choice(_WORDS)}"
        return text[:hi]
