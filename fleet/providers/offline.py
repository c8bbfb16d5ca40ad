"""The offline provider: deterministic agents that need no network and no key.

It knows no world: it chooses among the agent's own tools, with inputs made
from each tool's input schema and from main as the tick started (a field the
tool looks up as ``<collection>/{input.FIELD}`` gets the id of a document
that exists). For a given seed, tick and agent it always chooses the same,
whatever the number of workers. Now and then a call is one the tools reject
(a double, a document another agent just deleted), as real models' are. It
reports the prompt it was given as its input tokens.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any

from fleet import canonical
from fleet.prompt import tokens
from fleet.providers import OFFLINE_MODEL, TurnRequest, TurnResult
from fleet.tools import ToolCall
from fleet.world import NOOP, Tool, View

_WORDS = ("git", "tick", "delta", "merge", "ledger", "replay", "schema", "worker", "stream", "conflict",
          "garden", "history", "design", "error bars", "poem", "test", "benchmark", "patience")
MAX_DEPTH = 6  # of a made-up input


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
        usable = [t for _, t in sorted(request.specs.items()) if _ids_for(t, request.view) is not None]
        calls: list[ToolCall] = []
        task = request.task
        offered = {t.get("name") for t in request.tools}
        if task is not None and offered & {"complete_task", "fail_task"}:  # its task first, most often done
            if "complete_task" in offered and ("fail_task" not in offered or rng.random() < 0.8):
                calls.append(ToolCall("complete_task", {"task": task["id"], "result": f"{request.agent} did {task['id']}."}))
            else:
                calls.append(ToolCall("fail_task", {"task": task["id"], "reason": f"{request.agent} could not finish it."}))
        for _ in range(rng.choice((1, 1, 2, 3))):
            if not usable or rng.random() < 0.05:
                calls.append(ToolCall(NOOP, {"reason": "nothing worth doing"}))
                continue
            tool = rng.choice(usable)
            hints = _ids_for(tool, request.view) or {}
            calls.append(ToolCall(tool.name, _Maker(rng, request, hints).value(tool.input_schema, tool.input_schema, 0, "")))
        prompt_tokens = request.prompt.total_tokens if request.prompt else 0
        tool_tokens = tokens(canonical.dumps_line(request.tools).decode())
        out = sum(tokens(canonical.dumps_line({"name": c.name, "input": c.input}).decode()) for c in calls)
        usage = {"input_tokens": prompt_tokens + tool_tokens, "output_tokens": out,
                 "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "cost_usd": 0.0}
        return TurnResult(calls, self.model, usage)

    async def aclose(self) -> None:
        return None


def _ids_for(tool: Tool, view: View) -> dict[str, list[str]] | None:
    """Input field -> ids it may take, for fields the tool looks up as
    ``<collection>/{input.FIELD}``; None if one of them has no document at all
    (the tool cannot be used on this world yet)."""
    out: dict[str, list[str]] = {}
    for _, ref in tool.needs:
        whole = ref.id.whole
        if whole is not None and whole.root == "input" and len(whole.path) == 1:
            ids = sorted(view.docs(ref.collection))
            if not ids:
                return None
            out[whole.path[0]] = ids
    return out


class _Maker:
    """An input that a schema accepts, or nearly: enough for a tool to be tried."""

    def __init__(self, rng: random.Random, request: TurnRequest, hints: dict[str, list[str]]) -> None:
        self.rng, self.request, self.hints = rng, request, hints

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
            return rng.choice(self.hints[name])
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
            lo = int(schema.get("minItems", 0))
            hi = max(lo, min(int(schema.get("maxItems", lo + 2)), lo + 2))
            items = [self.value(schema.get("items", {}), root, depth + 1, name) for _ in range(rng.randint(lo, hi))]
            if schema.get("uniqueItems"):
                seen: list[Any] = []
                items = [i for i in items if not (i in seen or seen.append(i))]
            return items
        if kind in ("integer", "number"):
            lo = schema.get("minimum", 0)
            hi = schema.get("maximum", lo + 10)
            n = rng.randint(int(lo), max(int(lo), int(hi)))
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
        lo, hi = int(schema.get("minLength", 0)), int(schema.get("maxLength", 200))
        while len(text) < lo:
            text += f" {rng.choice(_WORDS)}"
        return text[:hi]
