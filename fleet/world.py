"""A world's tools and prompt, declared in the fleet repository and checked at load.

fleet knows no world. What agents may do (tools: an input schema,
preconditions on main, effects as delta ops) and what they are told (the
rules, the shared sections, each agent's own) are data: config ``tools`` and
``prompt`` in ``state/config.json``, inline or in files under ``state/`` that
it names (``schemas/tools.schema.json``, ``schemas/prompt.schema.json``).
:func:`load` checks them against the config they live with, so a tool that
names an unknown collection, an input field its schema does not declare, or an
op the collection's authority can never allow is refused before any tick
starts, with one line naming the file and the key.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fleet import canonical, ids, schemas
from fleet.config import CONFIG_PATH, Collection, Config, Rule
from fleet.errors import FleetError
from fleet.fieldindex import Doubt, same_fields
from fleet.ids import is_safe_id, printable
from fleet.refs import MISSING, Ref, Scope, TemplateError, Text, compile_text, compile_value, refs_in, render

NOOP = "do_nothing"
NOOP_TOOL: dict[str, Any] = {
    "name": NOOP, "description": "Do nothing this turn, and say why.",
    "input_schema": {"type": "object", "additionalProperties": False, "required": ["reason"],
                     "properties": {"reason": {"type": "string", "maxLength": 500}}},
}
TASK_TOOLS = ("complete_task", "fail_task")  # fleet's own, for agents that work on tasks (fleet.tick_tasks)
LESSON_TOOL = "record_lesson"  # fleet's own, with knowledge.lessons (fleet.knowledge)
MESSAGE_TOOLS = ("send_message", "ack_message")  # fleet's own, for agents on the message bus (fleet.tick_messages)
CALL_NAMES = ("input", "agent", "tick", "n", "id")  # what every tool template may name
ASK = "Tick {tick}: take your turn now, using the tools."
RULES = [
    "You are one agent of {fleet}, a world run by fleet. The world moves in ticks;",
    "this is your one turn of this tick. You act only through the tools you are given;",
    "everything you do is recorded, validated and merged with what the other agents",
    "did in the same tick. You may make several tool calls. If nothing is worth doing,",
    "call do_nothing and say why. Your calls are always made as yourself.",
]


class WorldError(FleetError):
    """A declaration that cannot run: every problem, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 1} more; `fleet validate` lists them)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)


# -- what a declaration compiles to -------------------------------------------
@dataclass(frozen=True)
class Condition:
    left: Any
    op: str
    right: Any
    source: str

    def holds(self, scope: Scope) -> bool:
        return self._holds(_null(render(self.left, scope)), _null(render(self.right, scope)))

    def why_not(self, scope: Scope) -> str:
        """The condition with its values, for a rejected call's reason."""
        left, right = _null(render(self.left, scope)), _null(render(self.right, scope))
        shown = " ".join(printable(repr(v), 80) for v in (left, self.op, right)).replace("MISSING", "(missing)")
        return f"{self.source} does not hold: {shown}"

    def _holds(self, left: Any, right: Any) -> bool:
        if self.op in ("==", "!="):
            return (left == right and type(left) is type(right)) == (self.op == "==")
        found = isinstance(right, list) and any(left == r and type(left) is type(r) for r in right)
        return found == (self.op == "in")


def _null(value: Any) -> Any:
    """In a condition a field or input that is not there is null: ["{ticket.assignee}", "==", null]."""
    return None if value is MISSING else value


@dataclass(frozen=True)
class DocRef:
    collection: str
    id: Text
    source: str

    def id_in(self, scope: Scope) -> str | None:
        value = self.id.value(scope)
        return value if isinstance(value, str) and is_safe_id(value) else None


@dataclass(frozen=True)
class Effect:
    op: str
    doc: DocRef
    path: tuple[str, ...]
    value: Any  # compiled template; None when the op takes none
    when: tuple[Condition, ...]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_schema: dict[str, Any]
    needs: tuple[tuple[str, DocRef], ...]
    absent: tuple[DocRef, ...]
    checks: tuple[Condition, ...]
    effects: tuple[Effect, ...]
    source: str  # the file that declares it
    max: int | None = None  # calls per turn
    validator: Any = field(default=None, compare=False, repr=False)  # of input_schema

    @property
    def definition(self) -> dict[str, Any]:
        """The tool as a model provider is given it."""
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


@dataclass(frozen=True)
class Where:
    field: str
    value: Any  # compiled template, or a Selection
    source: str


@dataclass(frozen=True)
class Selection:
    collection: str
    where: tuple[Where, ...]


@dataclass(frozen=True)
class Section:
    title: str
    collection: str | None
    doc: DocRef | None
    list: str | None
    where: tuple[Where, ...]
    order: tuple[str, ...]
    limit: int | None
    line: Text | None
    text: Text | None
    share: float


@dataclass(frozen=True)
class PromptSpec:
    rules: Text
    shared: tuple[Section, ...]
    own: tuple[Section, ...]
    ask: Text


@dataclass(frozen=True)
class World:
    tools: dict[str, Tool]
    prompt: PromptSpec
    files: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # 'file: key: what', for `fleet validate` (see :func:`warnings`)

    def tools_of(self, cfg: Config, agent: str) -> dict[str, Tool]:
        """The tools ``agent`` may use: its ``actions``, else every tool."""
        a = cfg.agents.get(agent)
        if a is None or a.actions is None:
            return dict(self.tools)
        return {n: self.tools[n] for n in a.actions if n in self.tools}

    def definitions(self, tools: dict[str, Tool]) -> list[dict[str, Any]]:
        return [tools[n].definition for n in sorted(tools)] + [NOOP_TOOL]


# -- loading -------------------------------------------------------------------
Reader = Callable[[str], "bytes | None"]


def warm(snap: Any) -> None:
    """Read the files a world's check reads (schemas, declaration files) in one
    batch into a snapshot's cache: one git process, not one per file."""
    snap.read_many(snap.under("schemas") + snap.files_in("state"))


def load(cfg: Config, read: Reader) -> World:
    """The world ``cfg`` declares, or :class:`WorldError` with every problem."""
    world, problems = check(cfg, read)
    if problems:
        raise WorldError(problems)
    assert world is not None
    return world


def check(cfg: Config, read: Reader) -> tuple[World | None, list[str]]:
    """(the world, []) or (None, every problem as 'file: key: what is wrong')."""
    loader = _Loader(cfg, read)
    for name, coll in sorted(cfg.collections.items()):
        if read(f"schemas/{coll.schema}") is None:
            loader.problem(CONFIG_PATH, f"collections.{name}.schema", f"names schemas/{coll.schema}, which is missing or not a regular file")
    loader.config_fields()
    tools = loader.tools()
    prompt = loader.prompt()
    loader.agents_may(tools)
    for aid, agent in sorted(cfg.agents.items()):
        for name in agent.actions or ():
            if (name not in tools and name not in (NOOP, LESSON_TOOL) and name not in TASK_TOOLS + MESSAGE_TOOLS
                    and name not in loader.broken):
                known = names_of(tools) or "none"
                loader.problem(CONFIG_PATH, f"agents.{aid}.actions", f"names tool {name!r}, which is not declared (tools: {known})")
    if loader.problems:
        return None, loader.problems
    assert prompt is not None
    return World(tools, prompt, tuple(loader.files), tuple(loader.warned)), []


