"""Prompt assembly: a shared prefix for the tick, then each agent's own context.

What goes in is the world's declaration (config ``prompt``, fleet.world):
the rules, then the ``shared`` sections, the same for every agent of a tick,
ending in a ``cache_control`` breakpoint so the provider charges for them once
a tick; then the agent's ``own`` sections, packed to what is left of
``run.context_tokens``. Tokens are estimated at four characters each, which is
how the packing and the cache-prefix benchmark count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet.refs import Scope, render
from fleet.world import PromptSpec, Section, Selection, View, Where

CHARS_PER_TOKEN = 4
COMMON_SHARE = 0.8  # of the context budget, at most, for the shared prefix


def tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


@dataclass
class Prompt:
    system: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    prefix_tokens: int  # before the cache breakpoint (system part; tools come before it too)
    total_tokens: int


class PromptBuilder:
    """Builds every agent's prompt of one tick around one shared prefix."""

    def __init__(self, view: View, spec: PromptSpec, context_tokens: int, fleet_name: str = "") -> None:
        self.view = view
        self.spec = spec
        self.budget = context_tokens
        self.names = {"tick": view.tick, "fleet": fleet_name or "a fleet"}
        self.common = self._common(int(context_tokens * COMMON_SHARE))
        self.common_tokens = tokens(self.common)

    def _common(self, budget: int) -> str:
        scope = Scope(self.names)
        parts = [self.spec.rules.text(scope), f"\n\nIt is tick {self.view.tick}."]
        used = tokens("".join(parts))
        for s in self.spec.shared:
            limit = used + int((budget - used) * s.share)
            text, cost = _pack(self, s, scope, max(0, limit - used), "\n\n")
            parts.append(text)
            used += cost
        return "".join(parts)

    def for_agent(self, agent: str, task: dict[str, Any] | None = None) -> Prompt:
        a = self.view.snap.config.agents.get(agent)
        scope = Scope({**self.names, "agent": agent, "persona": a.persona if a is not None else ""})
        left = max(0, self.budget - self.common_tokens)
        text, used = "", 0
        if task is not None:  # fleet's own section: the task comes first, whatever the world
            block = _task_text(task)
            text, used = block, tokens(block)
        for s in self.spec.own:  # in the declared order, most important first
            block, cost = _pack(self, s, scope, left - used, "\n\n" if text else "")
            text += block
            used += cost
        ask = self.spec.ask.text(scope)
        system: list[dict[str, Any]] = [
            {"type": "text", "text": self.common, "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": text or f"You are {agent}."},
        ]
        return Prompt(system, [{"role": "user", "content": ask}], self.common_tokens,
                      self.common_tokens + tokens(text) + tokens(ask))


def _task_text(task: dict[str, Any]) -> str:
    body = str(task.get("body") or "")[:4000]
    return (f"Your task this tick: {task['id']}: {task['title']}" + (f"\n{body}" if body else "")
            + "\nWhen it is done, call complete_task with what you did; if you cannot do it, call fail_task "
              "and say why.")


def _pack(b: PromptBuilder, s: Section, scope: Scope, room: int, sep: str) -> tuple[str, int]:
    """A section within ``room`` tokens: (its text, its cost); ("", 0) if nothing fits."""
    doc = None
    if s.doc is not None:
        doc_id = s.doc.id_in(scope)
        doc = b.view.get(s.doc.collection, doc_id) if doc_id else None
        if doc is None:
            return "", 0
    if s.line is None:  # a block of text
        assert s.text is not None
        body = s.text.text(Scope(scope.names, doc)).strip()
        if not body:
            return "", 0
        block = sep + (s.title + "\n" if s.title else "") + body
        cost = tokens(block)
        return (block, cost) if cost <= room else ("", 0)
    items = _items(b.view, s, scope, doc)
    head = sep + s.title if s.title else sep.rstrip(" ")
    out, used, lines = [head], tokens(head), 0
    for item in items:
        line = ("\n" if (s.title or lines) else "") + s.line.text(Scope(scope.names, item))
        cost = tokens(line)
        if used + cost > room:
            break
        out.append(line)
        used += cost
        lines += 1
    return ("".join(out), used) if lines else ("", 0)


def _items(view: View, s: Section, scope: Scope, doc: dict[str, Any] | None) -> list[Any]:
    if doc is not None:
        raw = doc.get(s.list or "", [])
        items = [i for i in raw if isinstance(i, dict)] if isinstance(raw, list) else []
        tests = _resolve(view, s.where, scope)
        items = [i for i in items if _matches(i, tests)]
    else:
        assert s.collection is not None
        items = _select(view, s.collection, s.where, scope)
    items = _ordered(items, s.order)
    return items[: s.limit] if s.limit else items


# a resolved condition: (field, the value wanted, or the set of ids it must be in)
_Test = tuple[str, Any, bool]


def _resolve(view: View, where: tuple[Where, ...], scope: Scope) -> list[_Test]:
    out: list[_Test] = []
    for w in where:
        if isinstance(w.value, Selection):
            out.append((w.field, {d["id"] for d in _select(view, w.value.collection, w.value.where, scope)}, True))
        else:
            out.append((w.field, render(w.value, scope), False))
    return out


def _select(view: View, collection: str, where: tuple[Where, ...], scope: Scope) -> list[dict[str, Any]]:
    tests = _resolve(view, where, scope)
    first = next((t for t in tests if not t[2]), None)
    if first is not None:  # one field by the view's index, the rest by filter
        candidates = view.by(collection, first[0], first[1])
        tests = [t for t in tests if t is not first]
    else:
        candidates = list(view.docs(collection).values())
    return [d for d in candidates if _matches(d, tests)]


def _matches(item: dict[str, Any], tests: list[_Test]) -> bool:
    for name, wanted, is_set in tests:
        value = item.get(name)
        if is_set:
            if not isinstance(value, str) or value not in wanted:
                return False
        elif value != wanted or isinstance(value, bool) != isinstance(wanted, bool):
            return False
    return True


def _ordered(items: list[Any], order: tuple[str, ...]) -> list[Any]:
    """Sorted by the keys, each ascending or ('-') descending; missing values last,
    ties in id order (or the list's own order, for items without ids)."""
    out = sorted(items, key=lambda i: str(i.get("id", ""))) if items and "id" in items[0] else list(items)
    for key in reversed(order):
        desc = key.startswith("-")
        name = key.lstrip("-")
        present = [i for i in out if _sortable(i.get(name))]
        missing = [i for i in out if not _sortable(i.get(name))]
        present.sort(key=lambda i: _rank(i[name]), reverse=desc)
        out = present + missing
    return out


def _sortable(v: Any) -> bool:
    return isinstance(v, (int, float, str)) and not isinstance(v, bool)


def _rank(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, (int, float)) else (1, v)
