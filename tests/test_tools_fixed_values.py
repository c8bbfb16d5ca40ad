"""`fleet validate` refuses tools no call can make valid (fleet.tools.declaration_problems).

A fixed value an effect writes (no {reference} in it) that the collection's schema
refuses where it lands: every call would be quarantined at the merge. Values are
generated, of right and wrong types, for every field a tool of the default world
writes, and for nested places of a made-up world (its schema open or closed, given
directly or through $ref and allOf); the oracle is the collection's schema itself,
on a valid document holding the value: validate names exactly the values it refuses.

An input schema whose own bounds no value meets (a minimum above its maximum, a
length beyond limits.max_delta_bytes for a value written whole into the delta):
bounds are generated; the oracle is the input's own validator on candidate values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from conftest import Fleet, run
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_world_fields import card_world

from fleet import canonical
from fleet.checks import world_report
from fleet.commands.init import init
from fleet.refs import Scope, compile_value, render
from fleet.state import MemorySnapshot
from fleet.template import examples, root
from fleet.tools import declaration_problems

TOOLS = "state/tools.json"
CONFIG = "state/config.json"


def default_files() -> dict[str, bytes]:
    """The default world, as `fleet init` copies it."""
    base = root()
    return {p.relative_to(base).as_posix(): p.read_bytes() for folder in ("state", "schemas")
            for p in (base / folder).rglob("*.json")}


FILES = default_files()
DECLARED: dict[str, Any] = json.loads(FILES[TOOLS])
COLLECTIONS: dict[str, Any] = json.loads(FILES[CONFIG])["collections"]


def validate_lines(files: dict[str, bytes]) -> list[str]:
    """What `fleet validate` says of the world's tools: fleet.world's problems and the tools no call can satisfy."""
    snap = MemorySnapshot(files)
    found, _ = world_report(snap.config, snap.read)
    return [f"{p}: {m}" for p, m in found + declaration_problems(snap.config, snap.read)]


def literal(value: Any) -> Any:
    """``value`` as a template that names nothing: its braces doubled."""
    if isinstance(value, str):
        return value.replace("{", "{{").replace("}", "}}")
    if isinstance(value, list):
        return [literal(v) for v in value]
    if isinstance(value, dict):
        return {k: literal(v) for k, v in value.items()}
    return value


def documents(collection: str) -> list[dict[str, Any]]:
    return [json.loads(data) for rel, data in sorted(FILES.items()) if rel.startswith(f"state/{collection}/")]


def document_validator(collection: str) -> Any:
    return jsonschema_rs.validator_for(json.loads(FILES[f"schemas/{COLLECTIONS[collection]['schema']}"]))


# -- fixed values in the default world's tools ------------------------------------------
SCOPE = Scope({"agent": "ada", "tick": 1, "n": 1, "id": "ada-t1-1", "input": {"text": "a note"}})


def places() -> list[tuple[str, int, str | None]]:
    """(tool, effect, field) for each field a default tool's effect writes a whole value
    to: a created document's fields (not its id, nor its owner, which the caller must be),
    the value a set writes (field None), the fields of an appended item."""
    out: list[tuple[str, int, str | None]] = []
    for name, tool in sorted(DECLARED.items()):
        for i, e in enumerate(tool["effects"]):
            owner = COLLECTIONS[e["doc"].partition("/")[0]].get("owner")
            if e["op"] == "create":
                out += [(name, i, k) for k in e["value"] if k not in ("id", owner)]
            elif e["op"] == "append":
                out += [(name, i, k) for k in e["value"]]
            elif e["op"] == "set":
                out.append((name, i, None))
    return out


PLACES = places()


def holding(tool: str, i: int, field: str | None, value: Any) -> tuple[str, dict[str, Any]]:
    """(collection, a valid document of it but for ``value`` where the effect writes it)."""
    e = DECLARED[tool]["effects"][i]
    coll = e["doc"].partition("/")[0]
    doc = json.loads(json.dumps(documents(coll)[0]))
    if e["op"] == "append":
        item = render(compile_value(e["value"]), SCOPE)
        assert document_validator(coll).is_valid({**doc, e["path"]: [item]}), item
        doc[e["path"]] = [{**item, field: value}]
    else:
        doc[field if field is not None else e["path"]] = value
    return coll, doc


def right_values(tool: str, i: int, field: str | None) -> list[Any]:
    """Values the field holds in the default world's documents, or a rendered call's."""
    e = DECLARED[tool]["effects"][i]
    coll = e["doc"].partition("/")[0]
    if e["op"] == "append":
        return [render(compile_value(e["value"][field]), SCOPE)]
    key = field if field is not None else e["path"]
    return [d[key] for d in documents(coll) if key in d] or [None]


SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.integers(-3, 300)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
           | st.integers(0, 4100).map(lambda n: "x" * n) | st.sampled_from(["{agent}", "{", "a}b", "ada", "ada-1"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                           max_size=3), max_leaves=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_fixed_value_the_schema_refuses_is_named_and_no_other(data: st.DataObject) -> None:
    tool, i, field = data.draw(st.sampled_from(PLACES), label="place")
    right = data.draw(st.booleans(), label="one it holds")  # else anything, right or wrong
    value = data.draw(st.sampled_from(right_values(tool, i, field)) if right else JSON, label="value")
    tools = json.loads(json.dumps(DECLARED))
    if field is None:
        tools[tool]["effects"][i]["value"] = literal(value)
    else:
        tools[tool]["effects"][i]["value"][field] = literal(value)
    lines = validate_lines({**FILES, TOOLS: canonical.dumps(tools)})
    coll, doc = holding(tool, i, field, value)
    valid = document_validator(coll).is_valid(doc)
    event("right" if valid else "wrong")
    if valid:
        assert lines == []
        return
    key = f"{tool}.effects[{i}].value" + (f".{field}" if field is not None else "")
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{TOOLS}: {key}"), lines
    assert f"(schemas/{COLLECTIONS[coll]['schema']})" in lines[0] or f", schemas/{COLLECTIONS[coll]['schema']})" in lines[0]
    assert lines[0].endswith(f"every call of {tool} would be quarantined") and "\n" not in lines[0]


# -- fixed parts at nested places, through $ref and allOf --------------------------------
KINDS: dict[str, Any] = {"string": "s", "integer": 1, "boolean": True, "array": ["s"]}


def nested_world(kind: str, closed: bool, by_ref: bool, wrap: str, create: Any, setting: Any) -> dict[str, bytes]:
    """Cards whose ``meta.a`` is of ``kind`` (``meta`` given as it is, through a $ref, or
    in an allOf); tool 'make' creates a card whose meta holds ``create`` at 'a' beside a
    reference, tool 'edit' sets meta.a to ``setting``."""
    def change(cfg: dict[str, Any], tools: dict[str, Any]) -> None:
        tools["make"]["effects"][0]["value"]["meta"] = {"a": literal(create), "b": "{input.text}"}
        tools["edit"]["effects"][0] = {"op": "set", "doc": "cards/{input.which}", "path": "meta.a",
                                       "value": literal(setting)}
    files = card_world("cards", ["a", "b"], closed, by_ref, change)
    schema = json.loads(files["schemas/card.schema.json"])
    card = schema["$defs"]["card"] if by_ref else schema
    meta = card["properties"]["meta"]
    meta["properties"]["a"] = {"type": kind, **({"items": {"type": "string"}} if kind == "array" else {})}
    if wrap == "$ref":
        schema.setdefault("$defs", {})["meta"] = meta
        card["properties"]["meta"] = {"$ref": "#/$defs/meta"}
    elif wrap == "allOf":
        card["properties"]["meta"] = {"allOf": [meta]}
    files["schemas/card.schema.json"] = canonical.dumps(schema)
    return files


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(KINDS)), closed=st.booleans(), by_ref=st.booleans(),
       wrap=st.sampled_from(["", "$ref", "allOf"]), create=JSON | st.sampled_from(list(KINDS.values())),
       setting=JSON | st.sampled_from(list(KINDS.values())))
def test_a_fixed_part_at_a_nested_place_is_judged_by_the_schema_there(
        kind: str, closed: bool, by_ref: bool, wrap: str, create: Any, setting: Any) -> None:
    files = nested_world(kind, closed, by_ref, wrap, create, setting)
    validator = jsonschema_rs.validator_for(json.loads(files["schemas/card.schema.json"]))
    base = {"id": "c1", "owner": "ann", "meta": {"a": KINDS[kind], "b": "x"}}
    assert validator.is_valid(base)
    lines = validate_lines(files)
    for tool, value, key in (("make", create, "make.effects[0].value.meta.a"), ("edit", setting, "edit.effects[0].value")):
        wrong = not validator.is_valid({**base, "meta": {"a": value, "b": "x"}})
        event(f"{tool}: {'wrong' if wrong else 'right'}")
        mine = [line for line in lines if line.startswith(f"{TOOLS}: {tool}.")]
        if not wrong:
            assert mine == [], mine
            continue
        assert len(mine) == 1 and mine[0].startswith(f"{TOOLS}: {key}"), (mine, value)
        assert "cards documents' meta.a" in mine[0] and "schemas/card.schema.json" in mine[0], mine
    assert len(lines) == len([ln for ln in lines if ln.startswith(f"{TOOLS}: make.") or ln.startswith(f"{TOOLS}: edit.")])


@pytest.mark.parametrize("value, wrong", [("text", False), (5, True)])
def test_draft_7_ignores_what_stands_beside_a_ref_and_so_does_the_check(value: Any, wrong: bool) -> None:
    """Up to draft 7 a "$ref" hides the keywords beside it: {"$ref": string, "type": "integer"}
    takes a string. A part that does not apply is never read as one that does."""
    files = nested_world("string", False, False, "", "s", value)
    schema = json.loads(files["schemas/card.schema.json"])
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema["definitions"] = {"text": {"type": "string"}}
    schema["properties"]["meta"]["properties"]["a"] = {"$ref": "#/definitions/text", "type": "integer"}
    files["schemas/card.schema.json"] = canonical.dumps(schema)
    lines = validate_lines(files)
    assert len(lines) == int(wrong), lines
    if wrong:
        assert lines[0].startswith(f'{TOOLS}: edit.effects[0].value: 5 is not of type "string"'), lines


def test_a_value_that_names_anything_is_never_judged() -> None:
    """The value of a reference is not known before the call: '{tick}' where a string
    belongs (an integer) is the merge's to judge, as is text around a reference."""
    tools = json.loads(json.dumps(DECLARED))
    tools["post"]["effects"][0]["value"].update(title="{tick}", score="{input.title}", body="n{tick}")
    assert validate_lines({**FILES, TOOLS: canonical.dumps(tools)}) == []