class _Loader:
    def __init__(self, cfg: Config, read: Reader) -> None:
        self.cfg = cfg
        self.read = read
        self.problems: list[str] = []
        self.warned: list[str] = []  # what runs, but likely not as meant: 'file: key: what'
        self._needed: dict[str, str] = {}  # the tool being read: its needed documents' collections, by alias
        self.files: list[str] = []
        self.broken: set[str] = set()  # tools declared with a problem already reported
        self._schemas: dict[str, Any] = {}  # collection -> its schema, parsed (None: missing or not JSON)

    def problem(self, file: str, key: str, message: str) -> None:
        self.problems.append(f"{file}: {key}: {message}" if key else f"{file}: {message}")

    def _file(self, path: Any, key: str) -> Any:
        """The JSON of a declaration file config names (under state/)."""
        if not isinstance(path, str) or not path.startswith("state/") or not path.endswith(".json") or path.count("/") != 1:
            self.problem(CONFIG_PATH, key, f"{str(path)[:80]!r} must name a .json file directly in state/ "
                                           "(state/<name>.json; a folder of state/ is a collection)")
            return MISSING
        data = self.read(path)
        if data is None:
            self.problem(CONFIG_PATH, key, f"names {path}, which is missing or not a regular file")
            return MISSING
        try:
            value = canonical.parse(data)
        except canonical.JSONProblem as e:
            self.problem(path, "", str(e))
            return MISSING
        self.files.append(path)
        return value

    def _declarations(self, key: str, schema: str) -> list[tuple[str, str, Any]]:
        """(file, key prefix, declaration) for config ``key``, inline or in files."""
        raw = self.cfg.declared.get(key)
        if raw is None:
            return []
        found = []
        sources = [(CONFIG_PATH, key, raw)] if isinstance(raw, dict) else []
        files = raw if isinstance(raw, list) else [raw] if isinstance(raw, str) else []
        for i, path in enumerate(files):
            value = self._file(path, f"{key}[{i}]" if isinstance(raw, list) else key)
            if value is not MISSING:
                sources.append((path, "", value))
        for file, prefix, value in sources:
            if schema == "tools" and isinstance(value, dict):
                found.append((file, prefix, self._each_tool(file, prefix, value)))
                continue
            problem = schemas.first_error(schemas.protocol(schema), value)
            if problem:
                where, _, message = problem.removeprefix("at ").partition(": ")
                self.problem(file, _key(prefix, where), f"{message} (schemas/{schema}.schema.json)")
                continue
            found.append((file, prefix, value))
        return found

    def _each_tool(self, file: str, prefix: str, decls: dict[str, Any]) -> dict[str, Any]:
        """The declarations of a tools object that pass the schema, each checked on its
        own: one broken tool is reported, and the others still load."""
        whole = schemas.protocol("tools").schema
        one = schemas.compile_schema({"$defs": whole["$defs"], "$ref": "#/$defs/tool"}, "schemas/tools.schema.json")
        name_ok = schemas.compile_schema({"$defs": whole["$defs"], "$ref": "#/$defs/name"}, "schemas/tools.schema.json")
        good = {}
        for name, d in decls.items():
            key = _key(prefix, "/" + name)
            problem = schemas.first_error(name_ok, name)
            if problem:
                self.problem(file, key, f"{name[:80]!r} is not a tool name (letters, digits, '_' and '-', "
                                        "starting with a letter, at most 64) (schemas/tools.schema.json)")
                continue
            problem = schemas.first_error(one, d)
            if problem:
                where, _, message = problem.removeprefix("at ").partition(": ")
                self.problem(file, _key(key, where), f"{message} (schemas/tools.schema.json)")
                self.broken.add(name)
                continue
            good[name] = d
        return good

    # -- tools -----------------------------------------------------------
    def tools(self) -> dict[str, Tool]:
        out: dict[str, Tool] = {}
        for file, prefix, decls in self._declarations("tools", "tools"):
            for name, d in decls.items():
                key = _key(prefix, "/" + name)
                if name in (NOOP, LESSON_TOOL) or name in TASK_TOOLS + MESSAGE_TOOLS:
                    self.problem(file, key, f"{name!r} is fleet's own tool; choose another name")
                elif name in out:
                    self.problem(file, key, f"tool {name!r} is declared twice (also in {out[name].source})")
                else:
                    tool = self._tool(file, key, name, d)
                    if tool is not None:
                        out[name] = tool
                    else:
                        self.broken.add(name)
        return out

    def _tool(self, file: str, key: str, name: str, d: dict[str, Any]) -> Tool | None:
        before = len(self.problems)
        schema = d.get("input", {"type": "object", "properties": {}, "additionalProperties": False})
        validator = None
        where = f"{file}: {key}.input"
        try:
            validator = schemas.compile_schema(schema, where)
        except FleetError as e:
            self.problem(file, f"{key}.input", str(e).removeprefix(f"{where}: "))
        if schema.get("type") != "object":
            self.problem(file, f"{key}.input", "must be a schema of \"type\": \"object\" (tool inputs are objects)")
        fields = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        aliases = tuple(d.get("needs", {}))
        names = CALL_NAMES

        def text(value: str, at: str, allowed: tuple[str, ...]) -> Text:
            try:
                t = compile_text(value)
            except TemplateError as e:
                self.problem(file, at, str(e))
                return Text(())
            self._refs(file, at, t.refs, allowed, fields)
            return t

        def doc(value: str, at: str, allowed: tuple[str, ...]) -> DocRef | None:
            coll, _, ident = value.partition("/")
            if coll not in self.cfg.collections:
                self.problem(file, at, f"unknown collection {coll!r} (collections in {CONFIG_PATH}: "
                                       f"{names_of(self.cfg.collections)})")
                return None
            t = text(ident, at, allowed)
            literal = "".join(p for p in t.parts if isinstance(p, str))
            if ".." in literal or any(not (c.isascii() and (c.isalnum() or c in "_.-")) for c in literal):
                self.problem(file, at, f"{value[:80]!r}: a document id is letters, digits, '_', '.' and '-' "
                                       "(no '/', no '..') around its {references}")
            return DocRef(coll, t, value)

        def conditions(items: list[Any], at: str, allowed: tuple[str, ...]) -> tuple[Condition, ...]:
            out = []
            for i, (left, op, right) in enumerate(items):
                where = f"{at}[{i}]"
                lv, rv = self._value(file, where, left, allowed, fields), self._value(file, where, right, allowed, fields)
                if op in ("in", "not in") and not isinstance(right, (list, str)):
                    self.problem(file, where, f"{op!r} needs a list (or a reference to one) on the right")
                out.append(Condition(lv, op, rv, canonical.dumps_line([left, op, right]).decode()))
            return tuple(out)

        needs = []
        for alias, value in d.get("needs", {}).items():
            ref = doc(value, f"{key}.needs.{alias}", names)
            if ref is not None:
                needs.append((alias, ref))
        later = names + aliases
        self._needed = {alias: ref.collection for alias, ref in needs}
        absent = [r for i, v in enumerate(d.get("absent", [])) if (r := doc(v, f"{key}.absent[{i}]", later)) is not None]
        checks = conditions(d.get("check", []), f"{key}.check", later)
        effects = []
        for i, decl in enumerate(d["effects"]):
            at = f"{key}.effects[{i}]"
            seen = len(self.problems)
            ref = doc(decl["doc"], f"{at}.doc", later)
            value = self._value(file, f"{at}.value", decl["value"], later, fields) if "value" in decl else None
            when = conditions(decl.get("when", []), f"{at}.when", later)
            if ref is None or len(self.problems) > seen:
                continue  # one line for this effect's mistake, not more that follow from it
            eff = Effect(decl["op"], ref, tuple(decl["path"].split(".")) if "path" in decl else (), value, when)
            self._effect_shape(file, at, eff, "value" in decl, fields)
            if self._effect_fields(file, at, eff):  # (a typo is one line, not also "no agent may do this")
                self._authority(file, at, eff)
                self._input_bounds(file, at, eff, schema, checks)
            effects.append(eff)
        self._needed = {}
        if len(self.problems) > before:
            return None
        return Tool(name, d["description"], schema, tuple(needs), tuple(absent), checks, tuple(effects), file, d.get("max"), validator)

    def _value(self, file: str, at: str, value: Any, allowed: tuple[str, ...], fields: dict[str, Any]) -> Any:
        if _depth(value) > TEMPLATE_DEPTH:
            self.problem(file, at, f"nests deeper than {TEMPLATE_DEPTH} levels: with a call's input inside, "
                                   "the delta could not be written")
            return None
        try:
            compiled = compile_value(value)
        except TemplateError as e:
            self.problem(file, at, str(e))
            return None
        self._refs(file, at, list(refs_in(compiled)), allowed, fields)
        return compiled

    def _refs(self, file: str, at: str, refs: Iterable[Ref], allowed: tuple[str, ...], fields: dict[str, Any]) -> None:
        for r in refs:
            if r.root not in allowed:
                self.problem(file, at, f"{{{r.dotted}}} names {r.root!r}, which is not one of {', '.join(allowed)}")
            elif r.root == "input":
                if not r.path:
                    continue
                if r.path[0] not in fields:
                    known = ", ".join(sorted(fields)) or "none"
                    self.problem(file, at, f"{{{r.dotted}}}: the input schema has no field {r.path[0]!r} (fields: {known})")
            elif r.root in ("agent", "tick", "n", "id") and r.path:
                self.problem(file, at, f"{{{r.dotted}}}: {r.root!r} has no fields")
            elif r.root in self._needed and r.path:  # a needed document's field: one its closed schema has
                coll = self._needed[r.root]
                has = self._fields(coll, None)
                if has is not None and r.path[0] not in has | {"id"}:
                    self.problem(file, at, f"{{{r.dotted}}}: {r.path[0]!r} is not a field of {coll} documents "
                                           f"(their schema's properties: {names_of(has)})")

    def _effect_shape(self, file: str, at: str, e: Effect, has_value: bool, fields: dict[str, Any]) -> None:
        needs_path = e.op in ("set", "incr", "add", "remove", "append")
        if needs_path and not e.path:
            self.problem(file, at, f"op {e.op!r} needs a 'path' (the field it changes)")
        if not needs_path and e.path:
            self.problem(file, f"{at}.path", f"op {e.op!r} takes no path")
        if e.op == "delete":
            if has_value:
                self.problem(file, f"{at}.value", "op 'delete' takes no value")
            return
        if not has_value:
            self.problem(file, at, f"op {e.op!r} needs a 'value'")
            return
        v = e.value
        if e.op == "create" and not isinstance(v, dict):
            self.problem(file, f"{at}.value", "op 'create' needs the document, an object")
        elif e.op == "append" and not (isinstance(v, dict) and "id" in v):
            self.problem(file, f"{at}.value", "op 'append' needs an item that is an object with an 'id'")
        elif e.op == "incr" and not (type(v) is int or (isinstance(v, Text) and v.whole is not None)):
            self.problem(file, f"{at}.value", "op 'incr' needs an integer (or a reference to one)")
        elif e.op == "incr" and isinstance(v, Text) and v.whole is not None and v.whole.root == "input":
            sub = fields.get(v.whole.path[0]) if v.whole.path else None
            if isinstance(sub, dict) and "type" in sub and sub["type"] != "integer":
                self.problem(file, f"{at}.value", f"op 'incr' adds {{{v.whole.dotted}}}, which the input schema "
                                                  f"says is {sub['type']!r}, not an integer")

    def _input_bounds(self, file: str, at: str, e: Effect, schema: dict[str, Any],
                      checks: tuple[Condition, ...]) -> None:
        """Warn where a field an effect writes is exactly one input value ("{input.x}")
        and the input schema allows what the collection's schema refuses (a maximum,
        a minimum, a length or an enum of both that disagree): every such call
        quarantines the agent's turn. A warning: many calls may still be within both.
        The tool's checks and the effect's ``when`` are read as far as they plainly
        narrow that input ("!=" or "not in" literals leave its enum); one that says
        more of it (==, in, or another reference) leaves it unjudged."""
        if e.op not in ("set", "create", "append"):
            return
        start: tuple[str | None, ...] = (*e.path, ITEMS) if e.op == "append" else e.path

        def walk(value: Any, place: tuple[str | None, ...]) -> Iterator[tuple[Ref, tuple[str | None, ...]]]:
            if isinstance(value, Text) and value.whole is not None and value.whole.root == "input" and value.whole.path:
                yield value.whole, place
            elif isinstance(value, dict):
                for k, v in value.items():
                    yield from walk(v, (*place, k))

        for ref, place in walk(e.value, start):
            mine = _parts(schema, schema)
            for step in ref.path:
                mine = _below(mine, schema, step)
            bounds = _narrowed(_bounds(mine), ref, checks + e.when)
            if bounds is None:
                continue
            theirs = self._place(e.doc.collection, place)
            why = _looser(bounds, _bounds(theirs))
            if why:
                field = ".".join("items" if p is ITEMS else str(p) for p in place) or "the document"
                self.warned.append(f"{file}: {at}.value: {{{ref.dotted}}} {why[0]} (the tool's input schema), but "
                                   f"{e.doc.collection} documents' {field} {why[1]} (schemas/"
                                   f"{self.cfg.collections[e.doc.collection].schema}): every such call is quarantined")

    def _authority(self, file: str, at: str, e: Effect) -> None:
        """Refuse an effect that no agent could ever apply under the collection's rules."""
        coll = self.cfg.collections[e.doc.collection]
        if e.op != "create" and e.path and e.path[0] in coll.fixed:
            self.problem(file, at, f"{e.op} {e.doc.collection} {'.'.join(e.path)}: field {e.path[0]!r} is fixed once "
                                   f"a document exists (collections.{coll.name}.fixed or its owner field); no agent may change it")
            return
        grants = [r for a in self.cfg.agents.values() for r in a.grants.get(coll.name, ())]
        if not _allowed(coll, e, grants):
            who = "its owner" if _may_own(coll, e) else "an agent that does not own it"
            self.problem(file, at, f"{_describe(e)}: collections.{coll.name} in {CONFIG_PATH} lets no agent do this as {who} "
                                   "(add a rule to 'own', 'others' or an agent's 'grants')")

    def agents_may(self, tools: dict[str, Tool]) -> None:
        """Refuse an agent offered a tool whose unconditional effect its rules never allow:
        every call of it would be quarantined (a triager given `assign` without the grant)."""
        answers: dict[tuple[str, int, tuple[Any, ...]], bool] = {}  # agents alike share answers
        for aid, agent in sorted(self.cfg.agents.items()):
            offered = sorted(tools) if agent.actions is None else [n for n in agent.actions if n in tools]
            for name in offered:
                for i, e in enumerate(tools[name].effects):
                    coll = self.cfg.collections[e.doc.collection]
                    if e.when:
                        continue
                    grants = agent.grants.get(coll.name, ())
                    key = (name, i, grants)
                    if key not in answers:
                        answers[key] = _allowed(coll, e, list(grants))
                    if answers[key]:
                        continue
                    where = f"agents.{aid}.actions" if agent.actions is not None else f"agents.{aid}"
                    self.problem(CONFIG_PATH, where, f"{aid} has tool {name!r}, whose effect {_describe(e)} "
                                                     f"({tools[name].source}: {name}.effects[{i}]) collections.{coll.name} "
                                                     f"and agents.{aid}.grants never allow {aid}: every such call would "
                                                     "be quarantined (grant it, or leave the tool out of its actions)")
                    break

    # -- the prompt ------------------------------------------------------
    def prompt(self) -> PromptSpec | None:
        found = self._declarations("prompt", "prompt")
        if not found and self.cfg.declared.get("prompt") is None:
            return self._prompt(CONFIG_PATH, "prompt", default_prompt(self.cfg))
        if not found:
            return None
        file, prefix, value = found[0]
        return self._prompt(file, prefix, value)

    def _prompt(self, file: str, key: str, d: dict[str, Any]) -> PromptSpec | None:
        before = len(self.problems)
        rules = d.get("rules", RULES)
        rules_text = "\n".join(rules) if isinstance(rules, list) else rules

        def text(value: str, at: str, names: tuple[str, ...] = SHARED_NAMES, fields: frozenset[str] | set[str] | None = frozenset(),
                 of: str = "") -> Text:
            """A template whose names are ``names`` and, when known, the item's ``fields`` (None: any)."""
            try:
                t = compile_text(value)
            except TemplateError as e:
                self.problem(file, at, str(e))
                return Text(())
            for r in t.refs:
                if r.root in names or r.root == "$" or fields is None or r.root in fields:
                    continue
                own = " (only an agent's own sections know {agent} and {persona})" if r.root in OWN_NAMES else ""
                item = f"not a field of {of} documents (their schema's properties) and " if of else ""
                self.problem(file, at, f"{{{r.dotted}}}: {r.root!r} is {item}not one of {', '.join(names)}{own}")
            return t

        def where(w: dict[str, Any], at: str, names: tuple[str, ...] = SHARED_NAMES) -> tuple[Where, ...]:
            out = []
            for f, v in w.items():
                if isinstance(v, dict):
                    if v["collection"] not in self.cfg.collections:
                        self.problem(file, f"{at}.{f}.collection", f"unknown collection {v['collection']!r}")
                        continue
                    out.append(Where(f, Selection(v["collection"], where(v.get("where", {}), f"{at}.{f}.where", names)), at))
                else:
                    out.append(Where(f, text(v, f"{at}.{f}", names) if isinstance(v, str) else v, at))
            return tuple(out)

        def sections(items: list[dict[str, Any]], at: str, names: tuple[str, ...]) -> tuple[Section, ...]:
            out = []
            for i, s in enumerate(items):
                where_at = f"{at}[{i}]"
                kinds = [k for k in ("collection", "doc") if k in s]
                if len(kinds) > 1:
                    self.problem(file, where_at, "names both 'collection' and 'doc'; a section lists one")
                if "collection" in s and s["collection"] not in self.cfg.collections:
                    self.problem(file, f"{where_at}.collection", f"unknown collection {s['collection']!r} "
                                                              f"(collections: {names_of(self.cfg.collections)})")
                ref = None
                if "doc" in s:
                    coll, _, ident = s["doc"].partition("/")
                    if coll not in self.cfg.collections:
                        self.problem(file, f"{where_at}.doc", f"unknown collection {coll!r}")
                    ref = DocRef(coll, text(ident, f"{where_at}.doc", names), s["doc"])
                lists = "collection" in s or "list" in s
                shown = s.get("collection") or (ref.collection if ref else "")
                fields = self._fields(shown, s.get("list"))
                if lists and "line" not in s:
                    self.problem(file, where_at, "lists documents or items, so it needs a 'line'")
                if not lists and "text" not in s:
                    self.problem(file, where_at, "needs 'collection' and 'line', 'doc' and 'list' and 'line', or 'text'")
                if "list" in s and "doc" not in s:
                    self.problem(file, f"{where_at}.list", "lists a field of one document, so it needs 'doc'")
                if fields is not None and "collection" in s:  # a closed schema: a field it lacks is a typo
                    self._known_fields(file, where_at, s, fields, shown)
                out.append(Section(
                    title=s.get("title", ""), collection=s.get("collection"), doc=ref, list=s.get("list"),
                    where=where(s.get("where", {}), f"{where_at}.where", names), order=tuple(s.get("order", ())),
                    limit=s.get("limit"),
                    line=text(s["line"], f"{where_at}.line", names, fields, shown) if "line" in s else None,
                    text=text(s["text"], f"{where_at}.text", names, fields if ref else set(), shown if ref else "")
                    if "text" in s else None, share=float(s.get("share", 1.0))))
            return tuple(out)

        at = (lambda k: f"{key}.{k}") if key else (lambda k: k)  # noqa: E731
        spec = PromptSpec(text(rules_text, at("rules")), sections(d.get("shared", []), at("shared"), SHARED_NAMES),
                          sections(d.get("own", []), at("own"), SHARED_NAMES + OWN_NAMES),
                          text(d.get("ask", ASK), at("ask"), SHARED_NAMES + OWN_NAMES))
        self._fits(file, at, spec)
        return spec if len(self.problems) == before else None

    def _fits(self, file: str, at: Callable[[str], str], spec: PromptSpec) -> None:
        """The prompt's fixed part (the rules and the ask, sent whole every turn) fits in
        run.context_tokens: packing fits only the sections into it, so rules beyond it
        would be sent, and paid for, every turn. Counted as the prompt builder counts
        (fleet.prompt.tokens), on the templates' own text (what they name adds more)."""
        from fleet.prompt import tokens

        sizes = {"rules": tokens(_literal(spec.rules)), "ask": tokens(_literal(spec.ask))}
        room = self.cfg.run.context_tokens
        if sum(sizes.values()) > room:
            key = max(sizes, key=lambda k: sizes[k])
            self.problem(file, at(key), f"the prompt's fixed part (rules {sizes['rules']:,} and ask {sizes['ask']:,} "
                                        f"tokens, at 4 characters a token) is beyond run.context_tokens ({room:,}, "
                                        f"{CONFIG_PATH}), and is sent whole every turn: shorten it, or raise "
                                        "run.context_tokens")

    def _known_fields(self, file: str, at: str, s: dict[str, Any], fields: set[str], collection: str) -> None:
        """A section's ``order`` and ``where`` name fields its collection's documents
        can hold: a field its closed schema lacks would sort or filter on nothing."""
        known = fields | {"id"}
        for i, o in enumerate(s.get("order", ())):
            name = o[1:] if isinstance(o, str) and o.startswith("-") else o
            if name not in known:
                self.problem(file, f"{at}.order[{i}]", f"{ids.printable(repr(name), 80)} is not a field "
                             f"of {collection} documents (their schema's properties: {names_of(fields)})")
        for f in s.get("where", {}):
            if f not in known:
                self.problem(file, f"{at}.where.{ids.printable(f, 80)}", f"not a field of {collection} documents "
                             f"(their schema's properties: {names_of(fields)})")

    def _fields(self, collection: str, list_field: str | None) -> set[str] | None:
        """The fields a template may name for an item of ``collection`` (or of its
        ``list_field``): its schema's properties; None when the schema does not say."""
        return _closed(self._place(collection, (list_field, ITEMS) if list_field else ()))

    def _schema(self, collection: str) -> Any:
        """``collection``'s schema, parsed once; None if missing or not JSON."""
        if collection not in self._schemas:
            coll = self.cfg.collections.get(collection)
            data = self.read(f"schemas/{coll.schema}") if coll else None
            try:
                self._schemas[collection] = canonical.parse(data) if data else None
            except canonical.JSONProblem:
                self._schemas[collection] = None
        return self._schemas[collection]

    def _place(self, collection: str, path: Iterable[str | None]) -> list[dict[str, Any]]:
        """The parts of ``collection``'s schema that apply at ``path`` (field names,
        ITEMS for a list's items); none when the schema says nothing there."""
        root = self._schema(collection)
        parts = _parts(root, root)
        for step in path:
            parts = _below(parts, root, step)
        return parts

    def _unknown_field(self, collection: str, path: tuple[str | None, ...]) -> str | None:
        """Why ``path`` names a place no document of ``collection`` can hold (a field a
        closed schema lacks, at any depth), or None: an open schema allows any field."""
        root = self._schema(collection)
        parts = _parts(root, root)
        for i, step in enumerate(path):
            if not parts:
                return None  # the schema says nothing here, nor below
            here, parts = parts, _below(parts, root, step)
            if step is ITEMS:
                continue
            has = _closed(here)
            if has is None or step in has or (i == 0 and step == "id"):
                continue
            if i == 0:
                return f"{printable(repr(step), 80)} is not a field of {collection} documents " \
                       f"(their schema's properties: {names_of(has) or 'none'})"
            at = ""
            for p in path[:i]:
                at += " items" if p is ITEMS else f".{p}" if at else str(p)
            return f"{printable(repr(step), 80)} is not a field of {at} in {collection} documents " \
                   f"(the schema's properties there: {names_of(has) or 'none'})"
        return None

    def _effect_fields(self, file: str, at: str, e: Effect) -> bool:
        """Refuse an effect whose path, or a field of the object it writes, is one the
        collection's closed schema does not have: every call would be quarantined.
        True if the effect names only fields its documents can hold."""
        why = self._unknown_field(e.doc.collection, e.path)
        if why:
            self.problem(file, f"{at}.path", why)
            return False
        into: tuple[str | None, ...] = e.path + (ITEMS,) if e.op == "append" else e.path
        if e.op in ("create", "set", "append"):
            for path in _keys(e.value, into):
                why = self._unknown_field(e.doc.collection, path)
                if why:
                    self.problem(file, f"{at}.value", why)
                    return False
        return True

    def config_fields(self) -> None:
        """The fields the config names by path (a policy's key, a fixed or owner
        field, the path of an own, others or grants rule) are ones their collection's
        documents can hold: a typo there would never match a change, and the policy
        or the rule would silently not apply."""
        for key in sorted(self.cfg.policies):
            if key == "*":
                continue
            coll, _, dotted = key.partition("/")
            where = f"policies.{printable(key, 80)}"
            if coll not in self.cfg.collections:
                self.problem(CONFIG_PATH, where, f"unknown collection {printable(repr(coll), 80)} "
                                                 f"(collections in {CONFIG_PATH}: {names_of(self.cfg.collections)})")
                continue
            path: list[str] = []
            for step in dotted.split("."):
                if any(c in step for c in "*?["):  # a pattern from here on: it may match any field
                    break
                path.append(step)
            why = self._unknown_field(coll, tuple(path))
            if why:
                self.problem(CONFIG_PATH, where, why)
        for name, c in sorted(self.cfg.collections.items()):
            for f in c.fixed:  # (the owner field is fixed too)
                why = self._unknown_field(name, (f,))
                if why:
                    self.problem(CONFIG_PATH, f"collections.{name}.{'owner' if f == c.owner else 'fixed'}", why)
            for kind, rules in (("own", c.own), ("others", c.others)):
                self._rule_fields(f"collections.{name}.{kind}", name, rules)
        for aid, agent in sorted(self.cfg.agents.items()):
            for name, rules in sorted(agent.grants.items()):
                self._rule_fields(f"agents.{aid}.grants.{name}", name, rules)

    def _rule_fields(self, where: str, collection: str, rules: Iterable[Rule]) -> None:
        """Each rule's path names a field ``collection``'s documents can hold, up to
        its first '*' (which matches any key): "incr:salez" would allow nothing."""
        for i, rule in enumerate(rules):
            if rule.path is None:
                continue
            path = tuple(itertools.takewhile(lambda step: step != "*", rule.path))
            why = self._unknown_field(collection, path)
            if why:
                self.problem(CONFIG_PATH, f"{where}[{i}]", f"rule {printable(repr(str(rule)), 80)}: {why}")


