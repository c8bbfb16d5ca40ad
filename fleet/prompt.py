"""Prompt assembly: a shared prefix for the tick, then each agent's own context.

What goes in is the world's declaration (config ``prompt``, fleet.world):
the rules, then the ``shared`` sections, the same for every agent of a tick,
ending in a ``cache_control`` breakpoint so the provider charges for them once
a tick; then the agent's ``own`` sections, packed to what is left of
``run.context_tokens``. Tokens are estimated at four characters each, which is
how the packing and the cache-prefix benchmark count.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from typing import Any

from fleet import knowledge
from fleet.errors import FleetError
from fleet.fieldindex import Doubt
from fleet.refs import Scope, render
from fleet.tick_messages import inbox_text
from fleet.world import PromptSpec, Section, Selection, View, Where

CHARS_PER_TOKEN = 4
COMMON_SHARE = 0.8  # of the context budget, at most, for the shared prefix
FIRST_READ = 16  # documents of a section read in its first request (then twice as many each time)


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

    def __init__(self, view: View, spec: PromptSpec, context_tokens: int, fleet_name: str = "",
                 knowledge_docs: Sequence[knowledge.Doc] = ()) -> None:
        self.knowledge = list(knowledge_docs)  # from other repositories (fleet.knowledge), ranked per agent
        self.view = view
        self.spec = spec
        self.budget = context_tokens
        self.names = {"tick": view.tick, "fleet": fleet_name or "a fleet"}
        self._listed: dict[str, dict[int, list[Any]]] = {}  # agent -> its first items (:meth:`read_ahead`)
        self._prefix()

    def read_ahead(self, agents: Iterable[str]) -> None:
        """The first items of every one of ``agents``' own sections, and the documents
        they show first, read in one request for all of them (:meth:`_read_first`
        does so for one agent): one round trip to git a worker, not one an agent.
        What cannot be read ahead so (an agent whose sections fail, the field index in
        doubt, git failing) is left to :meth:`for_agent`, which reads it as ever."""
        wanted: dict[str, list[str]] = {}
        try:
            for agent in dict.fromkeys(agents):
                try:
                    listed, ids = self._first_items(self._scope(agent))
                except Doubt:
                    raise
                except Exception:  # noqa: BLE001 - its turn meets the same failure and reports it
                    continue
                self._listed[agent] = listed
                for collection, found in ids.items():
                    wanted.setdefault(collection, []).extend(found)
            self.view.read_ahead_many(wanted)
        except Doubt:  # the view dropped its field index: the items read from it are not to be used
            self._listed.clear()
            self._prefix()
        except FleetError:
            pass  # the documents are read again as each agent's prompt shows them

    def _scope(self, agent: str) -> Scope:
        a = self.view.snap.config.agents.get(agent)
        return Scope({**self.names, "agent": agent, "persona": a.persona if a is not None else ""})

    def _prefix(self) -> None:
        try:
            self.common = self._common(int(self.budget * COMMON_SHARE))
        except Doubt:  # the view dropped its field index: again, from main itself
            self.common = self._common(int(self.budget * COMMON_SHARE))
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

    def for_agent(self, agent: str, task: dict[str, Any] | None = None,
                  inbox: list[dict[str, Any]] | None = None) -> Prompt:
        try:
            return self._for_agent(agent, task, inbox)
        except Doubt:  # the view dropped its field index: the shared prefix and this prompt from main itself
            self._listed.clear()  # items read ahead from the index: not to be used either
            self._prefix()
            return self._for_agent(agent, task, inbox)

    def _for_agent(self, agent: str, task: dict[str, Any] | None,
                   inbox: list[dict[str, Any]] | None) -> Prompt:
        scope = self._scope(agent)
        left = max(0, self.budget - self.common_tokens)
        text, used = "", 0
        if task is not None:  # fleet's own section: the task comes first, whatever the world
            block = _task_text(task)
            text, used = block, tokens(block)
        if inbox:  # fleet's own too: the agent's unacked messages (fleet.tick_messages), within the budget
            block = inbox_text(inbox, max(0, left - used - 2), tokens)
            if block:
                block = ("\n\n" if text else "") + block
                text, used = text + block, used + tokens(block)
        known, known_cost = self._knowledge(agent, task, left - used)
        listed = self._listed.pop(agent, None)
        if listed is None:
            listed = self._read_first(scope)
        for k, s in enumerate(self.spec.own):  # in the declared order, most important first
            block, cost = _pack(self, s, scope, left - used - known_cost, "\n\n" if text else "", listed.get(k))
            text += block
            used += cost
        if known:  # its room was kept for it: knowledge.tokens at most
            text += known if text else known.lstrip("\n")
            used += known_cost
        ask = self.spec.ask.text(scope)
        system: list[dict[str, Any]] = [
            {"type": "text", "text": self.common, "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": text or f"You are {agent}."},
        ]
        return Prompt(system, [{"role": "user", "content": ask}], self.common_tokens,
                      self.common_tokens + tokens(text) + tokens(ask))

    def _read_first(self, scope: Scope) -> dict[int, list[Any]]:
        """The items of the agent's own sections that list documents (by their place
        in ``spec.own``), with the documents they show first, and those the
        sections about one document name, read in one request: one round trip to
        git an agent, not one a section."""
        listed, wanted = self._first_items(scope)
        self.view.read_ahead_many(wanted)
        return listed

    def _first_items(self, scope: Scope) -> tuple[dict[int, list[Any]], dict[str, list[str]]]:
        """(:meth:`_read_first`'s items, the ids of the documents to read for them)."""
        listed: dict[int, list[Any]] = {}
        wanted: dict[str, list[str]] = {}
        for k, s in enumerate(self.spec.own):
            if s.doc is not None:
                doc_id = s.doc.id_in(scope)
                if doc_id:
                    wanted.setdefault(s.doc.collection, []).append(doc_id)
            elif s.collection is not None and s.line is not None:
                items = _items(self.view, s, scope, None)
                if isinstance(items, list):
                    listed[k] = items
                    wanted.setdefault(s.collection, []).extend(d["id"] for d in items[:FIRST_READ])
        return listed, wanted

    def _knowledge(self, agent: str, task: dict[str, Any] | None, room: int) -> tuple[str, int]:
        """The knowledge block for ``agent``: the most relevant documents first, within
        ``knowledge.tokens`` and ``room``."""
        if not self.knowledge:
            return "", 0
        cfg = self.view.snap.config
        ranked = knowledge.rank(self.knowledge, knowledge.agent_terms(cfg, agent, task, self.view))
        return knowledge.pack(ranked, min(cfg.knowledge.tokens, room), tokens)


def _task_text(task: dict[str, Any]) -> str:
    body = str(task.get("body") or "")[:4000]
    return (f"Your task this tick: {task['id']}: {task['title']}" + (f"\n{body}" if body else "")
            + "\nWhen it is done, call complete_task with what you did; if you cannot do it, call fail_task "
              "and say why.")


def _pack(b: PromptBuilder, s: Section, scope: Scope, room: int, sep: str,
          listed: list[Any] | None = None) -> tuple[str, int]:
    """A section within ``room`` tokens: (its text, its cost); ("", 0) if nothing fits.
    ``listed``: its items, if the caller has them already (:meth:`PromptBuilder._read_first`)."""
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
    items = listed if listed is not None and doc is None else _items(b.view, s, scope, doc)
    if doc is None and isinstance(items, list):  # documents to be read: a batch at a time, as far as the room goes
        assert s.collection is not None
        items = _read_ahead(b.view, s.collection, items)
    head = sep + s.title if s.title else sep.rstrip(" ")
    out, used, lines = [head], tokens(head), 0
    for item in items:
        if doc is None:  # a document of a collection, read as parsed: it is checked once it is shown
            assert s.collection is not None
            item = b.view.checked(s.collection, item)
        line = ("\n" if (s.title or lines) else "") + s.line.text(Scope(scope.names, item))
        cost = tokens(line)
        if used + cost > room:
            break
        out.append(line)
        used += cost
        lines += 1
    return ("".join(out), used) if lines else ("", 0)


def _read_ahead(view: View, collection: str, items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``items``, each document read before it is asked for, in batches that grow
    (one request for many blobs, not one each): a section reads about what it shows."""
    at, batch = 0, FIRST_READ
    while at < len(items):
        chunk = items[at : at + batch]
        view.read_ahead(collection, [d["id"] for d in chunk])
        yield from chunk
        at += batch
        batch = min(batch * 2, 1024)


def _items(view: View, s: Section, scope: Scope, doc: dict[str, Any] | None) -> Iterable[Any]:
    """The items a section lists, in its order, up to its limit. A section that
    lists a whole collection by id reads it only as far as its room goes."""
    if doc is not None:
        raw = doc.get(s.list or "", [])
        items = [i for i in raw if isinstance(i, dict)] if isinstance(raw, list) else []
        tests = _resolve(view, s.where, scope)
        items = [i for i in items if _matches(i, tests)]
    else:
        assert s.collection is not None
        if not view.full and not s.where and (not s.order or s.order[0].lstrip("-") == "id"):
            # ids are unique: the rest of the order is moot
            found = view.in_id_order(s.collection, descending=bool(s.order) and s.order[0].startswith("-"))
            return islice(found, s.limit) if s.limit else found
        fields = {w.field for w in s.where} | {k.lstrip("-") for k in s.order}
        if s.order and not view.full:
            # the whole collection in this order once a view; a section's share of it by each one's place
            ordered, place = view.ordered(s.collection, fields, s.order, lambda docs: sort_documents(docs, s.order))
            if not s.where:
                return ordered[: s.limit] if s.limit else ordered
            chosen = _select(view, s.collection, s.where, scope, fields)
            if s.limit:
                return heapq.nsmallest(s.limit, chosen, key=lambda d: place[d["id"]])
            return sorted(chosen, key=lambda d: place[d["id"]])
        items = _select(view, s.collection, s.where, scope, fields)
    items = _ordered(items, s.order)
    return items[: s.limit] if s.limit else items


# a resolved condition: (field, the value wanted, or the set of ids it must be in)
_Test = tuple[str, Any, bool]


def _resolve(view: View, where: tuple[Where, ...], scope: Scope) -> list[_Test]:
    out: list[_Test] = []
    for w in where:
        if isinstance(w.value, Selection):
            sel = w.value
            out.append((w.field, {d["id"] for d in _select(view, sel.collection, sel.where, scope,
                                                           {v.field for v in sel.where})}, True))
        else:
            out.append((w.field, render(w.value, scope), False))
    return out


def _select(view: View, collection: str, where: tuple[Where, ...], scope: Scope,
            fields: set[str]) -> list[dict[str, Any]]:
    """The documents of ``collection`` that match ``where``, as parsed or as rows of
    the view's field index holding ``fields`` (those the caller filters and sorts by)."""
    tests = _resolve(view, where, scope)
    first = next((t for t in tests if not t[2]), None) or next(iter(tests), None)
    if first is None:
        return list(view.rows(collection, fields).values())
    # one field by the view's index (built once a worker), the rest by filter
    if view.full and first[2]:  # the reference read: every document through the filter
        return [d for d in view.scan(collection).values() if _matches(d, tests)]
    if first[2]:  # the field's value is one of a set of ids
        candidates = [d for v in sorted(first[1]) for d in view.by_unchecked(collection, first[0], v, fields)]
    else:
        candidates = view.by_unchecked(collection, first[0], first[1], fields)
    tests = [t for t in tests if t is not first]
    return [d for d in candidates if _matches(d, tests)] if tests else list(candidates)


def _matches(item: dict[str, Any], tests: list[_Test]) -> bool:
    for name, wanted, is_set in tests:
        value = item.get(name)
        if is_set:
            if not isinstance(value, str) or value not in wanted:
                return False
        elif value != wanted or isinstance(value, bool) != isinstance(wanted, bool):
            return False
    return True


def sort_documents(docs: list[dict[str, Any]], order: tuple[str, ...]) -> list[dict[str, Any]]:
    """Documents of one collection (their ids unique) in ``order``, as :func:`_ordered`
    puts them. Rows already in that order (fleet.fieldindex) go through in one pass."""
    return _ordered(docs, order, unique=True)


def _ordered(items: list[Any], order: tuple[str, ...], unique: bool = False) -> list[Any]:
    """Sorted by the keys, each ascending or ('-') descending; missing values last,
    ties in id order (or the list's own order, for items without ids). ``unique``:
    the items' ids are unique text, so that an order with ``id`` among its keys
    has no ties, and the list's own order is moot: it is sorted as it comes."""
    if unique and any(k.lstrip("-") == "id" for k in order):
        out = list(items)
    elif items and "id" in items[0]:
        if all(type(i.get("id")) is str for i in items):  # documents: str(id) is the id
            out = sorted(items, key=itemgetter("id"))
        else:
            out = sorted(items, key=lambda i: str(i.get("id", "")))
    else:
        out = list(items)
    if not order:
        return out
    keys = _keys(out, order)
    if keys is not None:  # one sort on a key made of all of them: the order the sorts below give
        return [out[k[-1]] for k in sorted(keys)]
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


def _keys(items: list[Any], order: tuple[str, ...]) -> list[tuple[Any, ...]] | None:
    """Each item's key for one sort by every key of ``order`` (then its place),
    or None when a descending key holds text, which no key can turn round.
    Missing (or unsortable) values come last either way, as in the sorts of
    :func:`_ordered`; numbers before text."""
    columns: list[list[Any]] = []
    last = (1,)
    for k in order:
        name, desc = k.lstrip("-"), k.startswith("-")
        column: list[Any] = []
        for i in items:
            v = i.get(name)
            t = type(v)
            if t is int or t is float:
                column.append((0, -v) if desc else (0, 0, v))
            elif t is str and not desc:
                column.append((0, 1, v))
            elif t is str or (isinstance(v, (int, float, str)) and not isinstance(v, bool)):
                return None  # text to turn round, or a kind JSON does not parse to: the sorts do it
            else:
                column.append(last)
        columns.append(column)
    return list(zip(*columns, range(len(items)), strict=True))