def test_tools_declared_in_the_config_are_named_by_their_key() -> None:
    cfg = json.loads(FILES[CONFIG])
    tools = json.loads(json.dumps(DECLARED))
    tools["post"]["effects"][0]["value"]["comment_count"] = -1
    cfg["tools"] = tools
    lines = validate_lines({**FILES, CONFIG: canonical.dumps(cfg)})
    assert lines == [f"{CONFIG}: tools.post.effects[0].value.comment_count: -1 is less than the minimum of 0 (posts "
                     "documents' comment_count, schemas/post.schema.json): every call of post would be quarantined"]


# -- input bounds no value meets ----------------------------------------------------------
def with_note(note: dict[str, Any], required: bool, draft: str | None = None) -> dict[str, bytes]:
    """The default world, its 'post' tool taking an input 'note' (schema ``note``) that no
    effect writes; the input schema of ``draft`` if given."""
    tools = json.loads(json.dumps(DECLARED))
    schema = tools["post"]["input"]
    schema["properties"]["note"] = note
    if required:
        schema["required"].append("note")
    if draft:
        schema["$schema"] = draft
    return {**FILES, TOOLS: canonical.dumps(tools)}


def candidates(kind: str) -> list[Any]:
    """Values of ``kind`` among which one meets any bounds the test draws, if any value does."""
    if kind == "string":
        return ["x" * n for n in range(52)]
    if kind == "array":
        return [list(range(n)) for n in range(52)]
    if kind == "object":
        return [{str(k): k for k in range(n)} for n in range(52)]
    if kind == "integer":
        return list(range(-8, 9))
    return [k / 4 for k in range(-32, 33)]