ITEMS = None  # in a path into a schema: a list's items


def _parts(schema: Any, root: Any, seen: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The schema objects that all apply at one place: ``schema`` and, through
    each '$ref' within the schema, what it names (a document whose schema is
    {"$ref": "#/$defs/card"} has the fields of the card definition)."""
    out: list[dict[str, Any]] = []
    while isinstance(schema, dict) and len(out) < 64:  # (a chain of refs a person wrote: a loop ends, a long one stops)
        out.append(schema)
        ref = schema.get("$ref")
        if not isinstance(ref, str) or ref in seen:
            break
        seen |= {ref}
        schema = schemas.pointer(root, ref)
    return out


def _below(parts: list[dict[str, Any]], root: Any, step: str | None) -> list[dict[str, Any]]:
    """The parts that apply at field ``step`` of a place (ITEMS: at its items)."""
    out = []
    for p in parts:
        props = p.get("properties")
        sub = p.get("items") if step is ITEMS else props.get(step) if isinstance(props, dict) else None
        out += _parts(sub, root)
    return out


def _closed(parts: list[dict[str, Any]]) -> set[str] | None:
    """The fields an object at a place may hold, when a part closes it
    (additionalProperties false, no patternProperties); None when any field may be."""
    found: set[str] | None = None
    for p in parts:
        if p.get("additionalProperties", True) is False and "patternProperties" not in p:
            props = p.get("properties")
            names = set(props) if isinstance(props, dict) else set()
            found = names if found is None else found & names
    return found


_TIGHTER = {"maximum": min, "maxLength": min, "maxItems": min, "minimum": max, "minLength": max, "minItems": max}


def _bounds(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The bounds all ``parts`` set together at one place: the tightest of each
    (numbers only; a bool is no bound), and the values an enum or const allows."""
    out: dict[str, Any] = {}
    for p in parts:
        for key, tighter in _TIGHTER.items():
            v = p.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[key] = tighter(out[key], v) if key in out else v
        allowed = [p["const"]] if "const" in p else p.get("enum") if isinstance(p.get("enum"), list) else None
        if allowed is not None:
            lines = {canonical.dumps_line(v) for v in allowed}
            out["enum"] = out["enum"] & lines if "enum" in out else lines
    return out


def _narrowed(bounds: dict[str, Any], ref: Ref, conditions: tuple[Condition, ...]) -> dict[str, Any] | None:
    """``bounds`` of the input at ``ref`` less the values ``conditions`` rule out
    ("!=" a literal, "not in" literals), or None where a condition says more of it."""
    out = dict(bounds)
    for c in conditions:
        sides = [s for s in (c.left, c.right) if isinstance(s, Text) and s.whole is not None and s.whole == ref]
        if not sides:
            continue
        other = c.right if sides[0] is c.left else c.left
        values = _literal_value(other)
        if c.op not in ("!=", "not in") or values is MISSING:
            return None
        ruled = [values] if c.op == "!=" else values if isinstance(values, list) else []
        if "enum" in out:
            out["enum"] = out["enum"] - {canonical.dumps_line(v) for v in ruled}
    return out


def _literal_value(value: Any) -> Any:
    """A compiled condition side as the JSON it was written as, or MISSING where it names anything."""
    if isinstance(value, Text):
        return _literal(value) if not value.refs else MISSING
    if isinstance(value, list):
        items = [_literal_value(v) for v in value]
        return MISSING if any(v is MISSING for v in items) else items
    return value


def _looser(mine: dict[str, Any], theirs: dict[str, Any]) -> tuple[str, str] | None:
    """(what the input allows, what the field allows) where the input declares a
    bound looser than one the field declares, or None."""
    words = {"maximum": "is at most {}", "minimum": "is at least {}", "maxLength": "is at most {} characters",
             "minLength": "is at least {} characters", "maxItems": "holds at most {} items",
             "minItems": "holds at least {} items"}
    for key, tighter in _TIGHTER.items():
        if key in mine and key in theirs and tighter(mine[key], theirs[key]) != mine[key]:
            text = words[key].replace("is at", "may be at").replace("holds at", "may hold at")
            return text.format(mine[key]), words[key].format(theirs[key])
    if "enum" in mine and "enum" in theirs and not mine["enum"] <= theirs["enum"]:
        extra = sorted(mine["enum"] - theirs["enum"])
        return (f"may be {printable(', '.join(x.decode() for x in extra[:5]), 200)}",
                f"is one of {printable(', '.join(x.decode() for x in sorted(theirs['enum'])[:10]), 300)}")
    return None


def _keys(value: Any, at: tuple[str | None, ...]) -> Iterator[tuple[str | None, ...]]:
    """The path of every key of the objects a value template writes at ``at``."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*at, k)
            yield from _keys(v, (*at, k))


def names_of(items: Iterable[str], limit: int = 20) -> str:
    """Names for a message, sorted: at most ``limit`` of them and how many more (a
    world of 1,000 tools made one error line of 8,000 characters)."""
    ordered = sorted(items)
    shown = ", ".join(ordered[:limit])
    return shown + (f", and {len(ordered) - limit} more" if len(ordered) > limit else "")


SHARED_NAMES = ("tick", "fleet")  # what every prompt template may name
OWN_NAMES = ("agent", "persona")  # and an agent's own sections
TEMPLATE_DEPTH = 12  # a value template's nesting: the input in it may nest 48, a delta holds 64


def warnings(cfg: Config, read: Reader, world: World) -> list[tuple[str, str]]:
    """(file, what) for what a checked world allows but its author likely did not
    mean: warnings, not problems (each runs, and the example worlds differ on them).
    An agent with no persona, where the prompt names ``{persona}`` for each agent
    (in the ask, or an own section whose item cannot hold a field of that name):
    its prompt says nothing there. The persona is optional in the config because a
    world may keep it in a document instead (an own section listing it by ``{agent}``).
    And what the loader warned of: a tool's input looser than the field it writes
    (:meth:`_Loader._input_bounds`)."""
    loader = _Loader(cfg, read)

    def names(t: Text | None, collection: str | None, list_field: str | None = None) -> bool:
        if t is None or not any(r.root == "persona" for r in t.refs):
            return False
        if collection is None:
            return True  # no item: {persona} is the agent's
        fields = loader._fields(collection, list_field)
        return fields is not None and "persona" not in fields  # (an open schema's item may hold its own)

    spec = world.prompt
    out = [(w.partition(": ")[0], w.partition(": ")[2]) for w in world.warnings]
    named = names(spec.ask, None) or any(
        names(s.text, s.doc.collection if s.doc else None)
        or names(s.line, s.collection or (s.doc.collection if s.doc else None), s.list) for s in spec.own)
    if not named:
        return out
    return out + [(CONFIG_PATH, f"agents.{aid}: no persona, though the prompt names {{persona}} for each agent (in its "
                          f"own sections or ask): {aid}'s prompt has nothing there")
            for aid, a in sorted(cfg.agents.items()) if not a.persona]


def signers_problems(cfg: Config, read: Reader, what: Callable[[str], str | None] | None = None
                     ) -> list[tuple[str, str]]:
    """(file, what is wrong) if signing.allowed_signers names a file ``read`` does not
    find, or one that allows no key as OpenSSH reads it (fleet.signing.signer_lines):
    every worker branch would then be quarantined unread, tick after tick. A line
    OpenSSH would skip is named too: the key it meant is not allowed. ``what``
    says what is there when ``read`` finds no file ("is a folder, not a regular file").
    (``read`` must see the whole tree: ``fleet validate`` reads the file from disk;
    a snapshot holds only state/ and schemas/.)"""
    from fleet.signing import signer_lines

    path = cfg.allowed_signers
    if path is None:
        return []
    data = read(path)
    key = "signing.allowed_signers"
    if data is None:
        there = what(path) if what is not None else None
        if there:
            return [(CONFIG_PATH, f"{key}: names {path}, which {there}: every worker branch would be quarantined "
                                  "unread (put the file itself there, in ssh-keygen's allowed-signers format)")]
        return [(CONFIG_PATH, f"{key}: names {path}, which does not exist: every worker branch would be quarantined "
                              "unread (add the file, in ssh-keygen's allowed-signers format)")]
    usable, bad = signer_lines(data)
    out = [(path, f"line {n}: OpenSSH skips it, so the key it meant is not allowed: {why}") for n, why in bad]
    if not usable:
        out.insert(0, (CONFIG_PATH, f"{key}: names {path}, which allows no key: every worker branch would be "
                                    "quarantined unread (one line a worker: '<worker> <key type> <key>')"))
    return out


def _literal(t: Text) -> str:
    """A template's own text, without what it names."""
    return "".join(p for p in t.parts if isinstance(p, str))


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def default_prompt(cfg: Config) -> dict[str, Any]:
    """The prompt of a world that declares none: every collection in the shared
    part, and each agent's own documents (by the collection's owner field)."""
    shared: list[dict[str, Any]] = []
    own: list[dict[str, Any]] = [{"text": "You are {agent}. {persona}"}]
    for name, coll in sorted(cfg.collections.items()):
        shared.append({"title": f"{name}:", "collection": name, "line": "- {$:300}", "share": 0.5})
        if coll.owner == "$id":
            own.append({"title": f"Your document in {name}:", "doc": f"{name}/{{agent}}", "text": "{$:1000}"})
        elif coll.owner:
            own.append({"title": f"Your {name}:", "collection": name, "where": {coll.owner: "{agent}"},
                        "line": "- {$:300}", "limit": 20})
    return {"rules": RULES, "shared": shared, "own": own}


def _key(prefix: str, pointer: str) -> str:
    """A JSON pointer from a schema error as a key: /post/effects/0/doc -> post.effects[0].doc."""
    out = prefix
    for part in [p for p in pointer.split("/") if p]:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def _allowed(coll: Collection, e: Effect, grants: list[Any]) -> bool:
    """Whether some caller with ``grants`` could apply the effect (the caller is
    taken to be the owner, or the value, wherever the templates may make it so)."""
    rules = list(coll.others) + grants + (list(coll.own) if _may_own(coll, e) else [])
    me = "\0caller"
    value = _self_value(e.value, me) if e.op in ("set", "add", "remove") else None
    return any(r.allows(e.op, e.path, value, me) for r in rules)


def _describe(e: Effect) -> str:
    return f"{e.op} {e.doc.collection}{' ' + '.'.join(e.path) if e.path else ''}"


def _may_own(coll: Collection, e: Effect) -> bool:
    """Whether the caller may own the document the effect touches (False only when it cannot)."""
    if coll.owner is None:
        return False
    if coll.owner == "$id":
        return bool(e.doc.id.refs)
    if e.op == "create":
        v = e.value.get(coll.owner) if isinstance(e.value, dict) else None
        return isinstance(v, Text) and bool(v.refs)
    return True


def _self_value(value: Any, me: str) -> Any:
    """The value an effect sets, as the authority sees it: the caller if it may be."""
    if isinstance(value, Text):
        return me if value.refs else value.text(Scope({}))
    return value


def _index_key(v: Any) -> Any:
    """A scalar as an index key that keeps JSON's kinds apart (true is not 1); a
    missing field is null. None for lists and objects, which are not indexed."""
    if v is None:
        return ("null",)
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, (int, float)):
        return ("number", v)
    if isinstance(v, str):
        return ("string", v)
    return None


