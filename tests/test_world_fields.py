"""A config path naming a field its collection's closed schema lacks is refused (fleet.world).

A policy's key, a fixed field, the path of an own, others or grants rule, a tool
effect's path and the fields of the object an effect writes all name fields of
a collection's documents. In a world made up here (names drawn, the document
schema closed or open, given directly or as {"$ref": "#/$defs/..."}), a typo at each of those places is
one line naming the file, the place and the rule; under an open schema the
same names are allowed (only what is certainly wrong is refused), and an
unknown collection is refused either way.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Fleet, fleet_cli, run
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet import canonical, schemas, world
from fleet.errors import FleetError
from fleet.ids import ID_PATTERN
from fleet.state import MemorySnapshot

REPO = Path(__file__).resolve().parents[1]
TOOLS = "state/tools.json"
CONFIG = "state/config.json"
ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"}


def _protocol_schemas() -> dict[str, bytes]:
    own = ("config", "conflict", "delta", "fleet", "resolution", "task", "worker", "tools", "prompt")
    return {f"schemas/{n}.schema.json": (REPO / "schemas" / f"{n}.schema.json").read_bytes() for n in own}


def card_world(coll: str, fields: list[str], closed: bool, by_ref: bool,
               change: Any = None) -> dict[str, bytes]:
    """One collection ``coll`` whose documents hold ``fields`` (strings), a
    ``meta`` object of the same fields and a ``notes`` list of items (id, text);
    every object closed or open; ``change(config, tools)`` puts a mistake in."""
    shut: dict[str, Any] = {"additionalProperties": False} if closed else {}
    item = {"type": "object", "required": ["id"], **shut, "properties": {"id": ID, "text": {"type": "string"}}}
    meta = {"type": "object", **shut, "properties": {f: {"type": "string"} for f in fields}}
    card = {"type": "object", "required": ["id", "owner"], **shut,
            "properties": {"id": ID, "owner": ID, "meta": meta, "notes": {"type": "array", "items": item},
                           **{f: {"type": "string"} for f in fields}}}
    schema = {"$defs": {"card": card}, "$ref": "#/$defs/card"} if by_ref else card
    cfg: dict[str, Any] = {
        "agents": {"ann": {}, "bob": {}},
        "collections": {coll: {"schema": "card.schema.json", "owner": "owner", "own": ["create", "set", "append"]}},
        "policies": {"*": "lww"}, "tools": [TOOLS]}
    tools: dict[str, Any] = {
        "make": {"description": "Make a card.", "input": {"type": "object", "additionalProperties": False,
                                                          "properties": {"text": {"type": "string"}}},
                 "effects": [{"op": "create", "doc": f"{coll}/{{id}}",
                              "value": {"owner": "{agent}", fields[0]: "{input.text}"}}]},
        "edit": {"description": "Change a card.",
                 "input": {"type": "object", "additionalProperties": False, "required": ["which", "text"],
                           "properties": {"which": ID, "text": {"type": "string"}}},
                 "effects": [{"op": "set", "doc": f"{coll}/{{input.which}}", "path": fields[0], "value": "{input.text}"}]},
        "note": {"description": "Note on a card.",
                 "input": {"type": "object", "additionalProperties": False, "required": ["which", "text"],
                           "properties": {"which": ID, "text": {"type": "string"}}},
                 "effects": [{"op": "append", "doc": f"{coll}/{{input.which}}", "path": "notes",
                              "value": {"id": "{id}", "text": "{input.text}"}}]}}
    if change is not None:
        change(cfg, tools)
    return {**_protocol_schemas(), "schemas/card.schema.json": canonical.dumps(schema),
            CONFIG: canonical.dumps(cfg), TOOLS: canonical.dumps(tools),
            "state/fleet.json": (REPO / "state" / "fleet.json").read_bytes()}


def problems_with(files: dict[str, bytes]) -> list[str]:
    snap = MemorySnapshot(files)
    return world.check(snap.config, snap.read)[1]


def _mistakes(coll: str, field: str, typo: str) -> dict[str, tuple[Any, str, str]]:
    """kind -> (the change, the file and key its line starts with, what it says)."""
    def policy(key: str) -> Any:
        return lambda cfg, tools: cfg["policies"].update({key: "lww"})

    def effect(tool: str, **kw: Any) -> Any:
        return lambda cfg, tools: tools[tool]["effects"][0].update(kw)

    def create_value(cfg: dict[str, Any], tools: dict[str, Any]) -> None:
        tools["make"]["effects"][0]["value"][typo] = 1

    def fixed(cfg: dict[str, Any], tools: dict[str, Any]) -> None:
        cfg["collections"][coll]["fixed"] = [typo]

    def rule(kind: str, text: str) -> Any:
        def change(cfg: dict[str, Any], tools: dict[str, Any]) -> None:
            if kind == "grants":
                cfg["agents"]["bob"]["grants"] = {coll: ["incr", text]}
            else:
                cfg["collections"][coll][kind] = [*cfg["collections"][coll].get(kind, []), text]
        return change

    not_field = f"{typo!r} is not a field of"
    return {
        "own rule": (rule("own", f"set:{typo}"), f"{CONFIG}: collections.{coll}.own[3]", not_field),
        "others rule": (rule("others", f"incr:{typo}"), f"{CONFIG}: collections.{coll}.others[0]", not_field),
        "others nested rule": (rule("others", f"add:meta.{typo}@self"), f"{CONFIG}: collections.{coll}.others[0]",
                               not_field),
        "grants rule": (rule("grants", f"add:{typo}@self"), f"{CONFIG}: agents.bob.grants.{coll}[1]", not_field),
        "policy field": (policy(f"{coll}/{typo}"), f"{CONFIG}: policies.{coll}/{typo}", not_field),
        "policy nested field": (policy(f"{coll}/meta.{typo}"), f"{CONFIG}: policies.{coll}/meta.{typo}", not_field),
        "fixed": (fixed, f"{CONFIG}: collections.{coll}.fixed", not_field),
        "set path": (effect("edit", path=typo), f"{TOOLS}: edit.effects[0].path", not_field),
        "set nested path": (effect("edit", path=f"meta.{typo}"), f"{TOOLS}: edit.effects[0].path", not_field),
        "create value": (create_value, f"{TOOLS}: make.effects[0].value", not_field),
        "append item": (effect("note", value={"id": "{id}", typo: "{input.text}"}), f"{TOOLS}: note.effects[0].value",
                        not_field),
    }


WORD = st.from_regex(r"\A[a-z][a-z0-9_]{2,9}\Z").filter(lambda w: w not in ("id", "owner", "meta", "notes", "text"))
KINDS = sorted(_mistakes("c", "f", "t"))


@settings(max_examples=120, deadline=None)
@given(coll=WORD, fields=st.lists(WORD, min_size=1, max_size=4, unique=True), typo=WORD,
       kind=st.sampled_from(KINDS), closed=st.booleans(), by_ref=st.booleans())
def test_a_field_its_closed_schema_lacks_is_refused_wherever_the_config_names_one(
        coll: str, fields: list[str], typo: str, kind: str, closed: bool, by_ref: bool) -> None:
    if typo in fields:
        return
    assert problems_with(card_world(coll, fields, closed, by_ref)) == []
    change, starts, says = _mistakes(coll, fields[0], typo)[kind]
    found = problems_with(card_world(coll, fields, closed, by_ref, change))
    if not closed:
        assert found == [], found  # an open schema allows any field
        return
    assert len(found) == 1, found
    assert found[0].startswith(starts + ": ") and says in found[0] and "\n" not in found[0], found


@settings(max_examples=30, deadline=None)
@given(coll=WORD, other=WORD, fields=st.lists(WORD, min_size=1, max_size=3, unique=True), closed=st.booleans())
def test_a_policy_for_an_unknown_collection_is_refused(coll: str, other: str, fields: list[str], closed: bool) -> None:
    if other == coll:
        return
    found = problems_with(card_world(coll, fields, closed, False,
                                     lambda cfg, tools: cfg["policies"].update({f"{other}/{fields[0]}": "lww"})))
    assert found == [f"{CONFIG}: policies.{other}/{fields[0]}: unknown collection {other!r} (collections in {CONFIG}: {coll})"]


def test_a_pattern_in_a_policy_key_is_checked_only_up_to_the_pattern() -> None:
    files = card_world("cards", ["title"], True, True, lambda cfg, tools: cfg["policies"].update(
        {"cards/meta.*": "lww", "cards/ti*": "lww", "cards/*": "hold", "cards/notes": "lww"}))
    assert problems_with(files) == []
    files = card_world("cards", ["title"], True, True, lambda cfg, tools: cfg["policies"].update({"cards/mta.*": "lww"}))
    assert [p.split(": ", 2)[1] for p in problems_with(files)] == ["policies.cards/mta.*"]


def test_a_rule_is_checked_only_up_to_its_wildcard_and_says_the_rule_as_written() -> None:
    def rules(cfg: dict[str, Any], tools: dict[str, Any]) -> None:
        cfg["collections"]["cards"]["others"] = ["incr:meta.*", "set:*.title", "delete", "add:title@self"]
        cfg["agents"]["ann"]["grants"] = {"cards": ["set:notes"]}
    assert problems_with(card_world("cards", ["title"], True, True, rules)) == []

    def typos(cfg: dict[str, Any], tools: dict[str, Any]) -> None:
        cfg["collections"]["cards"]["others"] = ["incr:salez", "add:meta.tagz@self", "set:mta.*"]
    assert problems_with(card_world("cards", ["title"], True, False, typos)) == [
        f"{CONFIG}: collections.cards.others[0]: rule 'incr:salez': 'salez' is not a field of cards documents "
        "(their schema's properties: id, meta, notes, owner, title)",
        f"{CONFIG}: collections.cards.others[1]: rule 'add:meta.tagz@self': 'tagz' is not a field of meta in cards "
        "documents (the schema's properties there: title)",
        f"{CONFIG}: collections.cards.others[2]: rule 'set:mta.*': 'mta' is not a field of cards documents "
        "(their schema's properties: id, meta, notes, owner, title)"]


@pytest.mark.parametrize("policies, fixed, others, says", [
    ({"cards/colum": "lww"}, None, None,
     "state/config.json: policies.cards/colum: 'colum' is not a field of cards documents"),
    ({"cardz/column": "lww"}, None, None, "state/config.json: policies.cardz/column: unknown collection 'cardz'"),
    ({}, ["bord"], None, "state/config.json: collections.cards.fixed: 'bord' is not a field of cards documents"),
    ({}, None, ["incr:bord"],
     "state/config.json: collections.cards.others[0]: rule 'incr:bord': 'bord' is not a field of cards documents"),
])
def test_validate_and_run_refuse_a_typo_in_a_config_path(fleet: Fleet, policies: dict[str, str], fixed: Any,
                                                         others: Any, says: str) -> None:
    files = card_world("cards", ["column", "board"], True, True)
    cfg = json.loads(files[CONFIG])
    cfg["policies"].update(policies)
    if fixed:
        cfg["collections"]["cards"]["fixed"] = fixed
    if others:
        cfg["collections"]["cards"]["others"] = others
    files[CONFIG] = canonical.dumps(cfg)
    for rel, data in files.items():
        if rel.startswith("schemas/card") or rel in (CONFIG, TOOLS):
            (fleet.path / rel).write_bytes(data)
    subprocess.run(["git", "rm", "-rq", "state/agents", "state/posts", "state/comments", "state/channels",
                    "state/follows", "state/reactions", "state/prompt.json"], cwd=fleet.path, check=True)
    r = run(fleet, "validate", code=1)
    assert says in r.output, r.output
    subprocess.run(["git", "add", "-A"], cwd=fleet.path, check=True)
    subprocess.run(["git", "-c", "user.name=P", "-c", "user.email=p@x", "commit", "-qm", "a typo"], cwd=fleet.path,
                   check=True)
    p = fleet_cli(fleet.path, "run", "--ticks", "1")
    assert p.returncode == 1 and says in p.stderr, p.stderr


# -- a policy's key that breaks the config schema's rule: the rule in words ----------------

@settings(max_examples=40, deadline=None)
@given(coll=WORD, path=st.lists(WORD, min_size=2, max_size=4), sep=st.sampled_from(["/", " /", "//"]))
def test_a_policy_key_against_the_schema_says_the_rule_in_words(coll: str, path: list[str], sep: str) -> None:
    key = coll + "/" + sep.join(path)
    files = card_world("cards", ["title"], True, False, lambda cfg, tools: cfg["policies"].update({key: "lww"}))
    with pytest.raises(FleetError) as e:
        problems_with(files)
    message = str(e.value)
    assert message.startswith(f'{CONFIG}: at /policies: "{key}" does not match the rule of a policy\'s key'), message
    assert "'<collection>/<field>'" in message and "^(" not in message and "\n" not in message


def test_each_pattern_put_in_words_is_the_one_fleets_schemas_hold() -> None:
    held = json.loads((REPO / "schemas/config.schema.json").read_bytes())
    assert held["properties"]["policies"]["propertyNames"]["pattern"] == schemas.POLICY_KEY_PATTERN
    assert set(schemas.PATTERN_WORDS) == {schemas.POLICY_KEY_PATTERN, ID_PATTERN}


@pytest.mark.parametrize("schema", [
    {"$ref": "#"},  # a loop
    {"$ref": "#/$defs/a0", "$defs": {f"a{i}": {"$ref": f"#/$defs/a{i + 1}"} for i in range(5000)}},  # a long chain
    {"$ref": "#/$defs/nowhere"},
])
def test_a_schema_whose_refs_loop_or_run_long_is_checked_in_lines_never_a_crash(schema: dict[str, Any]) -> None:
    deep = "cards/" + ".".join(["meta"] * 20000)
    files = card_world("cards", ["title"], True, False, lambda cfg, tools: cfg["policies"].update({deep: "lww"}))
    files["schemas/card.schema.json"] = canonical.dumps(schema)
    found = problems_with(files)
    assert all("\n" not in line and line.startswith(("state/", "schemas/")) for line in found), found