LENGTH_KEYS = {"string": ("minLength", "maxLength"), "array": ("minItems", "maxItems"),
               "object": ("minProperties", "maxProperties")}


@st.composite
def bounded(draw: Any) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(["string", "array", "object", "integer", "number"]))
    schema: dict[str, Any] = {"type": kind}
    if kind in LENGTH_KEYS:
        for key in LENGTH_KEYS[kind]:
            if draw(st.booleans()):
                schema[key] = draw(st.integers(0, 12))
    else:
        number = st.integers(-5, 5) if kind == "integer" and draw(st.booleans()) else \
            st.integers(-10, 10).map(lambda k: k / 2)
        for inclusive, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
            for key in (inclusive, exclusive):
                if draw(st.integers(0, 2)) == 0:
                    schema[key] = draw(number)
    if draw(st.booleans()):
        schema["type"] = [kind, "null"]
    return kind, schema


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=bounded(), required=st.booleans())
def test_bounds_no_value_meets_are_named(drawn: tuple[str, dict[str, Any]], required: bool) -> None:
    kind, note = drawn
    validator = jsonschema_rs.validator_for(note)
    possible = any(validator.is_valid(v) for v in [*candidates(kind), None])
    event("possible" if possible else "impossible")
    lines = validate_lines(with_note(note, required))
    if possible:
        assert lines == [], (note, lines)
        return
    assert len(lines) == 1, lines
    then = "no call of post can pass its input schema" if required else "no call of post can give a value there"
    assert lines[0].startswith(f"{TOOLS}: post.input.properties.note: ") and lines[0].endswith(then), lines
    assert any(k in lines[0] for k in ("minLength", "minItems", "minProperties", "minimum", "exclusiveMinimum")), lines


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(least=st.one_of(st.integers(0, 2**63 - 1), st.sampled_from([2**62, 65535, 65536, 65537, 0, 200])),
       limit=st.sampled_from([256, 65536, 10485760]), written=st.booleans(), nullable=st.booleans())