# -- the state at main, as tools and prompts read it -------------------------
@dataclass
class View:
    """Main's documents as the tick started, read once per worker and never
    changed by a turn: what every agent sees does not depend on which agents
    share its worker.

    A view reads only what its turns ask of it: one document by its path
    (:meth:`get`), a collection's ids from the tree's listing without reading
    a blob (:meth:`ids`), a collection in id order only as far as a reader
    goes (:meth:`in_id_order`), and the whole of a collection only when a
    section sorts or filters all of it (:meth:`scan`). A document is checked
    against its schema when it is handed out (:meth:`get`, :meth:`by`,
    :meth:`checked`), so one that no turn shows costs a parse at most.
    ``full`` reads and checks every document of a collection at its first
    use, as workers once did: the reference the reading above is tested
    against (a prompt built either way is the same, byte for byte).

    ``index`` (fleet.fieldindex.Index, one that describes the commit of
    ``snap``): a section that sorts or filters a whole collection by fields
    it holds reads their rows instead of every document (:meth:`rows`); the
    documents it shows are read and checked by path as ever, each against its
    row. An index in doubt is dropped, and the view reads main itself.
    """

    snap: Any  # fleet.state.Snapshot
    tick: int = 0
    full: bool = False
    index: Any = None  # fleet.fieldindex.Index
    doubt: str = ""  # why the index was dropped, if it was
    _docs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # whole collections, checked
    _raw: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # whole collections, parsed
    _one: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)  # checked, one by one
    _index: dict[tuple[str, str, bool], dict[Any, list[dict[str, Any]]]] = field(default_factory=dict)
    _stubs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # rows of the field index
    _stub_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _ordered: dict[tuple[str, tuple[str, ...], bool], tuple[list[dict[str, Any]], dict[str, int]]] = \
        field(default_factory=dict)
    _listing: dict[str, dict[str, str]] | None = None  # collection -> id -> path
    _paths: list[str] = field(default_factory=list)  # under state/, sorted
    _ids: dict[str, list[str]] = field(default_factory=dict)

    # -- what turns and prompts ask ----------------------------------------
    def ids(self, collection: str) -> list[str]:
        """The ids of ``collection``'s documents, sorted (one list, kept: do not change it)."""
        found = self._ids.get(collection)
        if found is None:
            found = self._ids[collection] = sorted(self.docs(collection) if self.full else self._files(collection))
        return found

    def get(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        if self.full:
            return self.docs(collection).get(doc_id)
        key = (collection, doc_id)
        if key not in self._one:
            path = self._files(collection).get(doc_id)
            coll = self.snap.config.collections.get(collection)
            if path is None or coll is None or path != coll.doc_path(doc_id):
                self._one[key] = None
            else:
                self._one[key] = self._check(path, self.snap.read(path))
        return self._one[key]

    def checked(self, collection: str, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` (from :meth:`scan`, :meth:`in_id_order` or :meth:`by_unchecked`)
        once it passed its schema; a worker that cannot read it says which and why."""
        if self.full:
            return doc
        found = self.get(collection, doc["id"])
        if found is None:  # listed under another path than its id's: the check says so
            path = self._files(collection)[doc["id"]]
            found = self._check(path, self.snap.read(path))
        stubs = self._stubs.get(collection)
        if stubs is not None and stubs.get(doc["id"]) is doc:  # a row of the index: it must say what main says
            if not same_fields(doc, found, self._stub_fields[collection]):
                self.drop_index(f"its row of {collection}/{doc['id']} does not match the document")
                raise Doubt(self.doubt)
        return found

    def docs(self, collection: str) -> dict[str, dict[str, Any]]:
        """Every document of ``collection``, checked."""
        found = self._docs.get(collection)
        if found is None:
            if self.full:
                found = self._load(collection)
            else:
                found = {i: self.checked(collection, d) for i, d in self.scan(collection).items()}
            self._docs[collection] = found
        return found

    def by(self, collection: str, field_name: str, value: Any) -> list[dict[str, Any]]:
        """The documents whose ``field_name`` is ``value``, checked (an index built once)."""
        return [self.checked(collection, d) for d in self.by_unchecked(collection, field_name, value)]

    def by_unchecked(self, collection: str, field_name: str, value: Any,
                     fields: Iterable[str] = ()) -> list[dict[str, Any]]:
        """:meth:`by` as parsed: for a reader that sorts and filters before it
        shows anything (each shown one goes through :meth:`checked`). With
        ``fields`` (the ones the reader sorts and filters by), from :meth:`rows`."""
        docs = self.rows(collection, fields) if fields else self.scan(collection)
        key = (collection, field_name, docs is self._stubs.get(collection))
        idx = self._index.get(key)
        if idx is None:
            idx = self._index[key] = {}
            for doc in docs.values():
                v = doc.get(field_name)
                k = ("string", v) if type(v) is str else _index_key(v)
                if k is not None:
                    idx.setdefault(k, []).append(doc)
        k = _index_key(None if value is MISSING else value)
        return idx.get(k, []) if k is not None else [d for d in docs.values() if d.get(field_name) == value]

    def rows(self, collection: str, fields: Iterable[str]) -> dict[str, dict[str, Any]]:
        """For sorting and filtering all of ``collection`` by ``fields``: each
        document's row of the field index (its id and those fields, null for a
        missing one) when the view has an index that holds them, else each
        document as parsed (:meth:`scan`). Either goes through :meth:`checked`
        to be shown."""
        wanted = set(fields) - {"id"}
        if self.full or self.index is None or collection in self._raw \
                or not wanted <= set(self.index.fields.get(collection, ())):
            return self.scan(collection)
        found = self._stubs.get(collection)
        if found is None:
            try:
                found = self.index.rows(collection, self._files(collection))
            except Doubt as e:
                self.drop_index(str(e))
                return self.scan(collection)
            self._stubs[collection] = found
            self._stub_fields[collection] = self.index.fields[collection]
        return found

    def ordered(self, collection: str, fields: Iterable[str], order: tuple[str, ...],
                sort: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
                ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """:meth:`rows` put in ``order`` by ``sort``, and each id's place in it: sorted
        once a view, for every section (and every agent) that lists the collection so.
        Rows of the field index kept in that order go through the sort in one pass;
        if the sort moved any, the index is in doubt (:class:`Doubt`)."""
        docs = self.rows(collection, fields)
        stubs = docs is self._stubs.get(collection)
        key = (collection, order, stubs)
        found = self._ordered.get(key)
        if found is None:
            listed = list(docs.values())
            ordered = sort(listed)
            if stubs and self.index is not None and self.index.orders.get(collection) == order \
                    and any(a is not b for a, b in zip(ordered, listed, strict=True)):
                # the rows said to be in this order (fleet.fieldindex) are not: sorted, they moved
                self.drop_index(f"{collection}.json: its rows are not in the order describes.json says")
                raise Doubt(self.doubt)
            found = self._ordered[key] = (ordered, {d["id"]: i for i, d in enumerate(ordered)})
        return found

    def read_ahead(self, collection: str, ids: Iterable[str]) -> None:
        """Read the blobs of these documents in one request, for :meth:`checked` to come."""
        files = self._files(collection)
        paths = [files[i] for i in ids if (collection, i) not in self._one and i in files]
        if len(paths) > 1 and not self.full:
            self.snap.read_many(paths)

    def read_ahead_many(self, ids: dict[str, list[str]]) -> None:
        """:meth:`read_ahead` of several collections' documents, in one request."""
        if self.full:
            return
        paths = []
        for collection, wanted in ids.items():
            files = self._files(collection)
            paths += [files[i] for i in wanted if (collection, i) not in self._one and i in files]
        if paths:
            self.snap.read_many(paths)

    def drop_index(self, why: str) -> None:
        """Read main itself from now on: the index is in doubt."""
        self.index, self.doubt = None, why
        self._stubs.clear()
        self._index = {k: v for k, v in self._index.items() if not k[2]}
        self._ordered = {k: v for k, v in self._ordered.items() if not k[2]}

    def scan(self, collection: str) -> dict[str, dict[str, Any]]:
        """Every document of ``collection`` as parsed, not yet checked: for
        sorting and filtering a whole collection."""
        if self.full:
            return self.docs(collection)
        found = self._raw.get(collection)
        if found is None:
            files = self._files(collection)
            blobs = self.snap.read_many(sorted(files.values()))
            found = {}
            for i, p in files.items():
                try:
                    doc = canonical.parse_trusted(blobs[p] or b"")
                except ValueError:
                    doc = None
                found[i] = doc if type(doc) is dict and doc.get("id") == i else self._parse(p, i, blobs[p])
            self._raw[collection] = found
        return found

    def in_id_order(self, collection: str, descending: bool = False) -> Iterator[dict[str, Any]]:
        """The documents of ``collection`` in id order, as parsed, read a batch at a
        time as the caller goes on: a section that lists a collection by id and
        fills its room with the first few hundred reads no more than those."""
        if self.full or collection in self._raw:
            docs = self.scan(collection)
            yield from (docs[i] for i in sorted(docs, reverse=descending))
            return
        files = self._files(collection)
        ids = sorted(files, reverse=descending)
        at, batch = 0, 64
        while at < len(ids):
            chunk = ids[at : at + batch]
            blobs = self.snap.read_many([files[i] for i in chunk])
            for i in chunk:
                yield self._parse(files[i], i, blobs[files[i]])
            at += batch
            batch = min(batch * 2, 4096)

    # -- reading ---------------------------------------------------------------
    def _files(self, collection: str) -> dict[str, str]:
        """id -> path of ``collection``'s documents, from the listing alone."""
        if self._listing is None:
            self._listing = {}
            self._paths = self.snap.under("state")  # a git snapshot's are sorted once, for every reader
        found = self._listing.get(collection)
        if found is None:
            found = {}
            if collection in self.snap.config.collections:
                prefix = f"state/{collection}/"
                lo = bisect.bisect_left(self._paths, prefix)
                hi = bisect.bisect_left(self._paths, prefix[:-1] + "0")  # "0" is the character after "/"
                found = {p.rpartition("/")[2][:-5]: p for p in self._paths[lo:hi] if p.endswith(".json")}
            self._listing[collection] = found
        return found

    def _parse(self, path: str, doc_id: str, data: bytes | None) -> dict[str, Any]:
        """A document as main holds it (the merge writes canonical JSON, so this is
        the value a check would give); what does not parse so is checked at once."""
        try:
            doc = canonical.parse_trusted(data or b"")
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("id") == doc_id:
            return doc
        return self._check(path, data)

    def _check(self, path: str, data: bytes | None) -> dict[str, Any]:
        from fleet.checks import load_in

        # Main should hold only valid documents, but a person's push to a remote main is
        # not checked by fleet: a worker that cannot read one says which, and why.
        doc, problem = load_in(self.snap, path, data or b"")
        if problem:
            raise FleetError(f"{path}: {problem}; the worker cannot read main's state: "
                             "fix the file or revert the commit that changed it")
        assert isinstance(doc, dict)
        return doc

    def _load(self, collection: str) -> dict[str, dict[str, Any]]:
        if collection not in self.snap.config.collections:
            return {}
        out = {}
        for path, data in sorted(self.snap.read_many(self.snap.under(f"state/{collection}")).items()):
            doc = self._check(path, data)
            out[doc["id"]] = doc
        return out