def test_a_length_beyond_the_delta_limit_is_named_where_the_value_is_written_whole(
        least: int, limit: int, written: bool, nullable: bool) -> None:
    """'post' writes its input title whole into the post it creates: a title of at least
    limits.max_delta_bytes characters never fits in a delta. An input no effect writes
    ('note') is free of that limit; a null one meets its bounds anyway."""
    cfg = json.loads(FILES[CONFIG])
    cfg["limits"]["max_delta_bytes"] = limit
    tools = json.loads(json.dumps(DECLARED))
    props = tools["post"]["input"]["properties"]
    field = "title" if written else "note"
    props[field] = {"type": ["string", "null"] if nullable else "string", "minLength": least}
    lines = validate_lines({**FILES, CONFIG: canonical.dumps(cfg), TOOLS: canonical.dumps(tools)})
    if not written or nullable or least < limit:
        assert lines == [], lines
        return
    assert lines == [f"{TOOLS}: post.input.properties.title: minLength {least} is not less than "
                     f"limits.max_delta_bytes ({limit}, {CONFIG}), and an effect writes the value whole into the "
                     "delta: no call of post can pass its input schema"]


def test_a_bound_is_read_as_its_draft_says() -> None:
    """Draft 4's exclusiveMinimum is a flag on minimum; an integer range between two
    fractions holds no integer; a type besides the bounded one leaves a value free; a
    field required of an object that may be null is not required of every call."""
    dead = {"type": "string", "minLength": 2, "maxLength": 1}
    cases: list[tuple[dict[str, Any], bool, str | None]] = [
        ({"type": "integer", "minimum": 1.2, "maximum": 1.8}, False, "minimum 1.2 and maximum 1.8 leave no integer"),
        ({"type": "number", "minimum": 1.2, "maximum": 1.8}, False, None),
        ({"type": "number", "minimum": 3, "exclusiveMaximum": 3}, False, "minimum 3 is not less than exclusiveMaximum 3"),
        ({"type": ["number", "string"], "minimum": 3, "maximum": 1}, False, None),
        ({"minLength": 3, "maxLength": 1}, False, None),
        ({"type": "integer", "minimum": 3, "maximum": 3, "exclusiveMinimum": True}, False,
         "minimum 3 is not less than maximum 3"),
        ({"type": "integer", "minimum": 3, "maximum": 3, "exclusiveMinimum": False}, False, None),
        ({"type": "object", "required": ["x"], "properties": {"x": dead}}, True,
         "note.properties.x: minLength 2 is more than maxLength 1: no call of post can pass its input schema"),
        ({"type": ["object", "null"], "required": ["x"], "properties": {"x": dead}}, True,
         "note.properties.x: minLength 2 is more than maxLength 1: no call of post can give a value there"),
        ({"type": "array", "items": dead}, True, "note.items: minLength 2 is more than maxLength 1: no call of post "
                                                 "can give a value there"),
        ({"allOf": [{"type": "array", "minItems": 2, "maxItems": 1}]}, True,
         "note.allOf[0]: minItems 2 is more than maxItems 1: no call of post can pass its input schema"),
    ]
    for note, required, said in cases:
        draft = "http://json-schema.org/draft-04/schema#" if isinstance(note.get("exclusiveMinimum"), bool) else None
        lines = validate_lines(with_note(note, required, draft))
        assert (lines == []) if said is None else (len(lines) == 1 and said in lines[0]), (note, lines)


# -- `fleet validate` on a fleet ---------------------------------------------------------
def edit_tools(f: Fleet, change: Any) -> None:
    p = f.path / TOOLS
    tools = json.loads(p.read_text())
    change(tools)
    p.write_text(json.dumps(tools, indent=2))


def problems(f: Fleet, code: int) -> list[str]:
    r = run(f, "validate", code=code)
    assert "Traceback" not in r.output
    return r.stdout.splitlines()


def test_the_default_world_still_validates_clean(fleet: Fleet) -> None:
    r = run(fleet, "validate")
    assert r.stdout.strip().endswith("0 problem(s)"), r.output
    snap = MemorySnapshot({p.relative_to(fleet.path).as_posix(): p.read_bytes() for folder in ("state", "schemas")
                           for p in (fleet.path / folder).rglob("*.json")})
    assert declaration_problems(snap.config, snap.read) == []


@pytest.mark.parametrize("name", sorted(examples()))
def test_every_example_world_validates_clean(tmp_path: Path, name: str) -> None:
    init(tmp_path / name, example=name)
    r = run(Fleet(tmp_path / name), "validate")
    assert r.stdout.strip().endswith("0 problem(s)"), r.output


def test_the_walkthroughs_title_of_minus_one(fleet: Fleet) -> None:
    edit_tools(fleet, lambda t: t["post"]["effects"][0]["value"].update(title=-1))
    assert problems(fleet, 1) == [
        "state/tools.json: post.effects[0].value.title: -1 is not of type \"string\" (posts documents' title, "
        "schemas/post.schema.json): every call of post would be quarantined"]
    data = json.loads(run(fleet, "validate", "--json", code=1).stdout)
    assert [p["path"] for p in data["problems"]] == [TOOLS]


def test_the_walkthroughs_min_length_of_two_to_the_62(fleet: Fleet) -> None:
    edit_tools(fleet, lambda t: t["post"]["input"]["properties"]["title"].update(minLength=2**62))
    assert problems(fleet, 1) == [
        "state/tools.json: post.input.properties.title: minLength 4611686018427387904 is more than maxLength 200: "
        "no call of post can pass its input schema"]


def test_a_tool_is_checked_when_the_world_has_another_problem(fleet: Fleet) -> None:
    def change(t: dict[str, Any]) -> None:
        t["update_bio"]["effects"][0]["value"] = 5
        t["follow"]["effects"][0]["doc"] = "nowhere/{agent}"  # another tool's own problem
    edit_tools(fleet, change)
    lines = problems(fleet, 1)
    assert len(lines) == 2, lines
    assert any(line.startswith("state/tools.json: follow.effects[0].doc: unknown collection 'nowhere'") for line in lines)
    assert "state/tools.json: update_bio.effects[0].value: 5 is not of type \"string\" (agents documents' bio, " \
           "schemas/agent.schema.json): every call of update_bio would be quarantined" in lines
